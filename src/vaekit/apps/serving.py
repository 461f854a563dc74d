"""The inference service behind `vaekit serve`, free of any web framework.

`Service(run)` opens a run folder with its test set and answers what the explorer page and
the JSON API ask: encode, decode, sample, reconstruct, anomaly scores, nearest neighbours
in latent space, interpolation, the 2-D map of the test set, and the run's description.
Inputs arrive as JSON values (nested lists of numbers, or base64 PNG strings); each is
checked here (shape, finite numbers, range, batch size) and a mistake is a one-line
`vaekit.core.errors` error that starts with the field it is about. Results are JSON-ready
(lists, numbers, base64 PNG strings).

Every model call goes through one worker thread (`Batcher`): the model is never run by two
threads at once, and concurrent requests for the same row-wise operation (encode, decode,
reconstruct, score) are joined into one forward pass.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from vaekit import plots
from vaekit.apps.anomaly import DESCRIPTIONS, UNIT, anomaly_scores
from vaekit.apps.explore import (
    decoded_dims,
    dimension_scores,
    encode_means,
    kl_order,
    latent_path,
    open_run,
    subsample,
)
from vaekit.apps.export import preprocessing
from vaekit.config.runs import RunFolder
from vaekit.core.errors import ConfigError, DataError, VaekitError
from vaekit.core.version import VERSION
from vaekit.data.arrays import check_finite, check_fits_likelihood
from vaekit.data.datasets import DataSplits, kind_of_shape
from vaekit.evaluation.run import EVALUATION_FILE, read_evaluation
from vaekit.training.fit import final_row

# --- limits: what one request may ask ---------------------------------------------------
MAX_BODY_BYTES = 8 * 2**20  # bytes of one request body (413 beyond)
MAX_BATCH = 256  # examples or codes in one request
MAX_SAMPLES = 1024  # draws of one /v1/sample
MAX_NEIGHBORS = 100  # neighbours asked per example
MAX_STEPS = 64  # frames of one interpolation
MAX_SCORE_SAMPLES = 100  # posterior samples per example of an anomaly score
MAX_ABS_VALUE = 1e6  # largest magnitude of an input number (beyond: a typo or an overflow)
MAX_SEED = 2**63 - 1
# --- what the service prepares when it starts -------------------------------------------
MAP_POINTS = 2000  # test examples drawn on the explorer's map
NEIGHBOR_POOL = 10_000  # test examples searched for nearest neighbours
MAX_SLIDERS = 64  # latent dimensions the explorer gives a slider (highest KL first)
SCORE_SAMPLES = 10  # posterior samples of the anomaly scores the map's examples get
FORMATS = ("list", "png")
PATHS = ("lerp", "slerp")
PNG_PREFIX = "data:image/png;base64,"


class LimitError(ConfigError):
    """A request asks for more than a limit allows (the HTTP layer answers 413/422)."""


@dataclass(frozen=True)
class Limits:
    """The maxima of one request; the defaults are the module's MAX_* constants."""

    body_bytes: int = MAX_BODY_BYTES
    batch: int = MAX_BATCH
    samples: int = MAX_SAMPLES
    neighbors: int = MAX_NEIGHBORS
    steps: int = MAX_STEPS
    score_samples: int = MAX_SCORE_SAMPLES

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def check_count(value: int, field: str, low: int, high: int, what: str) -> int:
    """`value` if low <= value <= high, else a one-line error naming `field` (a LimitError
    above the maximum)."""
    if value < low:
        raise ConfigError(f"{field}: must be at least {low}, got {value}")
    if value > high:
        raise LimitError(f"{field}: {value:,} {what} asked, more than the limit of {high:,}")
    return value


# --- inputs: nested lists and base64 PNG ------------------------------------------------
def parse_numbers(value: Any, field: str, shape: tuple[int, ...], max_rows: int) -> torch.Tensor:
    """A JSON list of examples, each shaped `shape` (or a flat row of its size), as a float32
    tensor (N, *shape); one-line DataErrors name `field` (ragged, non-numeric, NaN, ...)."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{field}: expected a non-empty list of examples")
    if len(value) > max_rows:
        raise LimitError(
            f"{field}: {len(value):,} examples, more than the limit of {max_rows:,} per request"
        )
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise DataError(f"{field}: not a rectangular array of numbers (ragged rows?)") from None
    if array.dtype.kind not in "iuf":
        got = "true/false" if array.dtype.kind == "b" else "non-numbers (text, null, objects)"
        raise DataError(f"{field}: expected numbers, got {got}")
    array = array.astype(np.float64)
    check_finite(array, field)
    if np.abs(array).max() > MAX_ABS_VALUE:
        raise DataError(f"{field}: values must lie within +-{MAX_ABS_VALUE:g}")
    flat = math.prod(shape)
    if tuple(array.shape[1:]) == tuple(shape) or tuple(array.shape[1:]) == (flat,):
        return torch.from_numpy(array.astype(np.float32)).reshape(len(array), *shape)
    raise DataError(
        f"{field}: examples shaped {tuple(array.shape[1:])}, the model takes {tuple(shape)} "
        f"(or flat rows of {flat})"
    )


def decode_png(text: Any, field: str, shape: tuple[int, ...]) -> torch.Tensor:
    """One base64 PNG (optionally a data: URL) as a (C, H, W) float32 tensor in [0, 1]; its
    size must be the model's (checked from the header, before the pixels are decoded)."""
    if not isinstance(text, str):
        raise DataError(f"{field}: expected a base64 PNG string")
    text = text.removeprefix(PNG_PREFIX)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{field}: not valid base64") from None
    channels, height, width = shape
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
            if image.size != (width, height):
                raise DataError(
                    f"{field}: image is {image.width}x{image.height} pixels, the model takes "
                    f"{width}x{height}"
                )
            converted = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise DataError(f"{field}: not a readable PNG image") from None
    array = np.asarray(converted, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def png_base64(images: torch.Tensor) -> list[str]:
    """(N, C, H, W) images in [0, 1] (C 1 or 3) as base64 PNG strings, one per image."""
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(plots.image_grid(image[None], 1, pad=0)).save(buffer, format="PNG")
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


def finite(t: torch.Tensor, what: str) -> torch.Tensor:
    """`t`, if every value is finite (JSON has no NaN): else a DataError."""
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{what} is not finite for these inputs (values too large?)")
    return t


# --- one worker thread for every model call ---------------------------------------------
@dataclass
class Job:
    key: Any  # jobs with the same key are joined into one batch; None: run alone
    fn: Callable[[Any], Any]
    rows: Any  # a tensor (N, ...) for batched jobs; anything for jobs run alone
    future: Future


class Batcher:
    """Runs every model call on one worker thread. Waiting jobs with the same key (a
    row-wise operation: row i of the output depends on row i of the input only) are
    concatenated into one call of up to `max_rows` rows and their outputs split again."""

    def __init__(self, max_rows: int = MAX_BATCH) -> None:
        self.max_rows = max_rows
        self.queue: deque[Job] = deque()
        self.ready = threading.Condition()
        self.closed = False
        self.batches = 0  # calls made (tests read how many requests were joined)
        self.thread = threading.Thread(target=self._work, name="vaekit-model", daemon=True)
        self.thread.start()

    def call(self, key: Any, fn: Callable[[Any], Any], rows: Any) -> Any:
        """fn(rows) on the worker thread, joined with waiting calls of the same key."""
        future: Future = Future()
        with self.ready:
            if self.closed:
                raise RuntimeError("the model service is closed")
            self.queue.append(Job(key, fn, rows, future))
            self.ready.notify()
        return future.result()

    def close(self) -> None:
        with self.ready:
            self.closed = True
            self.ready.notify()
        self.thread.join(timeout=10)

    def _next_group(self) -> list[Job] | None:
        with self.ready:
            while not self.queue and not self.closed:
                self.ready.wait()
            if not self.queue:
                return None
            first = self.queue.popleft()
            group, rows, kept = [first], 0, deque()
            if first.key is not None:
                rows = len(first.rows)
                while self.queue:
                    job = self.queue.popleft()
                    if job.key == first.key and rows + len(job.rows) <= self.max_rows:
                        group.append(job)
                        rows += len(job.rows)
                    else:
                        kept.append(job)
                self.queue = kept
            return group

    def _work(self) -> None:
        while (group := self._next_group()) is not None:
            self.batches += 1
            if len(group) == 1:
                self._run_alone(group[0])
                continue
            try:
                with torch.inference_mode():
                    out = group[0].fn(torch.cat([job.rows for job in group]))
            except Exception:  # one bad input must not fail the others: each alone
                for job in group:
                    self._run_alone(job)
                continue
            sizes = [len(job.rows) for job in group]
            for job, part in zip(group, split_rows(out, sizes)):
                job.future.set_result(part)

    @staticmethod
    def _run_alone(job: Job) -> None:
        try:
            with torch.inference_mode():
                job.future.set_result(job.fn(job.rows))
        except Exception as err:  # delivered to the caller, who turns it into an answer
            job.future.set_exception(err)


def split_rows(out: Any, sizes: list[int]) -> list[Any]:
    """A batched output (a tensor, None, or a tuple of them) split into parts of `sizes` rows."""
    if isinstance(out, tuple):
        columns = [split_rows(column, sizes) for column in out]
        return [tuple(parts) for parts in zip(*columns)]
    if out is None:
        return [None] * len(sizes)
    return list(torch.split(out, sizes))


# --- the 2-D map ------------------------------------------------------------------------
@dataclass
class Projection:
    """Codes (N, D) <-> map points (N, 2): p = (z - center) @ axes.T, z = center + p @ axes.
    The code itself for D <= 2 (method z), else its first two principal components (pca),
    whose inverse is exact in the plane, so clicking anywhere on the map decodes a code."""

    center: torch.Tensor  # (D,)
    axes: torch.Tensor  # (2, D), orthonormal rows
    method: str

    @classmethod
    def fit(cls, codes: torch.Tensor) -> Projection:
        dims = codes.shape[1]
        if dims <= 2:
            axes = torch.eye(2, dims)
            return cls(torch.zeros(dims), axes, "z")
        center = codes.double().mean(0)
        _, _, v = torch.linalg.svd(codes.double() - center, full_matrices=False)
        return cls(center.float(), v[:2].float(), "pca")

    def to_map(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes.float() - self.center) @ self.axes.T

    def to_codes(self, points: torch.Tensor) -> torch.Tensor:
        return self.center + points.float() @ self.axes

    def axis_names(self) -> list[str]:
        return ["z[0]", "z[1]"] if self.method == "z" else ["PC 1", "PC 2"]


# --- the service ------------------------------------------------------------------------
class Service:
    """A run's model and test set, ready to answer requests (thread-safe)."""

    def __init__(
        self,
        run_dir: str | Path,
        *,
        device: str = "cpu",
        limits: Limits | None = None,
        map_points: int = MAP_POINTS,
        data: DataSplits | None = None,
        seed: int = 0,
    ) -> None:
        self.limits = limits or Limits()
        self.run = open_run(run_dir, device, data)
        self.model: nn.Module = self.run.model
        self.shape = tuple(self.model.shape)
        self.kind = kind_of_shape(self.shape)
        self.likelihood = getattr(getattr(self.model, "likelihood", None), "name", None)
        test = self.run.test
        self.pool = subsample(len(test), NEIGHBOR_POOL, seed)  # test rows searched
        self.pool_codes = encode_means(self.model, test.x[self.pool])
        self.on_map = subsample(len(self.pool), map_points, seed)  # rows of the pool drawn
        self.projection = Projection.fit(self.pool_codes[self.on_map])
        self.scores = dimension_scores(self.model, test.x[self.pool])
        self.ranked = kl_order(self.scores.values[: decoded_dims(self.model)])
        self.score_kind = "elbo" if self.model.has_elbo else "recon"
        self.row_wise_scores = self.model.one_gaussian_latent or not self.model.has_elbo
        map_x = test.x[self.pool[self.on_map]]
        self.map_scores = self._anomaly(map_x, SCORE_SAMPLES).sort().values
        self.batcher = Batcher(self.limits.batch)

    def close(self) -> None:
        """Stop the worker thread (pending requests are answered first)."""
        self.batcher.close()

    # --- inputs ---------------------------------------------------------------------
    def examples(self, x: Any = None, png: Any = None) -> torch.Tensor:
        """The examples of a request: `x` (nested lists) or `png` (base64 strings), not both."""
        if (x is None) == (png is None):
            raise DataError("give the examples as exactly one of x (nested lists) or png")
        if x is not None:
            rows = parse_numbers(x, "x", self.shape, self.limits.batch)
            if self.kind == "image":
                check_fits_likelihood(rows, self.likelihood or "", "x")
            return rows
        if self.kind != "image" or self.shape[0] not in (1, 3):
            raise DataError(f"png: this run takes {self._what()}, not images; send x")
        if not isinstance(png, list) or not png:
            raise DataError("png: expected a non-empty list of base64 PNG strings")
        check_count(len(png), "png", 1, self.limits.batch, "images")
        return torch.stack([decode_png(p, f"png[{i}]", self.shape) for i, p in enumerate(png)])

    def codes(self, z: Any, field: str = "z") -> torch.Tensor:
        """Latent codes (N, latent_dim) from nested lists."""
        return parse_numbers(z, field, (self.model.latent_dim,), self.limits.batch)

    def _what(self) -> str:
        if self.kind == "table":
            return f"table rows of {self.shape[0]} features"
        return f"{self.shape[0]}-channel images"

    def outputs(self, images: torch.Tensor, fmt: str, field: str = "x_mean") -> dict[str, Any]:
        """Model outputs as nested lists (`list`) or base64 PNG strings (`png`)."""
        if fmt not in FORMATS:
            raise ConfigError(f"format: unknown {fmt!r} (known: {', '.join(FORMATS)})")
        finite(images, field)
        if fmt == "png":
            if self.kind != "image" or self.shape[0] not in (1, 3):
                raise DataError("format: png needs a 1- or 3-channel image model; use list")
            return {"png": png_base64(images)}
        return {field: images.tolist()}

    # --- the operations -------------------------------------------------------------
    def _model_call(self, key: str | None, fn: Callable, rows: Any) -> Any:
        return self.batcher.call(key, fn, rows)

    def _encode_rows(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mean, log_var = self.model.encode(x.to(self.device))
        return mean.float().cpu(), None if log_var is None else log_var.float().cpu()

    def _decode_rows(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode_mean(z.to(self.device)).float().cpu()

    def _reconstruct_rows(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(x.to(self.device)).float().cpu()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, x: Any = None, png: Any = None) -> dict[str, Any]:
        """Posterior means and log-variances (null for models that encode to a point)."""
        mean, log_var = self._model_call("encode", self._encode_rows, self.examples(x, png))
        finite(mean, "z_mean")
        return {
            "z_mean": mean.tolist(),
            "z_log_var": None if log_var is None else finite(log_var, "z_log_var").tolist(),
            "map": self.projection.to_map(mean).tolist(),
        }

    def decode(self, z: Any, fmt: str = "list") -> dict[str, Any]:
        """E[x | z] of each code."""
        images = self._model_call("decode", self._decode_rows, self.codes(z))
        return self.outputs(images, fmt)

    def reconstruct(self, x: Any = None, png: Any = None, fmt: str = "list") -> dict[str, Any]:
        """Each example decoded from its posterior mean."""
        rows = self.examples(x, png)
        return self.outputs(self._model_call("reconstruct", self._reconstruct_rows, rows), fmt)

    def sample(self, n: int = 16, seed: int | None = None, fmt: str = "list") -> dict[str, Any]:
        """n draws from the model's prior, decoded (seeded when `seed` is given)."""
        check_count(n, "n", 1, self.limits.samples, "samples")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in 0..{MAX_SEED}, got {seed}")
        if not hasattr(self.model, "sample"):
            raise ConfigError(f"{self.run.path}: this model cannot sample")

        def draw(count: int) -> torch.Tensor:
            generator = torch.Generator(device=self.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            return self.model.sample(count, generator).float().cpu()

        return self.outputs(self._model_call(None, draw, n), fmt)

    def _anomaly(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        return anomaly_scores(self.model, x.to(self.device), (self.score_kind,), samples)[
            self.score_kind
        ]

    def score(self, x: Any = None, png: Any = None, samples: int = SCORE_SAMPLES) -> dict[str, Any]:
        """Anomaly score per example (higher = more unusual) and the share of the map's
        test examples that score lower."""
        check_count(samples, "samples", 1, self.limits.score_samples, "posterior samples")
        rows = self.examples(x, png)
        key = f"score-{samples}" if self.row_wise_scores else None
        values = self._model_call(key, lambda xb: self._anomaly(xb, samples), rows)
        finite(values, "score")
        below = torch.searchsorted(self.map_scores, values.contiguous()).double()
        return {
            "score": values.tolist(),
            "kind": self.score_kind,
            "description": DESCRIPTIONS[self.score_kind].format(s=samples),
            "unit": UNIT,
            "test_percentile": (100 * below / len(self.map_scores)).tolist(),
        }

    def neighbors(
        self, x: Any = None, png: Any = None, z: Any = None, k: int = 5
    ) -> dict[str, Any]:
        """The k test examples whose posterior means are nearest (Euclidean) to each input's
        mean (or to each code z)."""
        check_count(k, "k", 1, min(self.limits.neighbors, len(self.pool)), "neighbours")
        if z is not None:
            if x is not None or png is not None:
                raise DataError("give the inputs as exactly one of x, png or z")
            codes = self.codes(z)
        else:
            codes = self._model_call("encode", self._encode_rows, self.examples(x, png))[0]
        distances, where = torch.cdist(
            codes, self.pool_codes, compute_mode="donot_use_mm_for_euclid_dist"
        ).topk(k, largest=False)
        labels = self.run.test.y
        return {
            "neighbors": [
                [
                    {
                        "index": int(self.pool[j]),
                        "distance": float(d),
                        "label": self._label(int(self.pool[j])) if labels is not None else None,
                    }
                    for d, j in zip(row_d.tolist(), row_j.tolist())
                ]
                for row_d, row_j in zip(distances, where)
            ]
        }

    def interpolate(
        self, z_a: Any, z_b: Any, steps: int = 10, method: str = "lerp", fmt: str = "list"
    ) -> dict[str, Any]:
        """`steps` codes on the path from z_a to z_b (both included), decoded."""
        check_count(steps, "steps", 2, self.limits.steps, "steps")
        if method not in PATHS:
            raise ConfigError(f"method: unknown {method!r} (known: {', '.join(PATHS)})")
        a = parse_numbers([z_a], "z_a", (self.model.latent_dim,), 1)[0]
        b = parse_numbers([z_b], "z_b", (self.model.latent_dim,), 1)[0]
        path = latent_path(a, b, steps, method)
        result = self.outputs(self._model_call("decode", self._decode_rows, path), fmt)
        return {"z": path.tolist(), **result}

    # --- the test set and the run ---------------------------------------------------
    def _label(self, index: int) -> str:
        y = int(self.run.test.y[index])
        classes = self.run.classes
        return classes[y] if classes and y < len(classes) else str(y)

    def example(self, index: int, fmt: str = "png") -> dict[str, Any]:
        """Test example `index`: its pixels or values, label and posterior mean."""
        test = self.run.test
        if not 0 <= index < len(test):
            raise ConfigError(
                f"index: no test example {index} (the test set has 0..{len(test) - 1})"
            )
        x = test.x[index : index + 1]
        mean = self._model_call("encode", self._encode_rows, x)[0]
        label = self._label(index) if test.y is not None else None
        return {
            "index": index,
            "label": label,
            "z_mean": mean[0].tolist(),
            **self.outputs(x, fmt, "x"),
        }

    def latent_map(self) -> dict[str, Any]:
        """The map: 2-D points of the test examples drawn, their test indices and labels,
        and the projection (center, axes) between codes and points."""
        codes = self.pool_codes[self.on_map]
        indices = self.pool[self.on_map]
        labels = self.run.test.y
        return {
            "points": self.projection.to_map(codes).tolist(),
            "indices": indices.tolist(),
            "labels": None if labels is None else labels[indices].tolist(),
            "classes": self.run.classes,
            "method": self.projection.method,
            "axes": self.projection.axis_names(),
            "projection": {
                "center": self.projection.center.tolist(),
                "axes": self.projection.axes.tolist(),
            },
        }

    def info(self) -> dict[str, Any]:
        """What the run is: model, data, latent dimensions ranked by KL, metrics, limits."""
        config, folder = self.run.config, self.run.path
        unit = "nats per example" if self.scores.kind == "KL" else "variance over test examples"
        dims = [
            {"dim": d, self.scores.kind: float(self.scores.values[d]), "unit": unit}
            for d in self.ranked
        ]
        metrics = final_row(read_metrics(folder))
        return {
            "run": str(folder),
            "name": self.run.name,
            "vaekit_version": VERSION,
            "model": config.model.name,
            "arch": config.model.arch,
            "likelihood": self.likelihood,
            "latent_dim": self.model.latent_dim,
            "label": self.run.label,
            "data": {
                "name": config.data.name,
                "kind": self.kind,
                "shape": list(self.shape),
                "test_examples": len(self.run.test),
                "classes": self.run.classes,
                "preprocessing": preprocessing(config),
            },
            "dimensions": dims,
            "sliders": self.ranked[:MAX_SLIDERS],
            "score": {"kind": self.score_kind, "unit": UNIT},
            "metrics": metrics or None,
            "evaluation": read_evaluation(folder / EVALUATION_FILE),
            "limits": self.limits.as_dict(),
            "map": {"points": len(self.on_map), "method": self.projection.method},
        }


def read_metrics(folder: Path) -> list[dict[str, Any]]:
    """The run's metrics rows (none when the file is missing or damaged: the page still works)."""
    try:
        return RunFolder(folder).read_metrics()
    except (OSError, VaekitError):
        return []
