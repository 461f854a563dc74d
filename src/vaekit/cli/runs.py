"""`vaekit runs`: a table of the run folders under a directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="a table of the run folders under DIR (default runs/)",
        description="List the run folders under DIR: model, data, epochs done/asked, the "
        "kept weights' test -ELBO (best validation epoch, else final), the IWAE NLL of "
        "evaluation.json if there is one, and the date of the last metrics row. Damaged "
        "folders are listed with a note; folders without a config.json are skipped.",
    )
    p.add_argument("dir", nargs="?", type=Path, default=Path("runs"), metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(run_command=cmd_runs)


def cmd_runs(args: argparse.Namespace) -> int:
    from vaekit.apps.runs import format_table, list_runs

    rows = list_runs(args.dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        print(format_table(rows))
    else:
        print(f"no run folders in {args.dir}")
    return 0
