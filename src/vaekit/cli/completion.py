"""`vaekit completion bash|zsh|tcsh`: a shell script that completes vaekit's commands and
options, written by shtab from the same parser `vaekit --help` prints."""

from __future__ import annotations

import argparse
from pathlib import Path

SHELLS = ("bash", "zsh", "tcsh")


def add_completion(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description="Print a script that completes vaekit's commands, options, choices and "
        "paths. bash: vaekit completion bash > ~/.local/share/bash-completion/completions/"
        "vaekit; zsh: vaekit completion zsh > ~/.zfunc/_vaekit, with fpath+=(~/.zfunc) "
        "before compinit in ~/.zshrc. Open a new shell afterwards.",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(run_command=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    from vaekit.cli import make_parser

    parser = make_parser()
    complete_paths(parser, shtab.FILE, shtab.DIRECTORY)
    print(shtab.complete(parser, shell=args.shell), end="")
    return 0


def complete_paths(parser: argparse.ArgumentParser, file: dict, folder: dict) -> None:
    """Mark every path argument of every command for file-name completion: run folders
    (`RUN`) complete to folders, other paths to files."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                complete_paths(command, file, folder)
        elif action.dest == "run" or action.metavar in ("RUN", "DIR"):
            action.complete = folder
        elif action.type is Path or action.metavar in ("PATH", "FILE"):
            action.complete = file
