"""The `vaekit` command line: parse, call the Python API, print.

One module per group of commands (`train.py`, `inspect.py`, ...); each has an `add_*`
function that registers its sub-command and is listed in COMMANDS below.

A user mistake (bad path, bad value, corrupt file) prints one line and exits 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import re
import sys
from collections.abc import Callable

from vaekit.core.errors import ConfigError, VaekitError


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends every option's text with its default, unless the text already says
    it (e.g. "(default 64)" or "(0.1)") or there is none to say (None, False, [])."""

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and default_text(action):  # argparse prints no empty help
            action = copy.copy(action)
            action.help = default_text(action)
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = default_text(action)
        if not shown or "default" in text or said(shown, text):
            return text
        return f"{text} ({shown})".strip()


def default_text(action: argparse.Action) -> str:
    """ "default: VALUE" for an option with a default worth saying, else ""."""
    default = getattr(action, "shown_default", action.default)  # cli/train.py sets it
    if default is None or default is False or default == [] or default == argparse.SUPPRESS:
        return ""
    if not action.option_strings or getattr(action, "version", None) is not None:  # --version
        return ""
    shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else default
    return f"default: {shown}".replace("%", "%%")


def said(shown: str, text: str) -> bool:
    """Whether `text` already gives the default, as "(VALUE)" (numbers compared as numbers)."""
    value = shown.removeprefix("default: ")
    for given in re.findall(r"\(([^()]*)\)", text):
        if given.strip() == value:
            return True
        with contextlib.suppress(ValueError):
            if float(given) == float(value):
                return True
    return False


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of usage + message, and defaults in
    every command's --help."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- entry point ----------------------------------------------------------------------------
def _commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Each command module's `add_*` functions, in the order `--help` lists them."""
    from vaekit.cli import (
        apply,
        compare,
        completion,
        evaluate,
        explore,
        export,
        inspect,
        optimize,
        runs,
        serve,
        train,
    )

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
        optimize.add_optimize,
        export.add_export,
        serve.add_serve,
        completion.add_completion,
    ]


def make_parser() -> Parser:
    from vaekit.core.version import VERSION as __version__

    parser = Parser(
        prog="vaekit", description="Train, evaluate and explore Variational Autoencoders."
    )
    parser.add_argument("--version", action="version", version=f"vaekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import MODULE first, e.g. one that calls vaekit.register_network (repeatable; "
        f"also ${PLUGINS_ENV}, comma-separated)",
    )
    sub = parser.add_subparsers(
        title="commands", metavar="COMMAND", parser_class=Parser, dest="command"
    )
    for add in _commands():
        add(sub)
    return parser


PLUGINS_ENV = "VAEKIT_PLUGINS"


def plugin_modules(argv: list[str]) -> list[str]:
    """The modules named by --plugin MODULE / --plugin=MODULE and $VAEKIT_PLUGINS."""
    names = [n for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for i, arg in enumerate(argv):
        if arg == "--plugin" and i + 1 < len(argv):
            names.append(argv[i + 1])
        elif arg.startswith("--plugin="):
            names.append(arg.split("=", 1)[1])
    return [n.strip() for n in names]


def load_plugins(argv: list[str]) -> None:
    """Import the plugin modules before the parser is built, so what they register (a
    network, a dataset) is known to every command."""
    import importlib

    for name in plugin_modules(argv):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise VaekitError(f"plugin {name!r} could not be imported: {err}") from None


def refuse_sequence_run(args: argparse.Namespace) -> None:
    """A ConfigError if the command's parser says it takes no sequence runs
    (`set_defaults(sequence_runs=False)`) and its run is a sequence run."""
    run = getattr(args, "run", None)
    if getattr(args, "sequence_runs", True) or run is None:
        return
    from vaekit.config.runs import RunFolder

    folder = RunFolder(run)
    if folder.config_path.is_file() and folder.load_config().data.kind == "sequence":
        raise ConfigError(
            f"{run}: vaekit {args.command} does not handle sequence runs yet (docs/sequences.md)"
        )


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status. Output into a closed pipe (`vaekit info --json |
    head`) ends the command quietly, with the status of a process killed by SIGPIPE."""
    try:
        code = run_command_line(argv)
        sys.stdout.flush()  # a pipe closed early fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the interpreter flushes stdout again at exit: let that go to /dev/null (unless
        # stdout is no file, as when a test captures it)
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # SIGPIPE


def run_command_line(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        load_plugins(argv)
    except VaekitError as err:
        print(f"vaekit: error: {err}", file=sys.stderr)
        return 2
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
    except BrokenPipeError:
        raise  # the reader of our output has gone: main() ends quietly
    except OSError as err:  # disk full, permission denied, ...
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"vaekit: error: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vaekit: interrupted", file=sys.stderr)
        return 130
