"""Explore a trained model's latent space: scatter plots, manifold grids, interpolations,
traversals and the KL carried by each latent dimension. A sequence run interpolates between
two strings and writes the decoded strings (`save_sequence_interpolation`).

The pure functions (`encode_means`, `kl_per_dim`, `latent_codes`, `manifold`,
`interpolate`, `traverse`) take a model and tensors; the `save_*` functions take an
`ExploreRun` (a run folder's model and test set) and write one picture each, so that the
commands and the HTML report draw exactly the same pictures. A table run (rows of
features) gets per-feature plots where an image run gets image grids.

Exploration writes beside what training wrote, never over it: TRAINING_FILES (in
training/pictures.py) are the pictures and texts `vaekit train` leaves in a run folder.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

from vaekit import plots
from vaekit.config.schema import DataConfig, RunConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.core.files import atomic_write_text
from vaekit.data.batches import BatchIterator
from vaekit.data.binarize import evaluation_set
from vaekit.data.datasets import Dataset, DataSplits
from vaekit.data.folder import read_image
from vaekit.data.registry import load_data
from vaekit.data.sequences import is_molecules, vocabulary_of
from vaekit.evaluation.sequences import canonical_smiles, decode_codes, tokenize_strings
from vaekit.models import loading
from vaekit.models.base import GaussianVAE, gaussian_kl, label_args
from vaekit.models.batched import encode_all
from vaekit.models.loading import FixedLabel
from vaekit.training.pictures import TRAINING_FILES

METHODS = ("auto", "pca", "tsne")
PATHS = ("lerp", "slerp")
DEFAULT_N, TSNE_DEFAULT_N = 5000, 2000  # test images in a latent plot
MAX_TRAVERSE_ROWS = 16  # default rows of a traversal: the 16 dims carrying the most KL
PRIOR_DRAWS = 20_000  # draws of a prior other than N(0, I) for its quantiles and medians


def check_beside_training(output: str | Path, run_dir: str | Path) -> None:
    """A ConfigError if `output` would overwrite a file training wrote into `run_dir`."""
    output, run_dir = Path(output), Path(run_dir)
    if output.resolve().parent != run_dir.resolve():
        return
    if output.name in TRAINING_FILES:
        what = "a picture" if output.suffix == ".png" else "a file"
        raise ConfigError(
            f"{output}: {what} training wrote; exploration writes beside it (choose "
            "another -o or leave -o out)"
        )


# --- a run's model and data -------------------------------------------------------------
@dataclass
class ExploreRun:
    """A trained model with the test set it was evaluated on."""

    path: Path
    model: nn.Module
    test: Dataset
    classes: list[str] | None
    label: str | None = None  # conditional models: the class every picture is decoded with
    config: RunConfig | None = field(default=None, repr=False)  # None: not from a run folder
    scores: DimensionScores | None = field(default=None, init=False, repr=False)  # run_scores

    @property
    def name(self) -> str:
        return self.path.name if self.label is None else f"{self.path.name} (label {self.label})"

    @property
    def is_table(self) -> bool:
        """Rows of features, drawn per feature rather than as images."""
        return is_table_model(self.model)

    @property
    def columns(self) -> list[str] | None:
        """A table's feature names (None: unnamed)."""
        return self.config.data.columns if self.config is not None else None


def open_run(
    run_dir: str | Path,
    device: str = "cpu",
    data: DataSplits | None = None,
    label: int | None = None,
) -> ExploreRun:
    """Load a run folder's model and its test set (fixed binarisation if trained dynamically).

    `data` replaces the dataset named in the run's config (for data not in the registry).
    A conditional model is seen through `FixedLabel` with class `label` (default: the
    label of test image 0)."""

    run = loading.open_run(run_dir, device)
    model, config = run.model, run.config
    splits = data or load_data(config.data)
    test = evaluation_set(splits.test, config.data.binarize)
    name = None
    if model.needs_labels or model.can_classify:
        n_classes = model.n_classes
        if label is None:
            label = int(test.y[0]) if test.y is not None and int(test.y[0]) < n_classes else 0
        if not 0 <= label < n_classes:
            raise ConfigError(f"--label {label}: the model has classes 0..{n_classes - 1}")
        model = FixedLabel(model, label)
        name = (
            splits.classes[label] if splits.classes and label < len(splits.classes) else str(label)
        )
    return ExploreRun(run.path, model, test, splits.classes, name, config)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def encode_means(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Posterior means (N, D) of images x (N, C, H, W), encoded in batches, float32, on the CPU."""
    return encode_all(model, x, batch_size=batch_size)[0].float()


def own_prior(model: nn.Module) -> bool:
    """Whether the model's prior over codes is its own (a VampPrior, a hierarchical VAE's
    layers, an autoencoder's fitted Gaussian, PCA's variances) rather than N(0, I)."""
    sample_prior = getattr(type(model), "sample_prior", None)
    return sample_prior is not None and sample_prior is not GaussianVAE.sample_prior


def decoded_dims(model: nn.Module) -> int:
    """How many leading code dimensions the decoder reads: all of them, except for a
    hierarchical VAE (z_1 only), whose upper layers act on images only through z_1."""
    return model.decoded_dim


@torch.no_grad()
def kl_per_dim(
    model: nn.Module, x: torch.Tensor, batch_size: int = 1000, seed: int = 0
) -> torch.Tensor:
    """KL of each latent dimension d, averaged over x: (D,) in nats.

    KL(q(z_d|x) || N(0, 1)) in closed form for an N(0, I) prior. A VAE with a prior of its
    own gives the per-dimension KL of its own ELBO instead (`elbo_terms`, one seeded
    sample, as `vaekit evaluate` reports it): against the conditional prior of each layer
    for a hierarchical VAE, against each dimension's marginal for a VampPrior."""
    device = _device(model)
    own = own_prior(model) and model.has_elbo
    generator = torch.Generator(device=device).manual_seed(seed)
    total = torch.zeros(model.latent_dim, dtype=torch.float64)
    for xb, _ in BatchIterator(x, None, batch_size, shuffle=False):
        if own:
            per_dim = model.elbo_terms(xb.to(device), generator)["kl_per_dim"]
        else:
            z_mean, z_log_var = model.encode(xb.to(device))
            per_dim = gaussian_kl(z_mean.double(), z_log_var.double())
        total += per_dim.double().sum(0).cpu()
    return total / len(x)


def kl_order(kl: torch.Tensor) -> list[int]:
    """Latent dimensions sorted by KL, most informative first (ties: lower index first)."""
    return sorted(range(len(kl)), key=lambda d: (-float(kl[d]), d))


# --- latent scatter ---------------------------------------------------------------------
@dataclass
class LatentCodes:
    """2-D points of test latents: `points` (N, 2) from `means` (N, D) by `method`."""

    points: np.ndarray
    means: torch.Tensor
    labels: torch.Tensor | None
    indices: torch.Tensor  # rows of the test set the points come from
    method: str  # z (drawn directly), pca or tsne
    axis_names: tuple[str, str]


def subsample(count: int, n: int, seed: int = 0) -> torch.Tensor:
    """n distinct indices of range(count), drawn with `seed` and sorted (all if n >= count)."""
    if n >= count:
        return torch.arange(count)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(count, generator=generator)[:n].sort().values


def embed_2d(means: torch.Tensor, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """(N, D) -> (N, 2): the means themselves for D <= 2 (method z), else PCA or t-SNE.

    `auto` is z for D <= 2 and t-SNE otherwise (t-SNE keeps clusters apart that PCA
    overlaps; it costs seconds per thousand points)."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    if method == "auto":
        method = "z" if means.shape[1] <= 2 else "tsne"
    if method == "tsne" and means.shape[1] > 1 and len(means) > 5:
        # imported here, not at the top: scikit-learn adds 0.6 s to every command's start
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(means) - 1) / 3)
        tsne = TSNE(2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
        # one OpenMP thread: beside torch's thread pool, sklearn's spinning threads made
        # t-SNE 5-50x slower on 2 busy cores than a single thread
        with threadpool_limits(1, user_api="openmp"):
            return tsne.fit_transform(means.double().numpy()), "tsne"
    points, axis = plots.project_2d(means)
    return points, "z" if axis == "z" else "pca"


AXIS_NAMES = {"z": ("z[0]", "z[1]"), "pca": ("PC 1", "PC 2"), "tsne": ("t-SNE 1", "t-SNE 2")}


def latent_codes(
    model: nn.Module, data: Dataset, n: int = 5000, method: str = "auto", seed: int = 0
) -> LatentCodes:
    """Posterior means of a seeded subsample of n examples of `data`, embedded in 2-D."""
    indices = subsample(len(data), n, seed)
    means = encode_means(model, data.x[indices])
    points, used = embed_2d(means, method, seed)
    labels = None if data.y is None else data.y[indices]
    return LatentCodes(points, means, labels, indices, used, AXIS_NAMES[used])


# --- decoding grids and paths -----------------------------------------------------------
def prior_quantiles(count: int) -> torch.Tensor:
    """`count` points of N(0, 1) splitting it into equal-probability cells: Phi^-1((k + 1/2) / count)."""
    probabilities = (torch.arange(count, dtype=torch.float64) + 0.5) / count
    return torch.special.ndtri(probabilities).float()


@torch.no_grad()
def prior_axes(
    model: nn.Module, grid: int, dims: tuple[int, ...], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid values along each of `dims`, (len(dims), grid) ascending: the quantiles
    (k + 1/2) / grid of each dimension's prior marginal; and the code (latent_dim,) that the
    other dimensions keep: the marginals' medians. Exact for N(0, I) (0 elsewhere); for a
    model with its own prior, from PRIOR_DRAWS seeded draws of it."""
    if not own_prior(model):
        values = prior_quantiles(grid).expand(len(dims), grid).clone()
        return values, torch.zeros(model.latent_dim)
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    draws = model.sample_prior(PRIOR_DRAWS, generator).double().cpu()  # (N, D)
    probabilities = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    values = torch.quantile(draws[:, list(dims)], probabilities, dim=0).T  # (len(dims), grid)
    return values.float(), draws.median(0).values.float()


@dataclass
class Manifold:
    """Decoded grid: `images` row-major, rows from high to low values of dims[1]."""

    images: torch.Tensor  # (rows * cols, C, H, W)
    values: torch.Tensor  # (len(dims), grid): the latent values along each axis, ascending
    dims: tuple[int, ...]  # the latent dimensions varied: (x,) or (x, y)
    center: torch.Tensor  # (latent_dim,): the code every other dimension keeps


@torch.no_grad()
def manifold(model: nn.Module, grid: int = 20, dims: tuple[int, ...] | None = None) -> Manifold:
    """Decode a grid x grid lattice over two latent dims spaced by the quantiles of the
    model's prior (`prior_axes`), every other dim at its prior median (0 for N(0, I)).

    `dims` defaults to (0, 1); with one latent dimension the result is a single row."""
    dims = tuple(dims) if dims is not None else tuple(range(min(2, decoded_dims(model))))
    values, center = prior_axes(model, grid, dims)
    z = center.repeat(grid ** len(dims), 1)
    if len(dims) == 1:
        z[:, dims[0]] = values[0]
    else:
        ys, xs = torch.meshgrid(values[1].flip(0), values[0], indexing="ij")  # top row: highest y
        z[:, dims[0]], z[:, dims[1]] = xs.reshape(-1), ys.reshape(-1)
    images = model.decode_mean(z.to(_device(model))).float().cpu()
    return Manifold(images, values, dims, center)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of vectors a, b (D,) at fractions t (T,): (T, D).

    Follows the great circle between their directions while blending their lengths
    (White 2016); falls back to straight lines when a and b are (anti)parallel or zero."""
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    cos = torch.dot(a64, b64) / (a64.norm() * b64.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if torch.sin(omega).abs() < 1e-6:
        return ((1 - t64) * a64 + t64 * b64).to(a.dtype)
    mix = (torch.sin((1 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / torch.sin(omega)
    return mix.to(a.dtype)


def latent_path(a: torch.Tensor, b: torch.Tensor, steps: int, method: str = "lerp") -> torch.Tensor:
    """`steps` latent codes from a to b (both included), straight (lerp) or spherical (slerp)."""
    if method not in PATHS:
        raise ConfigError(f"unknown interpolation {method!r} (known: {', '.join(PATHS)})")
    if steps < 2:
        raise ConfigError(f"interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0, 1, steps)
    if method == "slerp":
        return slerp(a, b, t)
    return torch.lerp(a[None], b[None], t[:, None])


@torch.no_grad()
def interpolate(
    model: nn.Module, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10, method: str = "lerp"
) -> torch.Tensor:
    """Decode `steps` points on the path between the posterior means of images x_a and x_b."""
    means = encode_means(model, torch.stack([x_a, x_b]))
    z = latent_path(means[0], means[1], steps, method)
    return model.decode_mean(z.to(_device(model))).float().cpu()


@dataclass
class SequencePath:
    """Strings decoded greedily along a latent path from string A to string B."""

    source: str
    target: str
    method: str  # lerp or slerp
    t: list[float]  # each step's fraction of the way from A to B
    strings: list[str]
    valid: list[bool] | None = None  # molecule runs (with RDKit): each string a valid SMILES
    note: str = ""  # why validity is not marked, for a molecule run without RDKit


def interpolate_strings(
    model: nn.Module,
    config: DataConfig,
    source: str,
    target: str,
    steps: int = 10,
    method: str = "lerp",
) -> list[str]:
    """The greedy decodings of `steps` codes on the path between the posterior means of
    strings `source` and `target` (tokenised with the run's vocabulary)."""
    tokens = torch.cat(
        [tokenize_strings([source], config, "--from"), tokenize_strings([target], config, "--to")]
    )
    return interpolate_tokens(model, config, tokens, steps, method)


def interpolate_tokens(
    model: nn.Module,
    config: DataConfig,
    tokens: torch.Tensor,
    steps: int = 10,
    method: str = "lerp",
) -> list[str]:
    """The greedy decodings of `steps` codes on the path between the posterior means of two
    stored sequences `tokens` (2, L)."""
    means = encode_means(model, tokens)
    z = latent_path(means[0], means[1], steps, method)
    return decode_codes(model, vocabulary_of(config), z)


def validity_marks(strings: list[str]) -> tuple[list[bool] | None, str]:
    """Whether each string is a valid SMILES, or (None, why not) without RDKit."""
    try:
        return [c is not None for c in canonical_smiles(strings)], ""
    except ConfigError as missing:  # RDKit is optional: say what it would have told
        return None, str(missing)


def sequence_interpolation(
    model: nn.Module,
    config: DataConfig,
    source: str,
    target: str,
    steps: int = 10,
    method: str = "lerp",
) -> SequencePath:
    """`interpolate_strings` with each step's t and, for molecule runs, validity marks."""
    strings = interpolate_strings(model, config, source, target, steps, method)
    path = SequencePath(source, target, method, torch.linspace(0, 1, steps).tolist(), strings)
    if is_molecules(config):
        path.valid, path.note = validity_marks(strings)
    return path


def interpolation_file(run_dir: str | Path, config: DataConfig) -> Path:
    """Where a sequence run's interpolation goes by default: RUN/interpolation.smi for
    molecules (a file other tools read), else RUN/interpolation.txt."""
    return Path(run_dir) / f"interpolation{'.smi' if is_molecules(config) else '.txt'}"


def save_sequence_interpolation(
    model: nn.Module,
    config: DataConfig,
    output: str | Path,
    source: str,
    target: str,
    steps: int = 10,
    method: str = "lerp",
) -> SequencePath:
    """The decoded strings between A and B, written one per line to `output`."""
    path = sequence_interpolation(model, config, source, target, steps, method)
    atomic_write_text(Path(output), "".join(f"{s}\n" for s in path.strings))
    return path


@torch.no_grad()
def traverse(
    model: nn.Module, x: torch.Tensor, dims: list[int], value_range: float = 3.0, steps: int = 11
) -> torch.Tensor:
    """One row per dim d: x's posterior mean with z[d] set to each of linspace(-range, range).

    Returns (len(dims) * steps, C, H, W), row-major."""
    z = traversal_codes(encode_means(model, x[None])[0], dims, value_range, steps)
    return model.decode_mean(z.to(_device(model))).float().cpu()


def traversal_codes(
    code: torch.Tensor, dims: list[int], value_range: float, steps: int
) -> torch.Tensor:
    """(len(dims) * steps, D) copies of `code`, row r * steps + i with dimension dims[r] set
    to the i-th of linspace(-range, range, steps)."""
    values = torch.linspace(-value_range, value_range, steps)
    z = code.repeat(len(dims) * steps, 1)
    for row, d in enumerate(dims):
        z[row * steps : (row + 1) * steps, d] = values
    return z


# --- inputs: test-set indices or image files --------------------------------------------
def load_image_file(path: str | Path, shape: tuple[int, ...]) -> torch.Tensor:
    """An image file as a (C, H, W) tensor in [0, 1] for a model of input `shape`.

    Greyscale models get the image converted to greyscale, RGB models to RGB; the size must
    match exactly (no silent resizing). MNIST-like models expect white strokes on black."""

    path = Path(path)
    channels, height, width = shape
    if channels not in (1, 3):
        raise DataError(f"{path}: image files work only for 1- or 3-channel models")
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    converted = read_image(path, "L" if channels == 1 else "RGB")  # size checked first
    if converted.size != (width, height):
        raise DataError(
            f"{path}: image is {converted.width}x{converted.height} pixels, the model needs "
            f"{width}x{height} (resize it first)"
        )
    array = np.asarray(converted, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    return tensor[None] if channels == 1 else tensor.permute(2, 0, 1).contiguous()


def resolve_input(spec: str, test: Dataset, option: str = "--from") -> tuple[torch.Tensor, str]:
    """A test-set index ("17") or an image file path -> (image (C, H, W), short description).
    A table takes indices only."""
    if re.fullmatch(r"-?\d+", spec.strip()):
        return pick_test_image(test, int(spec), option)
    if test.kind != "image":
        raise ConfigError(
            f"{option} {spec}: a table run takes test-row indices (0..{len(test) - 1}), not files"
        )
    return load_image_file(spec, test.shape), Path(spec).name


def pick_test_image(test: Dataset, index: int, option: str = "--index") -> tuple[torch.Tensor, str]:
    """Test example `index` and its description ("test #17, label 3")."""
    if not 0 <= index < len(test):
        what = "image" if test.kind == "image" else "row"
        raise ConfigError(
            f"{option} {index}: no such test {what} (the test set has {len(test)}: "
            f"0..{len(test) - 1})"
        )
    label = "" if test.y is None else f", label {int(test.y[index])}"
    return test.x[index], f"test #{index}{label}"


# --- pictures of a run ------------------------------------------------------------------
def latent_method(model: nn.Module, method: str = "auto") -> str:
    """What `method` means for the model's latent plot: z (drawn directly), pca or tsne."""
    if method == "auto":
        return "z" if model.latent_dim <= 2 else "tsne"
    return method


def save_latent(
    run: ExploreRun,
    output: str | Path,
    method: str = "auto",
    n: int | None = None,
    seed: int = 0,
) -> LatentCodes:
    """Scatter of test latents coloured by label (2-D directly, larger via PCA or t-SNE).

    `n` defaults to 5000 test images, 2000 when t-SNE is used (its cost grows faster)."""
    tsne = latent_method(run.model, method) == "tsne"
    n = n or (TSNE_DEFAULT_N if tsne else DEFAULT_N)
    if tsne:
        count = min(n, len(run.test))
        print(f"t-SNE of {count} latent codes (takes a while)...", file=sys.stderr)
    codes = latent_codes(run.model, run.test, n, method, seed)
    how = {"z": "", "pca": f", PCA of {run.model.latent_dim} dims"}
    how["tsne"] = f", t-SNE of {run.model.latent_dim} dims"
    title = f"{run.name}: test latents (posterior means){how[codes.method]}, n={len(codes.points)}"
    plots.save_points(codes.points, codes.labels, output, title, codes.axis_names, run.classes)
    return codes


def is_table_model(model: nn.Module) -> bool:
    """Whether the model's examples are rows of features (D,) rather than images (C, H, W)."""
    return len(model.shape) != 3


@torch.no_grad()
def save_samples(
    model: nn.Module,
    output: str | Path,
    n: int = 64,
    seed: int = 0,
    test: Dataset | None = None,
    columns: list[str] | None = None,
) -> Path:
    """n draws from the model's prior: an image grid; for a table model, each feature's
    distribution in the samples against the `test` rows."""
    generator = torch.Generator(device=_device(model)).manual_seed(seed)
    samples = model.sample(n, generator=generator)
    if not is_table_model(model):
        return plots.save_grid(samples, output)
    title = f"{n} prior samples against {len(test)} test rows"
    return plots.save_feature_distributions(test.x, {"samples": samples}, output, title, columns)


@torch.no_grad()
def save_reconstructions(
    model: nn.Module,
    test: Dataset,
    output: str | Path,
    n: int = 32,
    columns: list[str] | None = None,
) -> Path:
    """The first n test examples and their reconstructions (conditional models get the
    examples' labels): originals above reconstructions for images, each feature's original
    against its reconstructed value for a table."""
    device = _device(model)
    originals = test.x[:n].to(device)
    labels = label_args(model, None if test.y is None else test.y[:n], device)
    reconstructions = model.reconstruct(originals, **labels)
    if is_table_model(model):
        return plots.save_feature_reconstructions(originals, reconstructions, output, columns)
    return plots.save_reconstructions(originals, reconstructions, output)


@dataclass
class DimensionScores:
    """How much each latent dimension is used: KL in nats, or the variance of point codes."""

    values: torch.Tensor  # (D,)
    kind: str  # "KL" or "var"

    def label(self, d: int) -> str:
        return f"z[{d}] {self.kind} {float(self.values[d]):.2f}"


def dimension_scores(model: nn.Module, x: torch.Tensor) -> DimensionScores:
    """KL per dimension for a Gaussian posterior; for models that encode to a point (no
    log-variance, e.g. an autoencoder) the variance of the codes over x instead."""
    _, z_log_var = encode_all(model, x[:1])  # batched: stored token ids become int64
    if z_log_var is None:
        return DimensionScores(encode_means(model, x).double().var(0), "var")
    return DimensionScores(kl_per_dim(model, x), "KL")


def run_scores(run: ExploreRun) -> DimensionScores:
    """Dimension scores over the run's test set (computed once per run: the report draws
    several pictures from them)."""
    if run.scores is None:
        run.scores = dimension_scores(run.model, run.test.x)
    return run.scores


def ranked_dims(run: ExploreRun) -> list[int]:
    """The dimensions the decoder reads, highest score first."""
    return kl_order(run_scores(run).values[: decoded_dims(run.model)])


def save_manifold(run: ExploreRun, output: str | Path, grid: int = 20) -> Manifold:
    """Decoded grid over the two highest-KL latent dims (all others at their prior medians)."""
    dims = tuple(ranked_dims(run)[:2])
    if len(dims) == 2:
        dims = tuple(sorted(dims))
    result = manifold(run.model, grid, dims)
    ticks = [[f"{v:.2f}" for v in axis] for axis in result.values.tolist()]
    rest = ""
    if run.model.latent_dim > len(dims):
        rest = " (others 0)" if not result.center.any() else " (others at their prior medians)"
    title = f"{run.name}: decoded latent grid, {grid} prior quantiles per axis{rest}"
    if run.is_table:
        save_table_manifold(run, result, output, title)
        return result
    plots.save_image_figure(
        result.images,
        grid,
        output,
        title,
        col_labels=ticks[0],
        row_labels=ticks[1][::-1] if len(dims) == 2 else None,
        xlabel=f"z[{dims[0]}]",
        ylabel=f"z[{dims[1]}]" if len(dims) == 2 else "",
    )
    return result


def save_table_manifold(run: ExploreRun, result: Manifold, output: str | Path, title: str) -> None:
    """A table's manifold: each feature's decoded value over the grid, as heat maps (one
    latent dimension: lines along it)."""
    values = result.values.tolist()
    if len(result.dims) == 1:
        curve = {f"z[{result.dims[0]}]": result.images}
        plots.save_feature_lines(
            values[0], curve, output, title, f"z[{result.dims[0]}]", run.columns
        )
        return
    grid = len(values[0])  # images run from the highest y row down: flip to low-to-high
    maps = result.images.reshape(grid, grid, -1).flip(0)
    axes = (f"z[{result.dims[0]}]", f"z[{result.dims[1]}]")
    plots.save_feature_maps(maps, values[0], values[1], output, title, axes, run.columns)


def save_interpolation(
    run: ExploreRun,
    output: str | Path,
    source: str,
    target: str,
    steps: int = 10,
    method: str = "lerp",
    gif: str | Path | None = None,
) -> torch.Tensor:
    """Strip: input A, `steps` decoded codes from A to B, input B; optionally the path as a GIF."""
    x_a, name_a = resolve_input(source, run.test, "--from")
    x_b, name_b = resolve_input(target, run.test, "--to")
    path = interpolate(run.model, x_a, x_b, steps, method)
    title = f"{run.name}: {method} from A ({name_a}) to B ({name_b}), {steps} decoded steps"
    t = torch.linspace(0, 1, steps).tolist()
    if run.is_table:  # no GIF: a row of features is not a picture
        marks = {"A": (0.0, x_a), "B": (1.0, x_b)}
        curve = {"decoded path": path}
        plots.save_feature_lines(t, curve, output, title, "t", run.columns, marks=marks)
        return path
    strip = torch.cat([x_a[None], path, x_b[None]])
    labels = ["A", *(f"{v:.2f}" for v in t), "B"]
    plots.save_image_figure(strip, len(strip), output, title, col_labels=labels, xlabel="t")
    if gif is not None:
        plots.save_gif(path, gif)
    return path


def traversal_dims(run: ExploreRun, dims: list[int] | None) -> list[int]:
    """The dims asked for (checked), or the MAX_TRAVERSE_ROWS of highest KL."""
    if dims is None:
        return ranked_dims(run)[:MAX_TRAVERSE_ROWS]
    bad = [d for d in dims if not 0 <= d < run.model.latent_dim]
    if bad:
        raise ConfigError(
            f"--dims {bad[0]}: no such latent dimension (the model has {run.model.latent_dim}: "
            f"0..{run.model.latent_dim - 1})"
        )
    return list(dims)


def save_sequence_traversal(
    run: ExploreRun,
    output: str | Path,
    index: int = 0,
    dims: list[int] | None = None,
    value_range: float = 3.0,
    steps: int = 11,
) -> list[tuple[str, list[float], list[str], list[bool] | None]]:
    """A sequence run's traversal as text: for each dim (highest KL first), the greedy
    decodings as it runs from -range to +range around test sequence `index`'s code, the
    others fixed; molecule runs mark each string valid or not. Returns (row label, values,
    strings, validity) per dim."""
    scores = run_scores(run)
    dims = traversal_dims(run, dims)
    x, name = pick_test_image(run.test, index)
    vocabulary = vocabulary_of(run.config.data)
    z = traversal_codes(encode_means(run.model, x[None])[0], dims, value_range, steps)
    strings = decode_codes(run.model, vocabulary, z)
    values = torch.linspace(-value_range, value_range, steps).tolist()
    molecules = is_molecules(run.config.data)
    lines = [f"# {run.name}: latent traversal around {name}: {vocabulary.decode(x[None])[0]}"]
    rows = []
    for r, d in enumerate(dims):
        row = strings[r * steps : (r + 1) * steps]
        valid = validity_marks(row)[0] if molecules else None
        rows.append((scores.label(d), values, row, valid))
        lines.append(f"# {scores.label(d)}")
        for i, (value, text) in enumerate(zip(values, row)):
            mark = "" if valid is None else ("\tvalid" if valid[i] else "\tinvalid")
            lines.append(f"{value:+.2f}\t{text}{mark}")
    atomic_write_text(Path(output), "\n".join(lines) + "\n")
    return rows


def save_traversal(
    run: ExploreRun,
    output: str | Path,
    index: int = 0,
    dims: list[int] | None = None,
    value_range: float = 3.0,
    steps: int = 11,
) -> list[int]:
    """Rows of one latent dim each (highest KL first), set from -range to +range around the
    code of test image `index`; returns the dims drawn."""
    scores = run_scores(run)
    dims = traversal_dims(run, dims)
    x, name = pick_test_image(run.test, index)
    images = traverse(run.model, x, dims, value_range, steps)
    rows = [scores.label(d) for d in dims]
    values = torch.linspace(-value_range, value_range, steps).tolist()
    if run.is_table:  # one line per latent dimension in each feature's panel
        curves = {row: images[i * steps : (i + 1) * steps] for i, row in enumerate(rows)}
        title = f"{run.name}: latent traversal around {name}; one dim at a time, others fixed"
        xlabel = "value of the varied dimension"
        plots.save_feature_lines(values, curves, output, title, xlabel, run.columns)
        return list(dims)
    cols = [f"{round(v, 6) + 0.0:+.1f}" for v in values]  # no "-0.0"
    title = f"{run.name}: latent traversal around {name}; one dim per row, others fixed"
    plots.save_image_figure(
        images, steps, output, title, cols, rows, xlabel="value of the row's dimension"
    )
    return list(dims)


def save_kl(run: ExploreRun, output: str | Path) -> DimensionScores:
    """Bar chart of the KL (nats per example) of each latent dimension on the test set
    (the variance of the codes for models without a posterior variance)."""
    scores = run_scores(run)
    total = float(scores.values.sum())
    if scores.kind == "KL":
        how = f", total {total:.2f} nats"
        if own_prior(run.model):  # per-dimension estimates that need not add up to the total
            how = " (one-sample estimate, as in the ELBO)"
        title = f"{run.name}: KL per latent dimension{how}"
        ylabel = "KL (nats per example)"
    else:
        title = f"{run.name}: variance of the codes per latent dimension (no posterior)"
        ylabel = "variance over test images"
    noun = {"sequence": "sequences", "table": "rows"}.get(run.test.kind, "images")
    title += f" ({len(run.test)} test {noun})"
    plots.save_kl_bars(scores.values.tolist(), output, title, ylabel=ylabel)
    return scores
