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

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .noise import rand_batch, randn_batch

KINDS = ("gaussian", "saltpepper")
PREVIEW = 16  # examples in the noisy / denoised / clean grid


@dataclass(frozen=True)
class Noise:
    kind: str
    level: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str) -> Noise:
    """'gaussian:0.3' or 'saltpepper:0.1' -> Noise (ConfigError naming the problem)."""
    kind, _, level = spec.partition(":")
    try:
        value = float(level)
    except ValueError:
        value = math.nan
    if kind not in KINDS or not math.isfinite(value) or value < 0:
        raise ConfigError(f"noise {spec!r}: expected gaussian:SIGMA or saltpepper:FRACTION")
    if kind == "saltpepper" and value > 1:
        raise ConfigError(f"noise {spec!r}: the salt-and-pepper fraction must be <= 1")
    return Noise(kind, value)


def in_unit_range(x: torch.Tensor) -> bool:
    """Whether every value lies in [0, 1] (images): noise is then clipped to that range."""
    low, high = torch.aminmax(x)
    return bool(low >= 0 and high <= 1)


def corrupt(
    x: torch.Tensor, noise: Noise, generator: torch.Generator | None = None, clip: bool = True
) -> torch.Tensor:
    """A noisy copy of x; clipped to [0, 1] when `clip` (salt-and-pepper always is)."""
    if noise.kind == "gaussian":
        noisy = x + noise.level * randn_batch(x.shape, 0, generator, x.device, x.dtype)
        return noisy.clamp(0, 1) if clip else noisy
    if not clip:
        raise ConfigError("salt-and-pepper noise needs data in [0, 1] (images)")
    u = rand_batch(x.shape, 0, generator, x.device, x.dtype)
    noisy = torch.where(u < noise.level / 2, torch.zeros_like(x), x)
    return torch.where((u >= noise.level / 2) & (u < noise.level), torch.ones_like(x), noisy)


def psnr(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio of each example (dB, peak 1), shape (N,); inf if equal."""
    mse = (clean.double() - other.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


def add_denoising(model: nn.Module, spec: str, train_x: torch.Tensor) -> None:
    """Make `model` encode corrupted inputs while it is in training mode (denoising VAE)."""
    noise = parse_noise(spec)
    encoder = getattr(model, "encoder", None)
    if encoder is None or not getattr(model, "gradient_trained", True):
        raise ConfigError(
            "denoising training needs a model trained by gradient steps (vae, ae, cvae)"
        )
    clip = in_unit_range(train_x)
    if not clip and noise.kind == "saltpepper":
        raise ConfigError("salt-and-pepper noise needs data in [0, 1] (images)")

    def corrupt_input(module: nn.Module, args: tuple) -> tuple | None:
        if not module.training:
            return None
        return (corrupt(args[0], noise, clip=clip), *args[1:])

    encoder.register_forward_pre_hook(corrupt_input)


@torch.no_grad()
def reconstruct_all(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decoded posterior means of every example, on the CPU."""
    device = next(model.parameters()).device
    parts = [
        model.reconstruct(x[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(parts)


def denoise(
    model: nn.Module, clean: torch.Tensor, noise: Noise | str, seed: int = 0, batch_size: int = 1000
) -> dict[str, Any]:
    """Corrupt `clean`, reconstruct it; noisy, denoised, and PSNRs or MSEs before and after.

    PSNR (mean over examples, dB) for data in [0, 1]; otherwise the mean squared error per
    value. `reconstructed_clean` is the same measure for the clean input: the ceiling."""
    noise = parse_noise(noise) if isinstance(noise, str) else noise
    clip = in_unit_range(clean)
    noisy = corrupt(clean, noise, torch.Generator().manual_seed(seed), clip=clip)
    denoised = reconstruct_all(model, noisy, batch_size)
    result: dict[str, Any] = {"noisy": noisy, "denoised": denoised, "noise": str(noise)}
    outputs = {
        "noisy": noisy,
        "denoised": denoised,
        "reconstructed_clean": reconstruct_all(model, clean, batch_size),
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
    from . import plots

    n = min(PREVIEW, len(clean))
    images = torch.cat([noisy[:n], denoised[:n], clean[:n]])
    return plots.save_image_figure(
        images, n, path, title, row_labels=["noisy", "denoised", "clean"]
    )


def save_pngs(images: torch.Tensor, ids: list[str], folder: Path) -> None:
    """One PNG per image, named after its id (sub-folders kept, suffix replaced by .png)."""
    from .plots import image_grid, save_image

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
    from .applications import open_inputs
    from .runs import atomic_write_bytes, atomic_write_text

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
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
