"""Pictures of a run: image grids, latent scatter plots and loss curves (PNG files).

Every picture goes through these helpers so that all commands draw the same way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .runs import atomic_write_bytes  # noqa: E402


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


def save_image(array: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Save a uint8 picture as PNG, enlarged `scale` times with crisp pixels."""
    image = Image.fromarray(array)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def save_grid(images: torch.Tensor, path: str | Path, ncols: int | None = None) -> Path:
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    return save_image(image_grid(images, ncols), path)


def save_reconstructions(
    originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path, ncols: int = 16
) -> Path:
    """Rows of originals, each followed by a row of their reconstructions."""
    rows = []
    for start in range(0, len(originals), ncols):
        rows += [originals[start : start + ncols], reconstructions[start : start + ncols]]
    return save_grid(torch.cat(rows), path, ncols)


def _save_figure(fig: plt.Figure, path: str | Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def project_2d(points: torch.Tensor) -> tuple[np.ndarray, str]:
    """Latent points (N, D) -> (N, 2): themselves when D <= 2, else their first two
    principal components. Returns the points and axis-label prefix."""
    points = points.detach().double().cpu()
    if points.shape[1] == 1:
        return torch.cat([points, torch.zeros_like(points)], 1).numpy(), "z"
    if points.shape[1] == 2:
        return points.numpy(), "z"
    centred = points - points.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return (centred @ v[:2].T).numpy(), "PC"


def save_latent_scatter(
    z_mean: torch.Tensor,
    labels: torch.Tensor | None,
    path: str | Path,
    class_names: list[str] | None = None,
    title: str = "test latents (posterior means)",
) -> Path:
    points, axis = project_2d(z_mean)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6)
    else:
        labels_np = labels.cpu().numpy()
        cmap = plt.get_cmap("tab10" if labels_np.max() < 10 else "tab20")
        for k in np.unique(labels_np):
            mask = labels_np == k
            name = class_names[k] if class_names and k < len(class_names) else str(k)
            ax.scatter(
                points[mask, 0], points[mask, 1], s=3, alpha=0.6, color=cmap(k % cmap.N), label=name
            )
        ax.legend(markerscale=4, fontsize=8, loc="best", title="label")
    method = "" if axis == "z" else f" (PCA of {z_mean.shape[1]} dims)"
    ax.set_title(f"{title}{method}, n={len(points)}")
    ax.set_xlabel(f"{axis}[0]" if axis == "z" else "PC 1")
    ax.set_ylabel(f"{axis}[1]" if axis == "z" else "PC 2")
    return _save_figure(fig, path)


def save_loss_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """-ELBO, reconstruction and KL per epoch, train and test, in nats per example."""
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key, title in zip(axes, ("neg_elbo", "recon", "kl"), ("-ELBO", "reconstruction", "KL")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], marker="o", label="train")
        ax.plot(epochs, [r[f"test_{key}"] for r in history], marker="o", label="test")
        ax.set_title(f"{title} (nats per example)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save_figure(fig, path)
