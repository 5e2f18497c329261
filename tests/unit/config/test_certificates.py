"""The certificate checks on their own: what a usable pair and CA bundle look like."""

from __future__ import annotations

from pathlib import Path

from bastion.config.certificates import ca_bundle_problem, key_pair_problems


def test_a_matching_pair_has_no_problems(cert_dir: Path) -> None:
    assert key_pair_problems(cert_dir / "site.pem", cert_dir / "site.key") == []
    assert key_pair_problems(cert_dir / "chain.pem", cert_dir / "chain.key") == []
    assert key_pair_problems(cert_dir / "combined.pem", cert_dir / "combined.pem") == []


def test_problems_are_keyed_by_the_file_they_are_about(cert_dir: Path) -> None:
    assert key_pair_problems(cert_dir / "empty.pem", cert_dir / "site.pem") == [
        ("certificate", f'no PEM certificate in "{cert_dir}/empty.pem"'),
        ("key", f'no PEM private key in "{cert_dir}/site.pem"'),
    ]
    assert key_pair_problems(cert_dir / "site.pem", cert_dir / "other.key") == [
        ("key", "certificate and key do not match")
    ]


def test_ca_bundles(cert_dir: Path) -> None:
    assert ca_bundle_problem(cert_dir / "ca.pem") is None
    assert ca_bundle_problem(cert_dir / "chain.pem") is None
    assert ca_bundle_problem(cert_dir) == f'cannot read "{cert_dir}": Is a directory'
    assert (
        ca_bundle_problem(cert_dir / "site.key") == f'no PEM certificate in "{cert_dir}/site.key"'
    )
    assert ca_bundle_problem(cert_dir / "garbage.pem") == (
        f'cannot load the certificate in "{cert_dir}/garbage.pem": invalid PEM data'
    )


def test_an_encrypted_key_is_refused_without_a_prompt(cert_dir: Path) -> None:
    assert key_pair_problems(cert_dir / "site.pem", cert_dir / "encrypted.key") == [
        (
            "key",
            f'the private key in "{cert_dir}/encrypted.key" is encrypted; bastion needs an '
            "unencrypted key",
        )
    ]
