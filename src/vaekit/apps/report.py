"""One self-contained HTML page per run: config, metrics, every picture inlined (no network).

`write_report(run_dir)` draws the exploration pictures with `vaekit.explore` (the same code
as the commands), takes the training pictures from the run folder (drawing any that are
missing), and writes `report.html` with all images as base64 data URIs. If the run folder
has an `evaluation.json`, its contents are shown as a table.

A sequence run's page shows strings where an image run's shows pictures: samples,
reconstructions and an interpolation as text, and, for molecules with RDKit, as 2-D
structure drawings (RDKit SVG, inlined like the images) marked valid or invalid.
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
from vaekit.core.errors import ConfigError
from vaekit.core.files import atomic_write_text
from vaekit.core.version import VERSION
from vaekit.data.datasets import DataSplits
from vaekit.data.sequences import MOLECULES_EXTRA, is_molecules, vocabulary_of
from vaekit.evaluation.run import EVALUATION_FILE, read_evaluation
from vaekit.evaluation.sequences import rdkit_chem, reconstruction_pairs, sample_strings
from vaekit.training.pictures import TABLE_ROWS

REPORT_FILE = "report.html"
MIME = {".png": "image/png", ".gif": "image/gif"}
STEPS = 10  # decoded images in the interpolation
SEQUENCE_SAMPLES = 32  # strings (or molecule drawings) in a sequence run's samples
SEQUENCE_PAIRS = 16  # test sequences shown with their reconstructions
PARTNER_POOL = 100  # test sequences searched for the interpolation's far end
EXACT_MATCH_OF = 1000  # test sequences the report's exact-match rate is measured on
MOLECULES_PER_ROW = 8
LEGEND_CHARS = 40  # a drawing's legend: its SMILES, cut to this many characters
CELL_SIZE = (200, 160)  # pixels of one molecule's drawing
BOND_PIXELS = 24  # the longest a bond is drawn (larger molecules shrink to fit)

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
.molecules { display: grid; gap: 4px; margin-bottom: 0.5em; }
.mol { border: 1px solid #eee; text-align: center; font: 0.72em monospace; overflow-wrap: anywhere; }
.mol svg { width: 100%; height: auto; display: block; }
.mol.invalid { background: #fff0f0; color: #a00; } .mol.empty { border: none; }
.mol .none { aspect-ratio: 5 / 4; display: flex; align-items: center; justify-content: center; }
figcaption { color: #444; font-size: 0.92em; max-width: 900px; }
.warning { background: #fff4e0; border-left: 4px solid #f0a000; padding: 0.5em 1em; }
.strings td, .strings th { text-align: left; }
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
    kind = "sequence" if config.data.kind == "sequence" else "table" if run.is_table else "image"
    with tempfile.TemporaryDirectory(prefix="vaekit-report-") as scratch:
        if kind == "sequence":
            sections = sequence_sections(run, folder, history, Path(scratch), latent_n, seed)
        else:
            pictures = draw_pictures(run, folder, history, Path(scratch), latent_n, seed)
            sections = [figure_html(p) for p in pictures]
        body = [
            header(run, config.to_dict()),
            summary(history, kind),
            metrics_table(history, kind),
            evaluation_section(evaluation),
            *sections,
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


# --- sequence runs ----------------------------------------------------------------------
@dataclass
class Strings:
    """A section of strings: a table of them, and for molecules their drawings."""

    title: str
    caption: str
    text: str  # HTML: a table of the strings
    drawing: str = ""  # HTML: a grid of 2-D structures (inline SVG), "" for none


def sequence_sections(
    run: explore.ExploreRun,
    folder: RunFolder,
    history: list[dict[str, Any]],
    scratch: Path,
    latent_n: int | None,
    seed: int,
) -> list[str]:
    """A sequence run's sections: loss curves, samples, reconstructions, an interpolation
    (molecules drawn when RDKit is there), the latent plot and the KL per dimension."""
    missing = ""
    if is_molecules(run.config.data):
        try:
            rdkit_chem()
        except ConfigError:
            missing = f"Drawings of the molecules need the molecules extra: {MOLECULES_EXTRA}"
    draw = is_molecules(run.config.data) and not missing
    parts = [figure_html(p) for p in sequence_pictures(folder, history, scratch)]
    if missing:
        parts.append(f'<p class="warning">{esc(missing)}</p>')
    for section in (
        sequence_samples(run, draw),
        sequence_reconstructions(run, draw),
        sequence_interpolation(run, draw),
    ):
        parts.append(strings_html(section))
    codes = explore.save_latent(run, scratch / "latent.png", "auto", latent_n, seed)
    scores = explore.save_kl(run, scratch / "kl.png")
    how = {"z": "drawn directly", "pca": "projected by PCA", "tsne": "embedded by t-SNE"}
    latent = f"Posterior means of {len(codes.points)} test sequences, {how[codes.method]}."
    parts.append(figure_html(Picture("Latent space", scratch / "latent.png", latent)))
    kl = Picture("KL per dimension", scratch / "kl.png", kl_caption(scores, run.model))
    parts.append(figure_html(kl))
    return parts


def sequence_pictures(
    folder: RunFolder, history: list[dict[str, Any]], scratch: Path
) -> list[Picture]:
    """The loss curves: the run's own file, drawn here if missing."""
    path = folder.file("loss_curves.png")
    if not path.is_file():
        if not history:
            return []
        path = plots.save_loss_curves(history, scratch / "loss_curves.png")
    caption = (
        "-ELBO, reconstruction and KL terms per epoch on the training and test sets, in "
        "nats per sequence (lower is better)."
    )
    return [Picture("Loss curves", path, caption)]


def sequence_samples(run: explore.ExploreRun, draw: bool) -> Strings:
    """SEQUENCE_SAMPLES strings from the model (temperature 1, seed 0)."""
    vocabulary = vocabulary_of(run.config.data)
    strings = sample_strings(run.model, vocabulary, SEQUENCE_SAMPLES, temperature=1.0, seed=0)
    caption = (
        f"{len(strings)} sequences drawn from the model: z ~ N(0, I), then each token from "
        "p(x_t | x_<t, z) at temperature 1 (seed 0)."
    )
    rows = [[str(i), code(s)] for i, s in enumerate(strings)]
    section = Strings("Samples", caption, table(["#", "sequence"], rows))
    if draw:
        section.drawing = molecule_grid([(s, "") for s in strings])
        section.caption += f" {validity_line(strings)}"
    return section


def sequence_reconstructions(run: explore.ExploreRun, draw: bool) -> Strings:
    """The first SEQUENCE_PAIRS test sequences and their greedy decodings, with the
    exact-match rate over the first EXACT_MATCH_OF."""
    vocabulary = vocabulary_of(run.config.data)
    pairs, rate = reconstruction_pairs(run.model, run.test.head(EXACT_MATCH_OF), vocabulary)
    measured = min(EXACT_MATCH_OF, len(run.test))
    shown = pairs[:SEQUENCE_PAIRS]
    caption = (
        f"The first {len(shown)} test sequences and the greedy decodings of their posterior "
        f"means (= exact, x differs). Exact match: {rate:.2%} of the first {measured} test "
        "sequences (vaekit reconstruct measures the whole test split)."
    )
    rows = [["=" if a == b else "x", code(a), code(b)] for a, b in shown]
    section = Strings("Reconstructions", caption, table(["", "original", "decoded"], rows))
    if draw:
        cells = []
        for start in range(0, len(shown), MOLECULES_PER_ROW):  # test molecules, then theirs
            chunk = shown[start : start + MOLECULES_PER_ROW]
            gap = [None] * (MOLECULES_PER_ROW - len(chunk))  # a short last row stays aligned
            cells += [(a, "") for a, _ in chunk] + gap
            cells += [(b, "=" if a == b else "x") for a, b in chunk] + gap
        section.drawing = molecule_grid(cells)
        section.caption += (
            " Drawings: each row of test molecules above a row of their decodings. "
            + validity_line([b for _, b in shown])
        )
    return section


def sequence_interpolation(run: explore.ExploreRun, draw: bool) -> Strings:
    """STEPS greedy decodings on the straight line between the codes of two test sequences."""
    config, test = run.config.data, run.test
    pair = [0, sequence_partner(run.model, test.storage)]
    source, target = vocabulary_of(config).decode(test.storage[pair])
    strings = explore.interpolate_tokens(run.model, config, test.storage[pair], STEPS)
    t = torch.linspace(0, 1, STEPS).tolist()
    caption = (
        f"{STEPS} greedy decodings of the codes on the straight line between the posterior "
        f"means of test sequence {pair[0]} (A) and test sequence {pair[1]} (B)."
    )
    labelled = [(source, "A"), *((s, f"t={v:.2f}") for v, s in zip(t, strings)), (target, "B")]
    rows = [[label, code(text)] for text, label in labelled]
    section = Strings("Interpolation", caption, table(["", "sequence"], rows))
    if draw:
        section.drawing = molecule_grid(labelled, per_row=6)
        section.caption += f" {validity_line(strings)}"
    return section


def sequence_partner(model: torch.nn.Module, storage: torch.Tensor) -> int:
    """Among the first PARTNER_POOL test sequences, the one whose code lies farthest from
    sequence 0's (posterior means): the interpolation then crosses the latent space."""
    means = explore.encode_means(model, storage[:PARTNER_POOL])
    return int((means - means[:1]).norm(dim=1).argmax())


def validity_line(smiles: list[str]) -> str:
    """'k of n decoded strings are valid SMILES (RDKit)' and how invalid ones look."""
    valid, _ = explore.validity_marks(smiles)
    return (
        f"{sum(valid)} of {len(valid)} decoded strings are valid SMILES (RDKit); an invalid "
        "one is a red cell marked INVALID."
    )


def molecule_grid(cells: list[tuple[str, str] | None], per_row: int = MOLECULES_PER_ROW) -> str:
    """(SMILES, label) cells drawn as 2-D structures by RDKit, each an inline SVG with its
    label and SMILES below; a SMILES RDKit cannot read (an empty decoding too) is a red
    cell marked INVALID, None an empty cell."""
    chem = rdkit_chem()
    from rdkit.Chem.Draw import rdMolDraw2D  # RDKit is optional: imported once it is found

    html_cells = []
    for cell in cells:
        if cell is None:
            html_cells.append('<div class="mol empty"></div>')
            continue
        smiles, label = cell
        molecule = chem.MolFromSmiles(smiles) if smiles else None
        shown = smiles[:LEGEND_CHARS] + ("..." if len(smiles) > LEGEND_CHARS else "")
        text = f"{label} {shown}".strip()
        if molecule is None:
            picture, kind, text = (
                '<div class="none">no molecule</div>',
                "mol invalid",
                (f"{label} INVALID {shown}".strip()),
            )
        else:
            drawer = rdMolDraw2D.MolDraw2DSVG(*CELL_SIZE)
            drawer.drawOptions().fixedBondLength = BOND_PIXELS  # small molecules stay small
            drawer.DrawMolecule(molecule)
            drawer.FinishDrawing()
            svg = drawer.GetDrawingText()
            picture, kind = svg[svg.index("<svg") :], "mol"
        html_cells.append(f'<div class="{kind}">{picture}<div>{esc(text)}</div></div>')
    columns = f"grid-template-columns: repeat({per_row}, minmax(0, 1fr))"
    return f'<div class="molecules" style="{columns}">{"".join(html_cells)}</div>'


def code(text: str) -> str:
    return f"<code>{esc(text) or '&nbsp;'}</code>"


def strings_html(section: Strings) -> str:
    """A section of strings: the drawings (if any) and the strings as a table (folded
    away under the drawings)."""
    return (
        f"<section><h2>{esc(section.title)}</h2><figure>{section.drawing}"
        f"<figcaption>{esc(section.caption)}</figcaption></figure>"
        f"<details{'' if section.drawing else ' open'}><summary>as text</summary>"
        f'<div class="strings">{section.text}</div></details></section>'
    )


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
    arch = "gru" if model["name"] == "seqvae" else model["arch"]  # seqvae: recurrent
    when = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        f"<h1>{esc(config['name'])}</h1>"
        f'<p class="meta">run folder <code>{esc(run.path)}</code> &middot; dataset '
        f"{esc(config['data']['name'])} &middot; {esc(model['name'])} "
        f"{esc(arch)} {esc(model['hidden'])}, z={esc(model['latent_dim'])}, "
        f"{esc(model['likelihood'])} likelihood &middot; report written {esc(when)} by "
        f"vaekit {esc(VERSION)}</p>"
    )


def summary(history: list[dict[str, Any]], kind: str = "image") -> str:
    """The final epoch's headline numbers, each with its unit (no bits/dim for a table;
    nats per sequence and per token for sequences)."""
    if not history:
        return "<p>No completed epochs: metrics.jsonl is empty.</p>"
    final = history[-1]
    warning = final.get("warning")
    if "test_neg_elbo" not in final:  # autoencoder, PCA: no ELBO
        unit = "per feature" if kind == "table" else "per pixel on [0,1] intensities"
        return (
            f"<p>After {final['epoch']} epochs: test reconstruction MSE "
            f"<b>{final['test_mse']:.5f}</b> {unit} (the model has no ELBO).</p>"
        )
    bits = {"table": "", "image": f", {final['test_bits_per_dim']:.4f} bits/dim"}
    bits["sequence"] = f", {final.get('test_nats_per_token', float('nan')):.4f} nats per token"
    text = (
        f"<p>After {final['epoch']} epochs: test -ELBO <b>{final['test_neg_elbo']:.2f}</b> nats "
        f"per {'sequence' if kind == 'sequence' else 'example'} (reconstruction {final['test_recon']:.2f} + KL {final['test_kl']:.2f} "
        f"nats){bits[kind]}, {final['active_units']} active units (latent dimensions).</p>"
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


def metrics_table(history: list[dict[str, Any]], kind: str = "image") -> str:
    """One row per epoch (bits/dim only for images; a sequence run's are bits per token)."""
    if not history:
        return ""
    columns = [(key, name) for key, name in EPOCH_COLUMNS if key in history[0]]
    if kind == "table":
        columns = [(key, name) for key, name in columns if key != "test_bits_per_dim"]
    if kind == "sequence":
        names = {"test_bits_per_dim": "test bits/token"}
        columns = [(key, names.get(key, name)) for key, name in columns]
    rows = [[fmt(row.get(key, "")) for key, _ in columns] for row in history]
    unit = "sequence" if kind == "sequence" else "example"
    return (
        f"<section><h2>Metrics per epoch</h2><p>Test-set values in nats per {unit} "
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
