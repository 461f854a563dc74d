"""`vaekit runs`: one summary row per run folder under a directory.

Each folder is read through `vaekit.config.runs.RunFolder`; a damaged one (unreadable
config, damaged metrics or evaluation.json) is listed with a note instead of stopping
the listing. Folders without a config.json are not runs and are skipped.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from vaekit.config.runs import CONFIG_FILE, RunFolder, is_number
from vaekit.core.errors import RunError, VaekitError
from vaekit.evaluation.run import EVALUATION_FILE, read_evaluation
from vaekit.training.fit import final_row

COLUMNS = ("run", "model", "data", "epochs", "test", "iwae_nll", "date", "note")


def list_runs(directory: str | Path) -> list[dict[str, Any]]:
    """A summary of each run folder directly under `directory` (itself too, if it is one),
    sorted by name; RunError when `directory` is missing or not a folder."""
    base = Path(directory)
    if not base.exists():
        raise RunError(f"{base}: no such folder")
    if not base.is_dir():
        raise RunError(f"{base}: is a file, expected a folder of runs")
    folders = [base] if (base / CONFIG_FILE).is_file() else []
    folders += sorted(p for p in base.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())
    return [run_row(folder) for folder in folders]


def run_row(path: Path) -> dict[str, Any]:
    """One run's summary: model, data, epochs done/asked, the kept weights' test number
    (-ELBO, or reconstruction MSE for models without an ELBO), the IWAE NLL of its
    evaluation.json (largest k), the date of its last metrics row; `note` on damage."""
    run = RunFolder(path)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row["run"] = str(path)
    notes = []
    date = path.stat().st_mtime
    try:
        config = run.load_config()
        row["model"], row["data"] = config.model.name, config.data.name
        row["epochs_asked"] = config.train.epochs
    except VaekitError as err:
        notes.append(f"config: {err}")
        row["epochs_asked"] = None
    try:
        metrics = run.read_metrics()
        row["epochs_done"] = metrics[-1]["epoch"] if metrics else 0
        final = final_row(metrics)
        if "test_neg_elbo" in final:
            row["test"], row["test_metric"] = final["test_neg_elbo"], "-ELBO"
        elif "test_mse" in final:
            row["test"], row["test_metric"] = final["test_mse"], "MSE"
        if metrics:
            date = run.metrics_path.stat().st_mtime
    except (VaekitError, OSError, UnicodeDecodeError) as err:
        notes.append(f"metrics: {err}")
        row["epochs_done"] = None
    row["iwae_nll"] = iwae_nll(path / EVALUATION_FILE, notes)
    row["epochs"] = f"{_or_dash(row['epochs_done'])}/{_or_dash(row['epochs_asked'])}"
    row["date"] = datetime.fromtimestamp(date).strftime("%Y-%m-%d %H:%M")
    row["note"] = "; ".join(notes) or None
    return row


def iwae_nll(path: Path, notes: list[str]) -> float | None:
    """The IWAE NLL of the largest k in an evaluation.json, if it has one."""
    report = read_evaluation(path)
    if report is None:
        return None
    bounds = report.get("iwae")
    if "error" in report or not isinstance(bounds, list):
        if "error" in report or bounds is not None:
            notes.append(f"{EVALUATION_FILE}: damaged")
        return None
    bounds = [b for b in bounds if isinstance(b, dict) and is_number(b.get("nll"))]
    if not bounds:
        return None
    return max(bounds, key=lambda b: b.get("k") if is_number(b.get("k")) else 0)["nll"]


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = ["run", "model", "data", "epochs", "test", "IWAE NLL", "last update", "note"]
    lines = [header]
    for row in rows:
        test = "-"
        if row["test"] is not None:
            digits = 5 if row.get("test_metric") == "MSE" else 2
            unit = "per value" if row.get("test_metric") == "MSE" else "nats"
            test = f"{row['test']:.{digits}f} {unit} ({row['test_metric']})"
        nll = "-" if row["iwae_nll"] is None else f"{row['iwae_nll']:.2f} nats"
        lines.append(
            [
                row["run"],
                row["model"] or "-",
                row["data"] or "-",
                row["epochs"],
                test,
                nll,
                row["date"],
                row["note"] or "",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines
    )
