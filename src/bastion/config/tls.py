"""The `tls` tables: a site's certificate and client authentication (`SiteTLS`), and TLS
towards an upstream's `https://` servers (`UpstreamTLS`).

Like every model, these are frozen and forbid unknown keys. File paths arrive absolute (see
values.py); whether the files can be used is checked by certificates.py when a table is
validated, and reported at the key it is about. This module must not know about TOML, how
problems are shown, nor how the proxy builds its TLS contexts.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from bastion.config.certificates import ca_bundle_problem, key_pair_problems
from bastion.config.problems import Loc, problems_error
from bastion.config.values import FilePath, ServerName, StrictTransportSecurity


class SiteTLS(BaseModel):
    """A site's `tls = { ... }`: the certificate `tls = true` listeners present for its hosts
    (chosen by SNI), and whether clients must show certificates of their own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    certificate: FilePath = Field(
        description="PEM file with the site's certificate, followed by its intermediate "
        "certificates."
    )
    key: FilePath = Field(description="PEM file with the certificate's private key, unencrypted.")
    client_auth: Literal["off", "optional", "required"] = Field(
        default="off",
        description='Client certificates (mTLS): `"off"`, `"optional"` (asked for and '
        'verified when sent) or `"required"` (no handshake without one).',
    )
    client_ca: FilePath | None = Field(
        default=None,
        description="PEM bundle of the CAs client certificates must chain to; required when "
        '`client_auth` is not `"off"`, and only then.',
    )
    min_version: Literal["1.2", "1.3"] = Field(
        default="1.2", description="Oldest TLS version accepted."
    )
    hsts: StrictTransportSecurity | None = Field(
        default=None,
        description="`Strict-Transport-Security` value added to the site's HTTPS responses, "
        'like `"max-age=31536000; includeSubDomains"`; it must start with `max-age=`.',
    )

    @model_validator(mode="after")
    def _usable(self) -> SiteTLS:
        problems: list[tuple[Loc, str]] = [
            ((name,), message) for name, message in key_pair_problems(self.certificate, self.key)
        ]
        if self.client_auth == "off" and self.client_ca is not None:
            problems.append(
                (("client_ca",), 'client_ca is used only with client_auth "optional" or "required"')
            )
        elif self.client_auth != "off" and self.client_ca is None:
            problems.append(
                ((), f'missing required key "client_ca" (client_auth is "{self.client_auth}")')
            )
        elif self.client_ca is not None and (problem := ca_bundle_problem(self.client_ca)):
            problems.append((("client_ca",), problem))
        if problems:
            raise problems_error(problems)
        return self


class UpstreamTLS(BaseModel):
    """An upstream's `tls = { ... }`: how its `https://` servers are verified, and the client
    certificate shown to them (harmless on an upstream of `http://` servers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verify: StrictBool = Field(
        default=True,
        description="Check the servers' certificates: the chain and the name. Turn off only "
        "for testing.",
    )
    ca: FilePath | None = Field(
        default=None,
        description="PEM bundle of the CAs the servers' certificates must chain to; the "
        "system's CAs when left out.",
    )
    server_name: ServerName | None = Field(
        default=None,
        description="Name sent by SNI and checked against the servers' certificates; each "
        "server's host when left out.",
    )
    certificate: FilePath | None = Field(
        default=None,
        description="PEM file with a client certificate (and its chain) to show the servers; "
        "give `key` with it.",
    )
    key: FilePath | None = Field(
        default=None, description="PEM file with that client certificate's private key."
    )

    @model_validator(mode="after")
    def _usable(self) -> UpstreamTLS:
        problems: list[tuple[Loc, str]] = []
        if self.certificate is not None and self.key is not None:
            pair = key_pair_problems(self.certificate, self.key)
            problems += [((name,), message) for name, message in pair]
        elif self.certificate is not None or self.key is not None:
            missing = "key" if self.key is None else "certificate"
            problems.append(
                ((), f'missing required key "{missing}" (give certificate and key, or neither)')
            )
        if self.ca is not None and (problem := ca_bundle_problem(self.ca)):
            problems.append((("ca",), problem))
        if problems:
            raise problems_error(problems)
        return self
