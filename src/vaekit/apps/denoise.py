"""Denoising: corrupt inputs, reconstruct them, measure PSNR; and denoising training.

Noise (`--noise KIND:LEVEL`):
  gaussian:S     x + S * N(0, 1) per value, clipped to [0, 1] for data in [0, 1]
  saltpepper:P   a share P of the values set to 0 or 1 (half each); data in [0, 1] only

Denoising = the decoded posterior mean of the noisy input. PSNR (dB) = 10 log10(1 / MSE)
for intensities in [0, 1], computed per image and averaged over the images.

Denoising training (`train.denoise`, `vaekit train --denoise gaussian:0.3`): the encoder
sees corrupted inputs while the likelihood scores the clean ones, the denoising criterion
of Im et al. (2017); evaluation and every later use of the model see clean inputs.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaekit import plots
from vaekit.apps.encode import open_inputs
from vaekit.core.errors import ConfigError
from vaekit.core.files import atomic_write_bytes, atomic_write_text
from vaekit.core.noise import Noise, corrupt, in_unit_range, parse_noise
from vaekit.models.batched import reconstruct_all
from vaekit.plots import image_grid, save_image

PREVIEW = 16  # examples in the noisy / denoised / clean grid


def psnr(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each example (dB, peak 1), shape (N,); inf if equal."""
    mse = (clean.double() - other.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def denoise(
    model: nn.Module, clean: torch.Tensor, noise: Noise | str, seed: int = 0, batch_size: int = 1000
) -> dict[str, Any]:
    """Corrupt `clean`, reconstruct it; noisy, denoised, and PSNRs or MSEs before and after.

    PSNR (mean over examples, dB) for data in [0, 1]; otherwise the mean squared error per
    value. `reconstructed_clean` is the same measure for the clean input: the ceiling."""
    noise = parse_noise(noise) if isinstance(noise, str) else noise
    clip = in_unit_range(clean)
    noisy = corrupt(clean, noise, torch.Generator().manual_seed(seed), clip=clip)
    denoised = reconstruct_all(model, noisy, batch_size=batch_size)
    result: dict[str, Any] = {"noisy": noisy, "denoised": denoised, "noise": str(noise)}
    outputs = {
        "noisy": noisy,
        "denoised": denoised,
        "reconstructed_clean": reconstruct_all(model, clean, batch_size=batch_size),
    }
    if clip:
        result["unit"] = "PSNR, dB (peak 1), mean over examples"
        result["psnr"] = {k: psnr(clean, v).mean().item() for k, v in outputs.items()}
        result["gain_db"] = result["psnr"]["denoised"] - result["psnr"]["noisy"]
    else:
        result["unit"] = "mean squared error per value (standardised units)"
        result["mse"] = {k: (clean - v).square().mean().item() for k, v in outputs.items()}
    return result


def save_preview(
    clean: torch.Tensor, noisy: torch.Tensor, denoised: torch.Tensor, path: Path, title: str
) -> Path:
    """Rows of noisy, denoised and clean images for the first PREVIEW examples."""

    n = min(PREVIEW, len(clean))
    images = torch.cat([noisy[:n], denoised[:n], clean[:n]])
    return plots.save_image_figure(
        images, n, path, title, row_labels=["noisy", "denoised", "clean"]
    )


def save_pngs(images: torch.Tensor, ids: list[str], folder: Path) -> None:
    """One PNG per image, named after its id (sub-folders kept, suffix replaced by .png)."""

    for image, ident in zip(images, ids):
        target = folder / Path(ident).with_suffix(".png")
        if folder.resolve() not in target.resolve().parents:
            raise ConfigError(f"id {ident!r} would write outside {folder}")
        save_image(image_grid(image[None], 1, pad=0), target, scale=1)


def denoise_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    noise: str = "gaussian:0.3",
    *,
    split: str = "test",
    output: str | Path | None = None,
    seed: int = 0,
    pngs: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """Denoise a run's test split (or every example of `data`); write the results to `output`
    (default RUN/denoise): denoised.npz, denoise.png, denoise.json and, with `pngs`, one PNG
    per example in denoised/."""

    noise = parse_noise(noise)
    inputs = open_inputs(run_dir, data, split, device)
    out = Path(output) if output else inputs.run.file("denoise")
    result = denoise(inputs.model, inputs.items.x, noise, seed)
    report = {k: v for k, v in result.items() if k not in ("noisy", "denoised")}
    report |= {
        "run": str(inputs.run.path),
        "data": inputs.source,
        "n_examples": len(inputs.items.x),
        "seed": seed,
    }
    buffer = _npz_bytes(denoised=result["denoised"].numpy(), ids=np.array(inputs.items.ids))
    atomic_write_bytes(out / "denoised.npz", buffer)
    files = [out / "denoised.npz"]
    if inputs.is_images:
        title = f"{noise} noise: noisy / denoised / clean ({inputs.source})"
        files.append(
            save_preview(
                inputs.items.x, result["noisy"], result["denoised"], out / "denoise.png", title
            )
        )
        if pngs:
            save_pngs(result["denoised"], inputs.items.ids, out / "denoised")
            files.append(out / "denoised")
    report["files"] = [str(f) for f in files + [out / "denoise.json"]]
    atomic_write_text(out / "denoise.json", json.dumps(report, indent=2) + "\n")
    return report


def _npz_bytes(**arrays: np.ndarray) -> bytes:

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
