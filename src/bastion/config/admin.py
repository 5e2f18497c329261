"""The `[admin]` table: where the admin API, metrics and dashboard listen, and who may call.

`listen = "off"` turns the admin listener off (`listen` is then None). The bearer token comes
from `token` or from `token_file` (read at load, like every file a configuration names; one
line, surrounding whitespace dropped); giving both is an error. `bearer_token` is the token in
force, or None: then only loopback clients are served. This module must not know how the
admin server checks it, nor anything of sockets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    model_validator,
)

from bastion.config.problems import Loc, problems_error
from bastion.config.values import DocType, FilePath
from bastion.units import ADDRESS_EXPECTED, Address, describe_value, parse_address

OFF = "off"
DEFAULT_LISTEN = Address("127.0.0.1", 9901)
MIN_TOKEN = 16  # characters: shorter tokens are guessable


def _admin_listen(value: object) -> Address | None:
    if value is None or isinstance(value, Address):
        return value
    if value == OFF:
        return None
    if not isinstance(value, str):
        raise ValueError(f'{ADDRESS_EXPECTED} or "off", got {describe_value(value)}')
    return parse_address(value)


def _acceptable_token(text: str) -> bool:
    """Long enough not to be guessed, one word (it goes into an Authorization header)."""
    return len(text) >= MIN_TOKEN and not any(char.isspace() for char in text)


def _token(text: str) -> str:
    if not _acceptable_token(text):
        raise ValueError(
            f"expected a token of at least {MIN_TOKEN} characters without spaces, "
            f"got {len(text)} characters"
        )
    return text


def _spell_listen(value: Address | None) -> str:
    return OFF if value is None else str(value)


AdminListen = Annotated[
    Address | None,
    PlainValidator(_admin_listen),
    PlainSerializer(_spell_listen, return_type=str),
    DocType('address or `"off"`', _spell_listen),
]


class AdminSettings(BaseModel):
    """The admin listener: JSON API (docs/admin.md), `/metrics` and the dashboard."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: AdminListen = Field(
        default=DEFAULT_LISTEN,
        description='Where the admin API, metrics and dashboard listen; `"off"` for no admin '
        "listener. Keep it on loopback or a private network.",
    )
    token: Annotated[str, AfterValidator(_token)] | None = Field(
        default=None,
        description="Bearer token every admin call must send (`Authorization: Bearer TOKEN`), "
        "loopback clients too; at least 16 characters. Without a token (and `token_file`) "
        "only loopback clients are served.",
    )
    token_file: FilePath | None = Field(
        default=None,
        description="File holding the bearer token (one line), read at load; instead of "
        "`token`, to keep the secret out of the configuration file.",
    )
    _bearer_token: str | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _read_token(self) -> AdminSettings:
        problems: list[tuple[Loc, str]] = []
        if self.token is not None and self.token_file is not None:
            problems.append(((), "give either token or token_file, not both"))
        elif self.token_file is not None:
            token, problem = _read_token_file(self.token_file)
            if problem is not None:
                problems.append((("token_file",), problem))
            self._bearer_token = token
        else:
            self._bearer_token = self.token
        if problems:
            raise problems_error(problems)
        return self

    @property
    def bearer_token(self) -> str | None:
        """The token in force (from `token` or `token_file`), or None."""
        return self._bearer_token


def _read_token_file(path: Path) -> tuple[str | None, str | None]:
    """The token in `path`, or a problem for people."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        return None, f"cannot read {path}: {error.strerror or error}"
    except UnicodeDecodeError:
        return None, f"{path} is not UTF-8 text"
    if not _acceptable_token(text):
        return None, (
            f"{path} must hold one token of at least {MIN_TOKEN} characters, without spaces"
        )
    return text, None
