"""The `vaekit` command line: parse, call the Python API, print.

One module per group of commands (`train.py`, `inspect.py`, ...); each has an `add_*`
function that registers its sub-command and is listed in COMMANDS below.

A user mistake (bad path, bad value, corrupt file) prints one line and exits 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from vaekit.core.errors import ConfigError, VaekitError

# Commands that do not handle sequence runs yet (docs/sequences.md): a one-line error.
NOT_FOR_SEQUENCES = ("interpolate", "traverse", "manifold", "report", "denoise", "export")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- entry point ----------------------------------------------------------------------------
def _commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Each command module's `add_*` functions, in the order `--help` lists them."""
    from vaekit.cli import apply, compare, evaluate, explore, export, inspect, runs, train

    return [
        train.add_train,
        evaluate.add_evaluate,
        compare.add_compare,
        inspect.add_sample,
        inspect.add_reconstruct,
        inspect.add_info,
        runs.add_runs,
        *explore.COMMANDS,
        *apply.COMMANDS,
        export.add_export,
    ]


def make_parser() -> Parser:
    from vaekit.core.version import VERSION as __version__

    parser = Parser(
        prog="vaekit", description="Train, evaluate and explore Variational Autoencoders."
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=Parser, dest="command"
    )
    for add in _commands():
        add(sub)
    return parser


def refuse_sequence_run(args: argparse.Namespace) -> None:
    """A ConfigError if the command is in NOT_FOR_SEQUENCES and its run is a sequence run."""
    run = getattr(args, "run", None)
    if args.command not in NOT_FOR_SEQUENCES or run is None:
        return
    from vaekit.config.runs import RunFolder

    folder = RunFolder(run)
    if folder.config_path.is_file() and folder.load_config().data.kind == "sequence":
        raise ConfigError(
            f"{run}: vaekit {args.command} does not handle sequence runs yet (docs/sequences.md)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    command = getattr(args, "run_command", None)
    if command is None:
        parser.print_help()
        return 2
    try:
        refuse_sequence_run(args)
        return command(args)
    except VaekitError as err:
        if args.debug:
            raise
        print(f"vaekit: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # disk full, permission denied, ...
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"vaekit: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
