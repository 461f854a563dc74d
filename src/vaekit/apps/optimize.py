"""Latent-space molecule optimisation: `vaekit optimize RUN --property qed|logp|sa`.

Following Gomez-Bombarelli et al. (2018): a property that RDKit computes on the training
molecules is learned as a function of their latent codes (a small MLP on the posterior
means; its R^2 is measured on held-out molecules). Gradient ascent on that function, from
the codes of the best training molecules, moves the codes toward better predicted values,
with a penalty that keeps them where the training codes lie (free inside the radius that
holds 99% of them, quadratic in the norm beyond it): there the decoder has learned to
decode. Along the way the codes are decoded, greedily and by sampling, and every decoded
string RDKit reads is scored with its TRUE property: the regressor only steers, it never
reports a value. Novel means not in the run's training split, compared as canonical SMILES.

Properties (RDKit): qed, the quantitative estimate of drug-likeness (Bickerton et al.
2012; 0 to 1, higher is better); logp, Wildman-Crippen logP (octanol-water partition,
higher is better); sa, the synthetic accessibility score (Ertl and Schuffenhauer 2009;
1 easy to 10 hard, lower is better, so the search descends), from the SA_Score folder of
RDKit's Contrib, which the rdkit wheel ships.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vaekit.apps.explore import check_beside_training
from vaekit.core.errors import ConfigError
from vaekit.core.files import atomic_write_text
from vaekit.core.progress import progress_bar
from vaekit.data.registry import load_data
from vaekit.data.sequences import Vocabulary, is_molecules, vocabulary_of
from vaekit.evaluation.sequences import canonical_smiles, decode_codes, rdkit_chem
from vaekit.models.batched import encode_all, model_device
from vaekit.models.loading import OpenedRun, open_run

TRAIN_MOLECULES = 50_000  # training molecules scored and encoded (a seeded sample beyond)
MIN_MOLECULES = 20  # valid training molecules needed to fit and test the regressor
HELD_OUT = 0.1  # share of them that measures the regressor's R^2
REGRESSOR_HIDDEN = 64
REGRESSOR_STEPS, REGRESSOR_BATCH, REGRESSOR_LR = 1000, 256, 3e-3
ASCENT_LR = 0.02  # Adam's step size on the codes
RADIUS_QUANTILE = 0.99  # codes are free inside the norm of this share of the training codes
PRIOR_WEIGHT = 1.0  # the penalty per squared unit of norm beyond that radius
DECODE_POINTS = 10  # times along the ascent at which the codes are decoded
SAMPLES_PER_CODE, SAMPLE_TEMPERATURE = 4, 0.7  # sampled decodings beside the greedy one
CANONICAL_CHUNK = 50_000  # training SMILES canonicalised per progress step


@dataclass(frozen=True)
class Property:
    """A molecular property RDKit computes, and which way is better."""

    name: str
    description: str
    higher_is_better: bool

    @property
    def sign(self) -> float:
        """+1 where higher is better, -1 where lower is (the search maximises sign * value)."""
        return 1.0 if self.higher_is_better else -1.0

    @property
    def top_percentile(self) -> str:
        """How the threshold of the best 1% is named."""
        return "99th percentile" if self.higher_is_better else "1st percentile"


PROPERTIES = {
    "qed": Property("qed", "QED drug-likeness (0 to 1, higher is better)", True),
    "logp": Property("logp", "Wildman-Crippen logP (octanol-water, higher is better)", True),
    "sa": Property("sa", "synthetic accessibility (1 easy to 10 hard, lower is better)", False),
}


def property_named(name: str) -> Property:
    """The property called `name` (ConfigError naming the known ones otherwise)."""
    if name not in PROPERTIES:
        raise ConfigError(f"unknown property {name!r} (known: {', '.join(PROPERTIES)})")
    return PROPERTIES[name]


def property_function(prop: Property) -> Callable:
    """RDKit's function from a molecule to `prop` (RDKit is optional: imported here)."""
    rdkit_chem(f"optimize --property {prop.name}")
    if prop.name == "qed":
        from rdkit.Chem import QED

        return QED.qed
    if prop.name == "logp":
        from rdkit.Chem import Crippen

        return Crippen.MolLogP
    try:
        from rdkit.Contrib.SA_Score import sascorer
    except ImportError:
        raise ConfigError(
            "--property sa needs RDKit's Contrib SA_Score (sascorer), which this RDKit "
            "install lacks: use qed or logp"
        ) from None
    return sascorer.calculateScore


def molecule_values(prop: Property, smiles: list[str]) -> np.ndarray:
    """`prop` of each SMILES by RDKit, float64; NaN where RDKit reads no molecule."""
    chem, function = rdkit_chem(), property_function(prop)
    values = np.full(len(smiles), np.nan)
    for i, text in enumerate(smiles):
        molecule = chem.MolFromSmiles(text) if text else None
        value = function(molecule) if molecule is not None else None
        values[i] = np.nan if value is None else value  # SA: None for a molecule of no atoms
    return values


# --- the regressor ----------------------------------------------------------------------
class PropertyRegressor(nn.Module):
    """A small MLP from latent codes (N, D) to a property (N,), in the property's units."""

    def __init__(self, latent_dim: int, center: float, scale: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, REGRESSOR_HIDDEN),
            nn.SiLU(),
            nn.Linear(REGRESSOR_HIDDEN, REGRESSOR_HIDDEN),
            nn.SiLU(),
            nn.Linear(REGRESSOR_HIDDEN, 1),
        )
        self.center, self.scale = center, scale  # the training values' mean and spread

    def standardised(self, z: torch.Tensor) -> torch.Tensor:
        """The prediction in units of the training values' standard deviation."""
        return self.net(z)[:, 0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.center + self.scale * self.standardised(z)


@dataclass
class RegressorFit:
    """A fitted regressor and its R^2 on molecules it did not see."""

    regressor: PropertyRegressor
    r2: float
    n_fit: int
    n_held_out: int


def r_squared(truth: torch.Tensor, predicted: torch.Tensor) -> float:
    """1 - residual sum of squares / total sum of squares (1: perfect, 0: the mean)."""
    total = ((truth - truth.mean()) ** 2).sum()
    return float(1 - ((truth - predicted) ** 2).sum() / total.clamp_min(1e-12))


def fit_regressor(codes: torch.Tensor, values: torch.Tensor, seed: int = 0) -> RegressorFit:
    """An MLP fitted by Adam (mean squared error of standardised values) on all but a
    seeded HELD_OUT share of (codes, values), and its R^2 on that share."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(codes), generator=generator)
    held = order[: max(2, round(HELD_OUT * len(codes)))]
    fit = order[len(held) :]
    center, scale = float(values[fit].mean()), float(values[fit].std().clamp_min(1e-6))
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global state untouched
        torch.manual_seed(seed)
        regressor = PropertyRegressor(codes.shape[1], center, scale)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=REGRESSOR_LR, weight_decay=1e-4)
    targets = (values - center) / scale
    for _ in range(REGRESSOR_STEPS):
        batch = fit[torch.randint(len(fit), (REGRESSOR_BATCH,), generator=generator)]
        loss = ((regressor.standardised(codes[batch]) - targets[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    regressor.eval().requires_grad_(False)
    with torch.no_grad():
        r2 = r_squared(values[held], regressor(codes[held]))
    return RegressorFit(regressor, r2, len(fit), len(held))


# --- the search -------------------------------------------------------------------------
def ascend(
    regressor: PropertyRegressor, starts: torch.Tensor, prop: Property, steps: int, radius: float
) -> dict[int, torch.Tensor]:
    """Gradient ascent of the predicted property (descent where lower is better) from the
    codes `starts` (S, D), with the penalty beyond `radius`: step -> the codes then, at
    DECODE_POINTS evenly spaced steps (the last included)."""
    z = starts.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=ASCENT_LR)
    marks = {round(steps * k / DECODE_POINTS) for k in range(1, DECODE_POINTS + 1)} - {0}
    kept = {}
    for step in range(1, steps + 1):
        gain = prop.sign * regressor.standardised(z)
        outside = (z.norm(dim=1) - radius).clamp_min(0)
        loss = (PRIOR_WEIGHT * outside**2 - gain).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in marks:
            kept[step] = z.detach().clone()
    return kept


def decode_path(
    model: nn.Module, vocabulary: Vocabulary, codes: dict[int, torch.Tensor], seed: int
) -> dict[int, list[str]]:
    """step -> its codes decoded greedily and SAMPLES_PER_CODE times at SAMPLE_TEMPERATURE."""
    generator = torch.Generator(device=model_device(model)).manual_seed(seed)
    strings = {}
    for step, z in codes.items():
        many = z.repeat_interleave(SAMPLES_PER_CODE, dim=0)
        strings[step] = decode_codes(model, vocabulary, z) + decode_codes(
            model, vocabulary, many, temperature=SAMPLE_TEMPERATURE, generator=generator
        )
    return strings


# --- the job ----------------------------------------------------------------------------
@dataclass
class Candidate:
    """A distinct decoded molecule: canonical SMILES, its true property, whether novel."""

    smiles: str
    value: float
    novel: bool


@dataclass
class OptimizeReport:
    """What `optimize_run` found, and the numbers it is judged against."""

    prop: Property
    n_train: int  # molecules of the training split
    n_scored: (
        int  # of them scored, encoded and used to fit (a seeded sample beyond TRAIN_MOLECULES)
    )
    train_mean: float
    train_best: float
    train_top: float  # the 99th percentile (1st where lower is better)
    fit: RegressorFit
    starts: int
    steps: int
    n_decoded: int
    n_valid: int
    candidates: list[Candidate]  # every distinct valid decoded molecule, best first
    top: list[Candidate]  # the best novel ones
    output: Path
    path_means: dict[int, float]  # step -> the mean true property of its valid decodings

    @property
    def n_novel(self) -> int:
        return sum(c.novel for c in self.candidates)

    def beats(self, value: float, threshold: float) -> bool:
        return self.prop.sign * value > self.prop.sign * threshold


def check_counts(**counts: int) -> None:
    for name, value in counts.items():
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")


def canonical_training_set(smiles: list[str], progress: bool) -> list[str | None]:
    """The canonical SMILES of every training string (None where RDKit reads none)."""
    canonical: list[str | None] = []
    bar = progress_bar(len(smiles), "canonical SMILES of the training set", progress)
    for start in range(0, len(smiles), CANONICAL_CHUNK):
        part = smiles[start : start + CANONICAL_CHUNK]
        canonical += canonical_smiles(part)
        bar.update(len(part))
    bar.close()
    return canonical


@dataclass
class TrainingScores:
    """The training split as the search sees it: every molecule's canonical SMILES (for
    novelty), and the scored ones' true values and posterior means."""

    known: set[str]
    n_train: int
    values: torch.Tensor  # (N,) float64, the property of the scored molecules
    codes: torch.Tensor  # (N, D) float32, their posterior means


def open_molecule_run(run_dir: str | Path, device: str = "cpu") -> OpenedRun:
    """The run, if it is a molecule run (ConfigError naming what it is otherwise)."""
    run = open_run(run_dir, device)
    data = run.config.data
    if data.kind != "sequence" or not is_molecules(data):
        what = "a text run" if data.kind == "sequence" else f"an {data.kind or 'image'} run"
        raise ConfigError(
            f"{run.path}: optimize needs a molecule run (SMILES: a .smi file, a smiles column, "
            f"MOSES or SELFIES); this is {what}"
        )
    return run


def score_training(
    run: OpenedRun, prop: Property, train_molecules: int, seed: int, progress: bool
) -> TrainingScores:
    """Canonicalise every training molecule; score and encode the valid ones (a seeded
    sample of `train_molecules` when there are more; 0: all)."""
    train = load_data(run.config.data).train
    strings = vocabulary_of(run.config.data).decode(train.storage)
    canonical = canonical_training_set(strings, progress)
    valid = torch.tensor([i for i, c in enumerate(canonical) if c is not None], dtype=torch.long)
    if len(valid) < MIN_MOLECULES:
        raise ConfigError(
            f"{run.path}: optimize needs at least {MIN_MOLECULES} valid training molecules to "
            f"fit its regressor; the training split has {len(valid)}"
        )
    if 0 < train_molecules < len(valid):
        pick = torch.randperm(len(valid), generator=torch.Generator().manual_seed(seed))
        valid = valid[pick[:train_molecules]].sort().values
    values = torch.from_numpy(molecule_values(prop, [canonical[i] for i in valid.tolist()]))
    codes = encode_all(run.model, train.storage[valid])[0].float().cpu()
    known = {c for c in canonical if c is not None}
    return TrainingScores(known, len(train), values, codes)


def score_decodings(
    prop: Property, strings: dict[int, list[str]], known: set[str]
) -> tuple[list[Candidate], dict[int, float], int]:
    """The distinct valid molecules among the decoded `strings` with their true values, best
    first; the mean value of each step's valid decodings; and how many decodings were valid."""
    by_step = {step: canonical_smiles(texts) for step, texts in strings.items()}
    decoded = [c for texts in by_step.values() for c in texts if c is not None]
    distinct = list(dict.fromkeys(decoded))
    value_of = dict(zip(distinct, molecule_values(prop, distinct).tolist()))
    scored = {smiles: value for smiles, value in value_of.items() if not math.isnan(value)}
    candidates = [Candidate(smiles, value, smiles not in known) for smiles, value in scored.items()]
    candidates.sort(key=lambda c: (-prop.sign * c.value, c.smiles))
    path_means = {}
    for step, texts in by_step.items():
        step_values = [scored[c] for c in texts if c in scored]
        path_means[step] = float(np.mean(step_values)) if step_values else math.nan
    return candidates, path_means, len(decoded)


def optimize_run(
    run_dir: str | Path,
    property_name: str,
    *,
    steps: int = 100,
    starts: int = 50,
    top: int = 10,
    output: str | Path | None = None,
    train_molecules: int = TRAIN_MOLECULES,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> OptimizeReport:
    """Search a molecule run's latent space for novel molecules with a better `property_name`
    and write every distinct valid one found to a CSV (smiles, property, is_novel), best first.
    `train_molecules` 0: score every training molecule."""
    prop = property_named(property_name)
    check_counts(steps=steps, starts=starts, top=top)
    if train_molecules < 0:
        raise ConfigError(f"--train-molecules must be >= 0 (0: all), got {train_molecules}")
    run = open_molecule_run(run_dir, device)
    property_function(prop)  # RDKit (and for sa its Contrib) before any work
    output = Path(output) if output is not None else run.path / f"optimize-{prop.name}.csv"
    if output.suffix.lower() != ".csv":
        raise ConfigError(f"{output}: the output must be a .csv file")
    check_beside_training(output, run.path)

    train = score_training(run, prop, train_molecules, seed, progress)
    fit = fit_regressor(train.codes, train.values.float(), seed)
    best_first = torch.argsort(prop.sign * train.values, descending=True)
    start_codes = train.codes[best_first[:starts]]
    radius = float(torch.quantile(train.codes.norm(dim=1), RADIUS_QUANTILE))
    path = ascend(fit.regressor, start_codes, prop, steps, radius)
    strings = decode_path(run.model, vocabulary_of(run.config.data), path, seed)
    candidates, path_means, n_valid = score_decodings(prop, strings, train.known)

    signed = (prop.sign * train.values).numpy()
    report = OptimizeReport(
        prop,
        train.n_train,
        len(train.values),
        float(train.values.mean()),
        float(prop.sign * signed.max()),
        float(prop.sign * np.percentile(signed, 99)),
        fit,
        len(start_codes),
        steps,
        sum(map(len, strings.values())),
        n_valid,
        candidates,
        [c for c in candidates if c.novel][:top],
        output,
        path_means,
    )
    atomic_write_text(output, candidates_csv(prop, candidates))
    return report


def candidates_csv(prop: Property, candidates: list[Candidate]) -> str:
    """smiles, the property (full precision), is_novel (1/0): one row per molecule."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["smiles", prop.name, "is_novel"])
    writer.writerows([c.smiles, repr(c.value), int(c.novel)] for c in candidates)
    return buffer.getvalue()
