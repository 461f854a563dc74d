"""Pictures of a run: image grids, latent scatter plots, labelled image figures, loss curves,
KL bars and animated GIFs.

Every picture goes through these helpers so that all commands draw the same way: images
are (N, C, H, W) tensors in [0, 1]; every file is written atomically (temporary file, then
rename), so an interrupted command never leaves a half-written picture.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

from vaekit.core.files import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import Colormap  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 110


# --- image grids ------------------------------------------------------------------------
def image_grid(images: torch.Tensor, ncols: int, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> one uint8 picture (rows*H', cols*W', C) with padding."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    nrows = math.ceil(n / ncols)
    grid = torch.ones(c, nrows * (h + pad) + pad, ncols * (w + pad) + pad)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top : top + h, left : left + w] = images[i]
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return array[..., 0] if c == 1 else array


def cell_centres(count: int, size: int, pad: int = 2) -> list[float]:
    """Pixel coordinates of the centres of `count` cells of `size` pixels in an image_grid."""
    return [pad + k * (size + pad) + (size - 1) / 2 for k in range(count)]


def _to_pil(array: np.ndarray, scale: int) -> Image.Image:
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return image


def save_image(array: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Save a uint8 picture as PNG, enlarged `scale` times with crisp pixels."""
    buffer = io.BytesIO()
    _to_pil(array, scale).save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def square_grid(images: torch.Tensor) -> np.ndarray:
    """The images in a grid of about as many rows as columns."""
    return image_grid(images, math.ceil(math.sqrt(len(images))))


def save_grid(images: torch.Tensor, path: str | Path, ncols: int | None = None) -> Path:
    picture = image_grid(images, ncols) if ncols else square_grid(images)
    return save_image(picture, path)


def reconstruction_grid(
    originals: torch.Tensor, reconstructions: torch.Tensor, ncols: int = 16
) -> np.ndarray:
    """Rows of at most `ncols` originals, each followed by a row of their reconstructions:
    every original directly above its own reconstruction, whatever the count (a short last
    row is filled with blank cells, the grid's background)."""
    ncols = max(1, min(ncols, len(originals)))
    blank = torch.ones(ncols, *originals.shape[1:])  # image_grid's background is white
    rows = []
    for start in range(0, len(originals), ncols):
        for images in (originals, reconstructions):
            row = images[start : start + ncols].detach().float().cpu()
            rows.append(torch.cat([row, blank[len(row) :]]))
    return image_grid(torch.cat(rows), ncols)


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path, ncols: int = 16
) -> Path:
    """Rows of originals, each followed by a row of their reconstructions."""
    return save_image(reconstruction_grid(originals, reconstructions, ncols), path)


def save_gif(
    frames: torch.Tensor, path: str | Path, duration_ms: int = 120, scale: int = 4
) -> Path:
    """Animated GIF of (N, C, H, W) frames played forwards then backwards, looping."""
    pictures = [_to_pil(image_grid(frame[None], 1, pad=0), scale) for frame in frames]
    sequence = pictures + pictures[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=sequence[1:],
        duration=duration_ms,
        loop=0,
    )
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


# --- figures ----------------------------------------------------------------------------
def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (atomically) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


_save_figure = save_figure  # the name earlier code used


def class_colormap(n_classes: int) -> Colormap:
    """Qualitative colour map with distinct colours for up to 20 classes (cycled beyond)."""
    return plt.get_cmap("tab10" if n_classes <= 10 else "tab20")


def save_image_figure(
    images: torch.Tensor,
    ncols: int,
    path: str | Path,
    title: str,
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """An image grid drawn with a title, tick labels under columns / beside rows, and axis names."""
    grid = image_grid(images, ncols)
    nrows = math.ceil(len(images) / ncols)
    _, _, h, w = images.shape
    height_px, width_px = grid.shape[:2]
    zoom = max(1.0, min(2.0, 900 / width_px))  # screen pixels per image pixel
    fig, ax = plt.subplots(figsize=(width_px * zoom / DPI + 1.2, height_px * zoom / DPI + 0.9))
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255)
    ax.set_xticks(cell_centres(ncols, w) if col_labels else [])
    ax.set_xticklabels(col_labels or [], fontsize=7, rotation=90 if ncols > 12 else 0)
    ax.set_yticks(cell_centres(nrows, h) if row_labels else [])
    ax.set_yticklabels(row_labels or [], fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    for side in ax.spines.values():
        side.set_visible(False)
    return save_figure(fig, path)


def project_2d(points: torch.Tensor) -> tuple[np.ndarray, str]:
    """Latent points (N, D) -> (N, 2): themselves when D <= 2, else their first two
    principal components. Returns the points and axis-label prefix.

    One point has one principal component at most (N points have N): a missing second
    axis is drawn as zeros, so one or two test examples still make a picture."""
    points = points.detach().double().cpu()
    if points.shape[1] > 2:
        centred = points - points.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        return _two_columns(centred @ v[:2].T).numpy(), "PC"
    return _two_columns(points).numpy(), "z"


def _two_columns(points: torch.Tensor) -> torch.Tensor:
    """(N, 1) or (N, 2) -> (N, 2), a missing second column as zeros."""
    return torch.cat([points, points.new_zeros(len(points), 2 - points.shape[1])], 1)


def save_points(
    points: np.ndarray,
    labels: torch.Tensor | np.ndarray | None,
    path: str | Path,
    title: str,
    axis_names: tuple[str, str] = ("z[0]", "z[1]"),
    class_names: list[str] | None = None,
) -> Path:
    """Scatter of 2-D points, one colour per label with a legend (one colour if unlabelled)."""
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    size = 3 if len(points) > 2000 else 6
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6)
    else:
        labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
        cmap = class_colormap(int(labels_np.max()) + 1)
        for k in np.unique(labels_np):
            mask = labels_np == k
            name = class_names[k] if class_names and k < len(class_names) else str(k)
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=size,
                alpha=0.6,
                color=cmap(int(k) % cmap.N),
                label=name,
            )
        ax.legend(markerscale=8 / size + 1, fontsize=8, loc="best", title="label")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(axis_names[0])
    ax.set_ylabel(axis_names[1])
    return save_figure(fig, path)


def save_latent_scatter(
    z_mean: torch.Tensor,
    labels: torch.Tensor | None,
    path: str | Path,
    class_names: list[str] | None = None,
    title: str = "test latents (posterior means)",
) -> Path:
    points, axis = project_2d(z_mean)
    method = "" if axis == "z" else f" (PCA of {z_mean.shape[1]} dims)"
    names = ("z[0]", "z[1]") if axis == "z" else ("PC 1", "PC 2")
    return save_points(
        points, labels, path, f"{title}{method}, n={len(points)}", names, class_names
    )


def save_feature_reconstructions(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    path: str | Path,
    names: Sequence[str] | None = None,
    n_features: int = 8,
) -> Path:
    """Table rows: one panel per feature (the first `n_features`), each test row's value
    against its reconstruction, with the diagonal a perfect model would lie on. Inputs
    (N, D); a feature whose points hug the diagonal is reconstructed well."""
    x = originals.detach().float().cpu().flatten(1).numpy()  # (N, D)
    r = reconstructions.detach().float().cpu().flatten(1).numpy()  # (N, D)
    fig, panels, phrase = _feature_panels(x.shape[1], names, n_features)
    for j, ax in panels:
        low, high = min(x[:, j].min(), r[:, j].min()), max(x[:, j].max(), r[:, j].max())
        ax.plot([low, high], [low, high], color="grey", linewidth=1, zorder=1)
        ax.scatter(x[:, j], r[:, j], s=6, alpha=0.5, zorder=2)
        ax.set_xlabel("original", fontsize=8)
        ax.set_ylabel("reconstruction", fontsize=8)
    fig.suptitle(f"Reconstructions of {len(x)} test rows, {phrase}")
    fig.tight_layout()
    return save_figure(fig, path)


def _feature_panels(
    count: int, names: Sequence[str] | None, n_features: int
) -> tuple[plt.Figure, list[tuple[int, Any]], str]:
    """A figure with one panel for each of the first `n_features` of `count` features: the
    figure, (feature index, axes) pairs, and the "first 8 of 20 features" phrase."""
    shown = min(n_features, count)
    ncols = min(4, shown)
    nrows = math.ceil(shown / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.9 * nrows), squeeze=False)
    for ax in list(axes.flat)[shown:]:
        ax.axis("off")
    panels = list(zip(range(shown), axes.flat))
    for j, ax in panels:
        ax.set_title(names[j] if names and j < len(names) else f"feature {j}", fontsize=9)
        ax.grid(alpha=0.3)
    phrase = f"first {shown} of {count} features" if shown < count else f"all {count} features"
    return fig, panels, phrase


def save_feature_distributions(
    real: torch.Tensor,
    samples: dict[str, torch.Tensor],
    path: str | Path,
    title: str,
    names: Sequence[str] | None = None,
    n_features: int = 8,
) -> Path:
    """Table rows (N, D): one panel per feature with its histogram in `real` (grey) and in
    each set of `samples` (outlined), on shared bins: where generated rows fall per feature."""
    real_np = real.detach().float().cpu().flatten(1).numpy()
    fake = {k: v.detach().float().cpu().flatten(1).numpy() for k, v in samples.items()}
    fig, panels, phrase = _feature_panels(real_np.shape[1], names, n_features)
    for j, ax in panels:
        values = np.concatenate([real_np[:, j], *(f[:, j] for f in fake.values())])
        bins = np.linspace(values.min(), values.max() + 1e-9, 31)
        ax.hist(real_np[:, j], bins=bins, density=True, color="lightgrey", label="test rows")
        for name, rows in fake.items():
            ax.hist(rows[:, j], bins=bins, density=True, histtype="step", linewidth=1.4, label=name)
        ax.set_xlabel("value", fontsize=8)
        ax.set_ylabel("density", fontsize=8)
    return save_figure(_finish_panels(fig, panels, f"{title}, {phrase}"), path)


def _finish_panels(fig: plt.Figure, panels: list[tuple[int, Any]], title: str) -> plt.Figure:
    """One legend for all panels, right of them (when there is more than one line)."""
    handles, labels = panels[0][1].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if len(labels) > 1:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return fig


def save_feature_lines(
    positions: Sequence[float],
    curves: dict[str, torch.Tensor],
    path: str | Path,
    title: str,
    xlabel: str,
    names: Sequence[str] | None = None,
    n_features: int = 8,
    marks: dict[str, tuple[float, torch.Tensor]] | None = None,
) -> Path:
    """Decoded table rows along a path: one panel per feature, one line per curve (T, D)
    against `positions` (T,); `marks` adds labelled points (position, row (D,)), such as
    the two rows an interpolation starts and ends at."""
    first = next(iter(curves.values()))
    fig, panels, phrase = _feature_panels(first.shape[-1], names, n_features)
    for j, ax in panels:
        for label, values in curves.items():
            ax.plot(positions, values[:, j].float().cpu().numpy(), marker=".", label=label)
        for label, (where, row) in (marks or {}).items():
            ax.scatter([where], [float(row[j])], color="black", zorder=3)
            point = (where, float(row[j]))
            ax.annotate(label, point, fontsize=8, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("decoded value", fontsize=8)
    return save_figure(_finish_panels(fig, panels, f"{title}, {phrase}"), path)


def save_feature_maps(
    values: torch.Tensor,
    x_values: Sequence[float],
    y_values: Sequence[float],
    path: str | Path,
    title: str,
    axis_names: tuple[str, str],
    names: Sequence[str] | None = None,
    n_features: int = 8,
) -> Path:
    """A decoded latent grid of table rows: one heat map per feature, `values` (G_y, G_x, D)
    with rows from low to high y (drawn with high y at the top)."""
    grid = values.detach().float().cpu().numpy()
    fig, panels, phrase = _feature_panels(grid.shape[-1], names, n_features)
    extent = (x_values[0], x_values[-1], y_values[0], y_values[-1])
    for j, ax in panels:
        image = ax.imshow(grid[..., j], origin="lower", extent=extent, aspect="auto")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_xlabel(axis_names[0], fontsize=8)
        ax.set_ylabel(axis_names[1], fontsize=8)
        ax.grid(False)
    fig.suptitle(f"{title}, {phrase}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_loss_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """-ELBO, reconstruction and KL per epoch, train and test, in nats per example."""
    epochs = [row["epoch"] for row in history]
    panels = [  # models without an ELBO (autoencoder) have a reconstruction term only
        (key, title)
        for key, title in (("neg_elbo", "-ELBO"), ("recon", "reconstruction"), ("kl", "KL"))
        if f"train_{key}" in history[0]
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(13 * len(panels) / 3, 3.8), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="train")
        if f"test_{key}" in history[0]:
            ax.plot(epochs, [r[f"test_{key}"] for r in history], marker="o", label="test")
        ax.set_title(f"{title} (nats per example)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def save_kl_bars(
    kl_per_dim: Sequence[float],
    path: str | Path,
    title: str,
    threshold: float = 0.01,
    ylabel: str = "KL (nats per example)",
) -> Path:
    """Bar chart of the KL of each latent dimension (nats); dims at or under `threshold` grey."""
    values = np.asarray(kl_per_dim, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.28 * len(values) + 1.5), 3.4))
    colours = ["tab:blue" if v > threshold else "tab:gray" for v in values]
    ax.bar(np.arange(len(values)), values, color=colours)
    if len(values) <= 32:
        ax.set_xticks(np.arange(len(values)))
        ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel("latent dimension")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def save_analogies(
    originals: torch.Tensor,
    analogies: torch.Tensor,
    path: str | Path,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Style kept, content varied: each row is an input image, then its style (z) decoded
    with every class label (`analogies`: (B * K, ...) rows of K)."""
    n, k = len(originals), len(analogies) // len(originals)
    rows = torch.cat([originals.unsqueeze(1), analogies.view(n, k, *analogies.shape[1:])], 1)
    names = list(class_names) if class_names else [str(c) for c in range(k)]
    return save_image_figure(
        rows.flatten(0, 1).cpu(),
        k + 1,
        path,
        "style from the input (left), content from the label",
        col_labels=["input", *names],
        xlabel="label y given to the decoder",
    )
