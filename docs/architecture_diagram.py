"""Draw docs/architecture.png: vaekit's layers, bottom to top, as in docs/architecture.md.

Run `python docs/architecture_diagram.py` after changing the layers (pyproject.toml's
[tool.importlinter] contract is the authority; this picture only shows it).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# top to bottom; a row with two entries holds independent siblings (neither imports the other)
LAYERS: list[list[tuple[str, str]]] = [
    [
        (
            "vaekit.cli",
            "argparse commands: train, evaluate, compare, sample, ...\n(the only imports inside functions: a command loads its work when it runs)",
        )
    ],
    [("vaekit.api", "the functions `import vaekit` gives: train, load, evaluate_run, ...")],
    [("vaekit.apps", "encode, anomaly, denoise, explore, compare, report, estimator")],
    [
        (
            "vaekit.training",
            "trainer, steps, optim, checkpoint, distributed, denoising,\npictures, fit (train())",
        )
    ],
    [("vaekit.evaluation", "metrics (ELBO, IWAE, active units, probes), quality, run")],
    [
        (
            "vaekit.models",
            "base, vae kinds (cvae, hvae, vamp, m2, m1m2), ae, pca,\nregistry, loading, batched",
        )
    ],
    [
        ("vaekit.nn", "mlp, conv, resnet;\nbuild_networks"),
        ("vaekit.likelihoods", "bernoulli, gaussian;\nbuild_likelihood"),
    ],
    [
        (
            "vaekit.data",
            "datasets, batches, registry, binarize;\nmnist, binarized_mnist, idx, arrays, tables, folder",
        ),
        ("vaekit.plots", "image grids, scatter plots,\ncurves, GIFs"),
    ],
    [("vaekit.config", "schema (RunConfig, ...), presets, runs (RunFolder)")],
    [("vaekit.core", "errors, files (atomic writes, safetensors, cache), device, noise, version")],
]

WIDTH, ROW, GAP, HEIGHT = 10.0, 0.78, 0.34, 0.2  # inches: figure width, box height, gap
COLOURS = ["#dbe9f6", "#e3f1dc"]


def box(ax, x: float, y: float, w: float, h: float, name: str, about: str, colour: str) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0,rounding_size=0.08",
            facecolor=colour,
            edgecolor="#40556b",
            linewidth=1.2,
        )
    )
    ax.text(
        x + w / 2,
        y + h - 0.2,
        name,
        ha="center",
        va="center",
        fontsize=11.5,
        fontweight="bold",
        family="monospace",
    )
    ax.text(
        x + w / 2,
        y + (h - 0.3) / 2,
        about,
        ha="center",
        va="center",
        fontsize=8.5,
        color="#222222",
        linespacing=1.15,
    )


def draw(path: Path) -> None:
    total = len(LAYERS) * ROW + (len(LAYERS) - 1) * GAP + 2 * HEIGHT
    fig = plt.figure(figsize=(WIDTH, total + 0.6))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, WIDTH)
    ax.set_ylim(-0.3, total + 0.3)
    ax.axis("off")
    left, right = 0.3, WIDTH - 2.0
    top = total - HEIGHT
    for i, row in enumerate(LAYERS):
        y = top - (i + 1) * ROW - i * GAP
        w = (right - left - 0.3 * (len(row) - 1)) / len(row)
        for j, (name, about) in enumerate(row):
            box(ax, left + j * (w + 0.3), y, w, ROW, name, about, COLOURS[i % 2])
        if i + 1 < len(LAYERS):  # an arrow down to the next layer: "imports"
            mid = (left + right) / 2
            ax.add_patch(
                FancyArrowPatch(
                    (mid, y - 0.02),
                    (mid, y - GAP + 0.02),
                    arrowstyle="-|>",
                    mutation_scale=14,
                    color="#40556b",
                    linewidth=1.4,
                )
            )
    # the rule, on the right
    ax.add_patch(
        FancyArrowPatch(
            (WIDTH - 1.1, top - 0.1),
            (WIDTH - 1.1, HEIGHT + 0.1),
            arrowstyle="-|>",
            mutation_scale=22,
            color="#b03a2e",
            linewidth=2.5,
        )
    )
    ax.text(
        WIDTH - 0.75,
        total / 2,
        "imports go downward only\n(lint-imports checks)",
        rotation=-90,
        ha="center",
        va="center",
        fontsize=10,
        color="#b03a2e",
    )
    ax.text(
        left,
        total + 0.05,
        "each layer imports only from the layers below it; "
        "boxes side by side are independent siblings",
        ha="left",
        va="center",
        fontsize=9,
        color="#40556b",
        style="italic",
    )
    fig.savefig(path, dpi=110, facecolor="white")
    plt.close(fig)


if __name__ == "__main__":
    draw(Path(__file__).with_name("architecture.png"))
