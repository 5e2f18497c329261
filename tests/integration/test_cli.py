"""The `bastion` command line: `version`, `check -c FILE` and `run -c FILE` failing cleanly.

Every test runs bastion as a real process (`python -m bastion.cli ...`, once the installed
`bastion` console script) and looks only at what a user sees: the exit status, stdout and
stderr. A user's mistake must end with exit status 1 and a message naming the file, the key
path and what was expected, never with a Python traceback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import bastion

COMMAND_TIMEOUT = 10.0
"""Seconds a single bastion command may take before the test fails (they take ~0.4 s)."""

VALID_CONFIG = """
[server]
graceful_timeout = "1s"
[log]
access = "off"
[[listen]]
address = "127.0.0.1:0"
[[site]]
hosts = ["*"]
  [[site.route]]
  path = "/"
  upstream = "app"
[upstream.app]
servers = ["http://127.0.0.1:9"]
"""


@dataclass(frozen=True)
class Outcome:
    """How one bastion command ended."""

    status: int
    stdout: str
    stderr: str


def bastion_command(*args: str, program: list[str] | None = None) -> Outcome:
    """Run bastion with `args` (by default as `python -m bastion.cli`) and wait for it."""
    command = program if program is not None else [sys.executable, "-m", "bastion.cli"]
    finished = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    return Outcome(finished.returncode, finished.stdout, finished.stderr)


def write_config(directory: Path, text: str, name: str = "bastion.toml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def assert_user_error(outcome: Outcome, *fragments: str) -> None:
    """Exit status 1, every fragment on stderr, and no traceback anywhere."""
    assert outcome.status == 1, outcome
    for fragment in fragments:
        assert fragment in outcome.stderr, f"{fragment!r} not in stderr:\n{outcome.stderr}"
    assert "Traceback" not in outcome.stderr + outcome.stdout


# -- version ------------------------------------------------------------------------------


def test_version_prints_name_and_version() -> None:
    outcome = bastion_command("version")
    assert outcome == Outcome(0, f"bastion {bastion.__version__}\n", "")
    assert bastion.__version__ == "0.1.0"


def test_installed_console_script_runs() -> None:
    script = Path(sys.executable).with_name("bastion")
    program = str(script) if script.exists() else shutil.which("bastion")
    assert program is not None, "the `bastion` console script is not installed"
    assert bastion_command("version", program=[program]) == Outcome(0, "bastion 0.1.0\n", "")


def test_no_command_is_a_usage_error_without_traceback() -> None:
    outcome = bastion_command()
    assert outcome.status == 2
    assert "usage: bastion" in outcome.stderr
    assert "Traceback" not in outcome.stderr


# -- check --------------------------------------------------------------------------------


def test_check_accepts_a_valid_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, VALID_CONFIG)
    outcome = bastion_command("check", "-c", str(path))
    assert outcome.status == 0, outcome
    assert outcome.stderr == ""
    assert str(path) in outcome.stdout


MISTAKES = {
    "unknown_key": (
        VALID_CONFIG.replace('path = "/"', 'path = "/"\n  colour = "blue"'),
        ["site[0].route[0].colour", 'unknown key "colour"', "allowed here", "upstream"],
    ),
    "bad_duration": (
        VALID_CONFIG.replace('graceful_timeout = "1s"', 'graceful_timeout = "5 parsecs"'),
        ["server.graceful_timeout", "expected a duration", '"5 parsecs"'],
    ),
    "missing_upstream": (
        VALID_CONFIG.replace('upstream = "app"', 'upstream = "ap"'),
        ["site[0].route[0].upstream", '"ap"', "not defined", "app"],
    ),
    "wrong_choice": (
        VALID_CONFIG.replace('access = "off"', 'access = "off"\nlevel = "loud"'),
        ["log.level", 'expected one of "debug"', '"loud"'],
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_check_names_file_key_path_and_expectation(tmp_path: Path, mistake: str) -> None:
    text, fragments = MISTAKES[mistake]
    path = write_config(tmp_path, text)
    outcome = bastion_command("check", "-c", str(path))
    assert_user_error(outcome, f"{path}: ", *fragments)
    assert outcome.stdout == ""


def test_check_reports_broken_toml_with_its_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[server]\ngraceful_timeout = \n")
    outcome = bastion_command("check", "-c", str(path))
    assert_user_error(outcome, f"{path}:2: ", "invalid TOML")


def test_check_lists_every_problem_at_once(tmp_path: Path) -> None:
    text = MISTAKES["bad_duration"][0].replace('path = "/"', 'path = "/"\n  colour = "blue"')
    path = write_config(tmp_path, text)
    outcome = bastion_command("check", "-c", str(path))
    assert_user_error(outcome, "server.graceful_timeout", "site[0].route[0].colour")


def test_check_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    outcome = bastion_command("check", "-c", str(path))
    assert_user_error(outcome, str(path), "cannot read", "No such file")


# -- run failing before it serves ---------------------------------------------------------


def test_run_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    outcome = bastion_command("run", "-c", str(path))
    assert_user_error(outcome, str(path), "cannot read", "No such file")


def test_run_with_a_bad_config_exits_1_naming_the_problem(tmp_path: Path) -> None:
    path = write_config(tmp_path, MISTAKES["missing_upstream"][0])
    outcome = bastion_command("run", "-c", str(path))
    assert_user_error(outcome, f"{path}: site[0].route[0].upstream: ", "not defined")


def test_run_on_an_address_in_use_exits_1(tmp_path: Path) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        text = VALID_CONFIG.replace("127.0.0.1:0", f"127.0.0.1:{port}")
        outcome = bastion_command("run", "-c", str(write_config(tmp_path, text)))
    assert_user_error(outcome, "cannot start", str(port), "in use")


def test_run_with_an_unwritable_access_log_exits_1(tmp_path: Path) -> None:
    log_path = tmp_path / "no-such-dir" / "access.log"
    text = VALID_CONFIG.replace('access = "off"', f'access = "{log_path}"')
    outcome = bastion_command("run", "-c", str(write_config(tmp_path, text)))
    assert_user_error(outcome, "cannot start", str(log_path))
