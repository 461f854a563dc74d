"""One self-contained HTML page per run: config, metrics, every picture inlined (no network).

`write_report(run_dir)` draws the exploration pictures with `vaekit.explore` (the same code
as the commands), takes the training pictures from the run folder (drawing any that are
missing), and writes `report.html` with all images as base64 data URIs. If the run folder
has an `evaluation.json`, its contents are shown as a table.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaekit import plots
from vaekit.apps import explore
from vaekit.config.runs import RunFolder
from vaekit.core.files import atomic_write_text
from vaekit.core.version import VERSION
from vaekit.data.datasets import DataSplits
from vaekit.evaluation.run import EVALUATION_FILE, read_evaluation
from vaekit.training.pictures import TABLE_ROWS

REPORT_FILE = "report.html"
MIME = {".png": "image/png", ".gif": "image/gif"}
STEPS = 10  # decoded images in the interpolation

EPOCH_COLUMNS = [
    ("epoch", "epoch"),
    ("train_neg_elbo", "train -ELBO"),
    ("test_neg_elbo", "test -ELBO"),
    ("test_recon", "test recon"),
    ("test_kl", "test KL"),
    ("test_bits_per_dim", "test bits/dim"),
    ("active_units", "active units"),
    ("beta", "beta"),
    ("train_seconds", "train seconds"),
]

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; vertical-align: top; }
th { background: #f4f4f4; } td.key, th.key { text-align: left; font-family: monospace; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.92em; max-width: 900px; }
.warning { background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
"""


@dataclass
class Picture:
    """One figure of the report: a file to inline and what it shows."""

    title: str
    path: Path
    caption: str


def write_report(
    run_dir: str | Path,
    output: str | Path | None = None,
    *,
    device: str = "cpu",
    latent_n: int | None = None,
    seed: int = 0,
    data: DataSplits | None = None,
) -> Path:
    """Write RUN/report.html (or `output`): one self-contained page describing the run.

    `data` replaces the dataset named in the run's config (for data not in the registry)."""
    run = explore.open_run(run_dir, device=device, data=data)
    folder, config = RunFolder(run.path), run.config
    history = folder.read_metrics()
    evaluation = read_evaluation(folder.file(EVALUATION_FILE))
    output = Path(output) if output is not None else folder.file(REPORT_FILE)
    with tempfile.TemporaryDirectory(prefix="vaekit-report-") as scratch:
        pictures = draw_pictures(run, folder, history, Path(scratch), latent_n, seed)
        body = [
            header(run, config.to_dict()),
            summary(history, run.is_table),
            metrics_table(history, run.is_table),
            evaluation_section(evaluation),
            *(figure_html(p) for p in pictures),
            config_section(config.to_dict()),
        ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>vaekit report: {esc(run.name)}</title>\n<style>{CSS}</style></head>\n"
        "<body>\n" + "\n".join(part for part in body if part) + "\n</body></html>\n"
    )
    atomic_write_text(output, page)
    return output


# --- pictures ---------------------------------------------------------------------------
def draw_pictures(
    run: explore.ExploreRun,
    folder: RunFolder,
    history: list[dict[str, Any]],
    scratch: Path,
    latent_n: int | None,
    seed: int,
) -> list[Picture]:
    """Every picture of the report, in order: training ones from the run, then exploration."""
    pictures = [p for p in training_pictures(run, folder, history, scratch) if p is not None]
    source, target = interpolation_pair(run.test)
    codes = explore.save_latent(run, scratch / "latent.png", "auto", latent_n, seed)
    grid = explore.save_manifold(run, scratch / "manifold.png", 20)
    gif = None if run.is_table else scratch / "interp.gif"
    explore.save_interpolation(run, scratch / "interp.png", source, target, STEPS, "lerp", gif=gif)
    dims = explore.save_traversal(run, scratch / "traversal.png", index=0)
    scores = explore.save_kl(run, scratch / "kl.png")
    how = {"z": "drawn directly", "pca": "projected by PCA", "tsne": "embedded by t-SNE"}
    axes = " and ".join(f"z[{d}]" for d in grid.dims)
    noun = "row" if run.is_table else "image"
    decoded = "each feature's value" if run.is_table else "images"
    return pictures + [
        Picture(
            "Latent space",
            scratch / "latent.png",
            f"Posterior means of {len(codes.points)} test {noun}s, {how[codes.method]} and "
            "coloured by label. Well separated colours mean the code keeps the class.",
        ),
        Picture(
            "Manifold",
            scratch / "manifold.png",
            f"{decoded.capitalize()} decoded from a grid over {axes} (the most informative "
            "dimensions), " + manifold_caption(run.model),
        ),
        Picture(
            "Interpolation",
            scratch / "interp.png",
            f"Input A (test {noun} {source}), {STEPS} {noun}s decoded along the straight line "
            f"between the posterior means of A and B (test {noun} {target}), then input B"
            + (" (one panel per feature)." if run.is_table else "."),
        ),
        *([Picture("Interpolation (animated)", gif, "The same path, looped.")] if gif else []),
        Picture(
            "Latent traversal",
            scratch / "traversal.png",
            f"Each {'line' if run.is_table else 'row'} sets one latent dimension (of "
            f"{len(dims)} shown, highest KL first) from -3 to +3 while the others keep the "
            f"code of test {noun} 0: a dimension that matters changes the {noun} along it.",
        ),
        Picture("KL per dimension", scratch / "kl.png", kl_caption(scores, run.model)),
    ]


def manifold_caption(model: torch.nn.Module) -> str:
    if not explore.own_prior(model):
        return (
            "spaced by quantiles of the N(0, 1) prior so that each cell holds equal prior "
            "mass; other dimensions are 0."
        )
    return (
        "spaced by quantiles of each dimension's marginal under the model's own prior "
        f"(from {explore.PRIOR_DRAWS:,} draws of it) so that each cell holds equal prior "
        "mass; other dimensions are at their prior medians."
    )


def kl_caption(scores: explore.DimensionScores, model: torch.nn.Module) -> str:
    if scores.kind != "KL":
        return (
            "The model encodes to points (no posterior variance, so no KL): the variance "
            "of each code dimension over the test images."
        )
    if explore.own_prior(model):
        return (
            "The KL of each latent dimension as the model's own ELBO counts it, a one-sample "
            "estimate in nats per example: against the conditional prior of its layer for a "
            "hierarchical VAE (the bars add up to the KL term), against each dimension's "
            "marginal for a VampPrior (they do not). Grey bars (KL <= 0.01) are unused "
            "dimensions."
        )
    return (
        "KL(q(z_d|x) || N(0, 1)) of each latent dimension in nats per example, total "
        f"{float(scores.values.sum()):.2f}; grey bars (KL <= 0.01) are unused dimensions."
    )


def training_pictures(
    run: explore.ExploreRun, folder: RunFolder, history: list[dict[str, Any]], scratch: Path
) -> list[Picture | None]:
    """Loss curves, samples and reconstructions: the run's own files, drawn here if missing
    (a table's as per-feature plots)."""
    model, test = run.model, run.test
    n_samples = folder.load_config().n_samples
    draw: dict[str, Callable[[Path], Any]] = {
        "samples.png": lambda p: explore.save_samples(model, p, n_samples, 0, test, run.columns),
        "reconstructions.png": lambda p: explore.save_reconstructions(model, test, p, 32),
        "feature_reconstructions.png": lambda p: explore.save_reconstructions(
            model, test, p, TABLE_ROWS, run.columns
        ),
    }
    if history:
        draw["loss_curves.png"] = lambda p: plots.save_loss_curves(history, p)
    if model.has_analogies:  # semi-supervised models: style x content
        x = test.x[:10].to(next(model.parameters()).device)
        draw["analogies.png"] = lambda p: plots.save_analogies(
            x, model.analogies(x), p, run.classes
        )
    pictures: list[Picture | None] = []
    for name, (title, caption) in picture_captions(run, n_samples).items():
        path = folder.file(name)
        if not path.is_file():
            if name not in draw:
                continue
            path = draw[name](scratch / name)
        pictures.append(Picture(title, path, caption))
    return pictures


def picture_captions(run: explore.ExploreRun, n_samples: int) -> dict[str, tuple[str, str]]:
    """File name -> (title, caption) of the training pictures a run of this kind has."""
    loss = (
        "Loss curves",
        "-ELBO, reconstruction and KL terms per epoch on the training and test sets, in "
        "nats per example (lower is better).",
    )
    if run.is_table:
        return {
            "loss_curves.png": loss,
            "samples.png": (
                "Samples",
                f"Each feature's distribution in {n_samples} rows decoded from draws of the "
                f"prior (likelihood means), against the {len(run.test)} test rows.",
            ),
            "feature_reconstructions.png": (
                "Reconstructions",
                "Each feature of the test rows (horizontal) against its reconstruction from "
                "the posterior mean (vertical); the diagonal is a perfect reconstruction.",
            ),
        }
    return {
        "loss_curves.png": loss,
        "samples.png": (
            "Samples",
            f"{n_samples} images decoded from draws z ~ N(0, I) of the prior (likelihood means).",
        ),
        "reconstructions.png": (
            "Reconstructions",
            "Test images (odd rows) above their reconstructions from the posterior mean "
            "(even rows).",
        ),
        "analogies.png": (
            "Style and content",
            "Each row: a test image (left), then its style z (the posterior mean given the "
            "predicted label) decoded with every label y. A column should show its label's "
            "digit in the row's style (Kingma et al. 2014, figure 1).",
        ),
    }


def interpolation_pair(test) -> tuple[str, str]:
    """Test indices for the report's interpolation: image 0 and the first of another label."""
    if test.y is None or len(test) < 2:
        return "0", str(min(1, len(test) - 1))
    others = (test.y != test.y[0]).nonzero()
    return "0", str(int(others[0]) if len(others) else 1)


# --- HTML pieces ------------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell: floats to 6 significant digits, long number lists shortened, lists of
    records as a nested table, anything else as escaped text or JSON."""
    if isinstance(value, bool) or value is None:
        return esc(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and all(isinstance(v, int | float) for v in value):
        if len(value) <= 16:
            return esc(f"[{', '.join(fmt(v) for v in value)}]")
        shown = ", ".join(fmt(v) for v in value[:16])
        return esc(f"[{shown}, ...] ({len(value)} values)")
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns = list(dict.fromkeys(key for record in value for key in record))
        rows = [[fmt(record.get(key, "")) for key in columns] for record in value]
        return table([esc(c) for c in columns], rows)
    if isinstance(value, dict | list):
        return f"<code>{esc(json.dumps(value))}</code>"
    return esc(value)


def data_uri(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def figure_html(picture: Picture) -> str:
    return (
        f"<section><h2>{esc(picture.title)}</h2><figure>"
        f'<img src="{data_uri(picture.path)}" alt="{esc(picture.title)}">'
        f"<figcaption>{esc(picture.caption)}</figcaption></figure></section>"
    )


def header(run: explore.ExploreRun, config: dict[str, Any]) -> str:

    model = config["model"]
    when = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        f"<h1>{esc(config['name'])}</h1>"
        f'<p class="meta">run folder <code>{esc(run.path)}</code> &middot; dataset '
        f"{esc(config['data']['name'])} &middot; {esc(model['name'])} "
        f"{esc(model['arch'])} {esc(model['hidden'])}, z={esc(model['latent_dim'])}, "
        f"{esc(model['likelihood'])} likelihood &middot; report written {esc(when)} by "
        f"vaekit {esc(VERSION)}</p>"
    )


def summary(history: list[dict[str, Any]], table_run: bool = False) -> str:
    """The final epoch's headline numbers, each with its unit (no bits/dim for a table)."""
    if not history:
        return "<p>No completed epochs: metrics.jsonl is empty.</p>"
    final = history[-1]
    warning = final.get("warning")
    if "test_neg_elbo" not in final:  # autoencoder, PCA: no ELBO
        unit = "per feature" if table_run else "per pixel on [0,1] intensities"
        return (
            f"<p>After {final['epoch']} epochs: test reconstruction MSE "
            f"<b>{final['test_mse']:.5f}</b> {unit} (the model has no ELBO).</p>"
        )
    bits = "" if table_run else f", {final['test_bits_per_dim']:.4f} bits/dim"
    text = (
        f"<p>After {final['epoch']} epochs: test -ELBO <b>{final['test_neg_elbo']:.2f}</b> nats "
        f"per example (reconstruction {final['test_recon']:.2f} + KL {final['test_kl']:.2f} "
        f"nats){bits}, {final['active_units']} active units (latent dimensions).</p>"
    )
    return text + (f'<p class="warning">warning: {esc(warning)}</p>' if warning else "")


def table(header_cells: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header_cells)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def key_value_table(items: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="key">{esc(k)}</td><td>{fmt(v)}</td></tr>' for k, v in items.items()
    )
    return f"<table><tbody>{rows}</tbody></table>"


def metrics_table(history: list[dict[str, Any]], table_run: bool = False) -> str:
    """One row per epoch (bits/dim only for images)."""
    if not history:
        return ""
    columns = [(key, name) for key, name in EPOCH_COLUMNS if key in history[0]]
    if table_run:
        columns = [(key, name) for key, name in columns if key != "test_bits_per_dim"]
    rows = [[fmt(row.get(key, "")) for key, _ in columns] for row in history]
    return (
        "<section><h2>Metrics per epoch</h2><p>Test-set values in nats per example "
        "(single-sample ELBO).</p>" + table([esc(name) for _, name in columns], rows) + "</section>"
    )


def flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with dotted keys (lists and scalars kept as values)."""
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            flat.update(flatten(item, f"{name}."))
        else:
            flat[name] = item
    return flat


def evaluation_section(evaluation: dict[str, Any] | None) -> str:
    if evaluation is None:
        return ""
    return (
        f"<section><h2>Evaluation</h2><p>From {EVALUATION_FILE} "
        "(written by <code>vaekit evaluate</code>).</p>"
        + key_value_table(flatten(evaluation))
        + "</section>"
    )


def config_section(config: dict[str, Any]) -> str:
    return (
        "<section><h2>Configuration</h2>"
        + key_value_table(flatten(config))
        + f"<details><summary>config.json</summary><pre>{esc(json.dumps(config, indent=2))}"
        "</pre></details></section>"
    )
