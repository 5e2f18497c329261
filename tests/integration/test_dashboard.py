"""The admin dashboard in a real browser: Debian's headless chromium driven by selenium.

The page is served by the admin listener of an in-process bastion with a token set: it first
says the token is missing, takes it from the token field, renders the upstream and its
servers, and a click on "drain" drains the server (checked through the API and on the page).
The browser runs in a thread so the event loop keeps serving. scripts/test installs chromium
and chromium-driver; the test is skipped only where they are not installed.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.support.admin import TOKEN, admin_url, config_text
from tests.support.origins import AutonomousOrigin
from tests.support.proxy import running_proxy

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (scripts/test installs them)",
)


@contextmanager
def headless_chromium() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def texts(driver: object, selector: str) -> list[str]:
    """The text of every element matching `selector`, read at one instant (the page redraws
    every 2 s, so elements found earlier may be gone)."""
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(driver, WebDriver)
    found = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector
    )
    assert isinstance(found, list)
    return [str(text) for text in found]


def click(driver: object, selector: str) -> None:
    """A real click on the element, found again if a redraw replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(driver, WebDriver)
    for _ in range(5):
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{selector} kept being redrawn")


def drive_dashboard(url: str, screenshot: Path) -> dict[str, str]:
    """The browser's side: returns what the page showed at each step."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.wait import WebDriverWait

    seen: dict[str, str] = {}
    with headless_chromium() as opened:
        assert isinstance(opened, WebDriver)
        driver = opened
        wait = WebDriverWait(driver, 10)
        driver.get(url + "/")
        wait.until(lambda d: "token" in " ".join(texts(d, "#message")))
        seen["without token"] = texts(driver, "#message")[0]

        driver.find_element(By.ID, "token").send_keys(TOKEN)
        click(driver, "#token-form button")
        row = '#upstreams tr.server[data-upstream="app"][data-index="{}"]'
        wait.until(lambda d: texts(d, row.format(1)))
        seen["labels"] = " ".join(texts(driver, "#upstreams td.label"))
        seen["states before"] = " ".join(texts(driver, "#upstreams .state"))
        wait.until(lambda d: texts(d, "#sites .site"))
        seen["sites"] = " ".join(texts(driver, "#sites"))

        click(driver, row.format(0) + " button.drain")
        wait.until(lambda d: texts(d, row.format(0) + " .state") == ["drained"])
        seen["states after"] = " ".join(texts(driver, "#upstreams .state"))
        seen["button after"] = " ".join(texts(driver, row.format(0) + " button"))
        seen["status"] = " ".join(texts(driver, "#status"))
        seen["message hidden"] = str(driver.find_element(By.ID, "message").is_displayed())
        driver.save_screenshot(str(screenshot))
    return seen


async def test_dashboard_shows_servers_and_drains_one_on_click(tmp_path: Path) -> None:
    admin_table = f'listen = "127.0.0.1:0"\ntoken = "{TOKEN}"'
    async with AutonomousOrigin() as zero, AutonomousOrigin() as one:
        text = config_text([zero.address, one.address], admin_table)
        async with running_proxy(text) as proxy:
            url = admin_url(proxy)
            screenshot = tmp_path / "dashboard.png"
            seen = await asyncio.wait_for(asyncio.to_thread(drive_dashboard, url, screenshot), 50)
            async with httpx.AsyncClient(base_url=url) as admin:
                servers = (
                    await admin.get("/api/upstreams", headers={"Authorization": f"Bearer {TOKEN}"})
                ).json()["upstreams"][0]["servers"]
    assert "missing bearer token" in seen["without token"]
    assert seen["labels"] == f"{zero.address} {one.address}"
    assert seen["states before"] == "up up"
    assert "→ app" in seen["sites"]
    assert seen["states after"] == "drained up"
    assert seen["button after"] == "enable"
    assert "generation 1" in seen["status"]
    assert seen["message hidden"] == "False"  # the token error went away
    assert [server["state"] for server in servers] == ["drained", "up"]
    assert screenshot.stat().st_size > 0
