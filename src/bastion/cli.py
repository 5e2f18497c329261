"""The `bastion` command: run, check, version."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bastion import __version__
from bastion.errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="A reverse proxy.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="serve according to a configuration file")
    run.add_argument("-c", "--config", required=True, type=Path, help="TOML configuration")
    check = commands.add_parser("check", help="validate a configuration file and exit")
    check.add_argument("-c", "--config", required=True, type=Path, help="TOML configuration")
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"bastion {__version__}")
        return 0
    if args.command == "check":
        return _check(args.config)
    return _run(args.config)


def _check(path: Path) -> int:
    from bastion.config import load_config
    from bastion.filters.chain import compile_plan

    try:
        # The plan too, as `run` would build it: hooks are made (and check their options).
        compile_plan(load_config(path))
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{path}: configuration is valid")
    return 0


def _run(path: Path) -> int:
    import uvloop

    from bastion.config import load_config
    from bastion.observe.logs import setup_error_log
    from bastion.runtime.node_host import SharedNode, admin_component
    from bastion.runtime.supervisor import Supervisor
    from bastion.runtime.worker import exit_now

    try:
        config = load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    setup_error_log(config.log.level)

    async def supervise() -> int:
        supervisor = Supervisor(path)
        shared = SharedNode(supervisor.generation.config)
        shared.plug_into(supervisor)
        if supervisor.generation.config.admin.listen is not None:
            supervisor.add_component(lambda s: admin_component(s, shared))
        try:
            return await supervisor.run()
        finally:
            shared.close()

    try:
        status = uvloop.run(supervise())
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except OSError as error:
        print(f"bastion: cannot start: {error}", file=sys.stderr)
        return 1
    exit_now(status)  # workers and listeners are closed, logs flushed: skip the teardown
    return status


if __name__ == "__main__":
    sys.exit(main())
