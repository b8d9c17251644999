"""The `tpa` command line. Each subcommand lives in adapter/commands/<name>.py and exposes
`add_parser(subparsers)`, which registers its parser and sets `func(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from adapter.errors import AdapterError

# Order is the order shown in --help.
COMMANDS = ["serve", "models", "profile", "plan", "run", "experiment", "simulate", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tpa",
        description="Triton pipeline adapter: serve, measure and plan multi-model Triton pipelines.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"adapter.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except AdapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def entrypoint() -> None:
    sys.exit(main())
