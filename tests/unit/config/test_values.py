"""Value types of the TLS keys: file paths, server names and Strict-Transport-Security."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from bastion.config.values import FilePath, ServerName, StrictTransportSecurity

FILE_PATH = TypeAdapter(FilePath)
HSTS = TypeAdapter(StrictTransportSecurity)
SERVER_NAME = TypeAdapter(ServerName)


def test_file_paths_are_made_absolute_against_base_dir(tmp_path: Path) -> None:
    context = {"source": "x.toml", "base_dir": tmp_path}
    assert FILE_PATH.validate_python("a/b.pem", context=context) == tmp_path / "a/b.pem"
    assert FILE_PATH.validate_python("/etc/c.pem", context=context) == Path("/etc/c.pem")


def test_code_may_pass_paths_which_count_from_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert FILE_PATH.validate_python(Path("k.pem")) == tmp_path / "k.pem"
    assert FILE_PATH.validate_python("k.pem") == tmp_path / "k.pem"


def test_a_file_must_give_paths_as_text(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="expected a file path, got a list"):
        FILE_PATH.validate_python(["a"], context={"base_dir": tmp_path})


@given(st.text())
def test_accepted_hsts_values_are_safe_header_values(text: str) -> None:
    try:
        value = HSTS.validate_python(text)
    except ValidationError:
        return
    assert re.match(r"(?i)max-age=\d+", value)
    assert all(" " <= char <= "~" or char == "\t" for char in value)


@given(st.integers(min_value=0), st.sampled_from(["", "; includeSubDomains", ";preload"]))
def test_max_age_with_directives_is_accepted(seconds: int, rest: str) -> None:
    assert HSTS.validate_python(f"max-age={seconds}{rest}") == f"max-age={seconds}{rest}"


@given(st.text())
def test_accepted_server_names_are_lowercase_ascii_without_port(text: str) -> None:
    try:
        name = SERVER_NAME.validate_python(text)
    except ValidationError:
        return
    assert name.isascii()
    assert name == name.lower()
    assert ":" not in name
    assert "*" not in name
