"""Latent-space exploration: scatter codes, manifold grids, paths, traversals, the commands
and the HTML report (its contents; tests/apps/test_report.py opens it in a browser)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vaekit
from conftest import synthetic_splits, tiny_config
from helpers import write_idx_folder
from vaekit.apps.explore import (
    dimension_scores,
    encode_means,
    interpolate,
    kl_order,
    kl_per_dim,
    latent_codes,
    latent_path,
    load_image_file,
    manifold,
    open_run,
    prior_axes,
    prior_quantiles,
    resolve_input,
    slerp,
    subsample,
    traverse,
)
from vaekit.apps.report import write_report
from vaekit.cli import main
from vaekit.core.errors import ConfigError, DataError
from vaekit.evaluation.metrics import evaluate_elbo
from vaekit.models import build_model
from vaekit.models.base import GaussianVAE, gaussian_kl
from vaekit.models.pca import PCAModel

# --- fixtures: tiny runs whose data is an IDX folder, so the commands can reload it --------


@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_idx_folder(tmp_path_factory.mktemp("data") / "bars")


def train_on_folder(folder: Path, out: Path, latent_dim: int, epochs: int = 2) -> vaekit.Run:
    config = tiny_config(epochs=epochs).to_dict()
    config["data"]["path"] = str(folder)
    config["model"]["latent_dim"] = latent_dim
    return vaekit.train(vaekit.RunConfig.from_dict(config), out, progress=False)


@pytest.fixture(scope="module")
def run2(idx_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    return train_on_folder(idx_folder, tmp_path_factory.mktemp("runs") / "z2", 2, epochs=4)


@pytest.fixture(scope="module")
def run3(idx_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> vaekit.Run:
    return train_on_folder(idx_folder, tmp_path_factory.mktemp("runs") / "z3", 3)


def random_model(latent_dim: int, shape: tuple[int, ...] = (1, 8, 8)) -> GaussianVAE:
    torch.manual_seed(0)
    config = vaekit.ModelConfig(hidden=[16], latent_dim=latent_dim)
    return GaussianVAE(config, shape).eval()


# --- grids and paths ---------------------------------------------------------------------
def test_prior_quantiles_split_the_prior_into_equal_mass_cells() -> None:
    values = prior_quantiles(20)
    cdf = torch.distributions.Normal(0.0, 1.0).cdf(values)
    torch.testing.assert_close(cdf, (torch.arange(20) + 0.5) / 20)
    torch.testing.assert_close(values, -values.flip(0))  # symmetric about 0
    assert values[-1] == pytest.approx(1.95996, abs=1e-4)  # the 97.5% quantile


def test_manifold_decodes_the_grid_over_the_chosen_dims_with_others_zero() -> None:
    model = random_model(4)
    result = manifold(model, grid=3, dims=(1, 3))
    values = prior_quantiles(3)
    z = torch.zeros(9, 4)
    for row in range(3):
        for col in range(3):  # row-major; x grows to the right, y grows upwards
            z[row * 3 + col, 1] = values[col]
            z[row * 3 + col, 3] = values[2 - row]
    torch.testing.assert_close(result.images, model.decode_mean(z).detach())
    assert result.dims == (1, 3)


def test_manifold_of_a_model_with_its_own_prior_spans_that_prior() -> None:
    """PCA's prior is N(0, diag(variances)): each axis must hold that dimension's quantiles
    (not N(0, 1)'s), and every other dimension its median, 0."""
    model = PCAModel(vaekit.ModelConfig(name="pca", latent_dim=3), (1, 8, 8))
    torch.manual_seed(0)
    model.components.copy_(torch.randn(3, 64))
    model.variances.copy_(torch.tensor([9.0, 0.25, 4.0]))
    result = manifold(model, grid=5, dims=(0, 2))
    exact = prior_quantiles(5)
    torch.testing.assert_close(result.values[0], 3.0 * exact, atol=0.08, rtol=0)
    torch.testing.assert_close(result.values[1], 2.0 * exact, atol=0.06, rtol=0)
    assert (result.center / model.variances.sqrt()).abs().max() < 0.05  # within 5 SE
    z = result.center.repeat(25, 1)
    for row in range(5):
        for col in range(5):
            z[row * 5 + col, 0], z[row * 5 + col, 2] = (
                result.values[0, col],
                result.values[1, 4 - row],
            )
    torch.testing.assert_close(result.images, model.decode_mean(z))
    again = prior_axes(model, 5, (0, 2))  # seeded: the same grid every time
    torch.testing.assert_close(again[0], result.values)


def test_vampprior_grid_and_kl_ranking_follow_the_mixture(synth) -> None:
    """A VampPrior sits wherever its pseudo-inputs encode, not at N(0, I): the grid must
    cover its draws (equal mass per cell), and an image whose posterior IS the prior (the
    one pseudo-input, K = 1) must score KL 0 in every dimension, where the N(0, 1) KL
    would not."""
    config = tiny_config().model
    config.name, config.prior_components = "vamp", 1
    torch.manual_seed(0)
    model = build_model(config, synth.shape).eval()
    with torch.no_grad():
        model.encoder.head.bias.add_(3.0)  # move every posterior (and so the prior) off 0
    values, center = prior_axes(model, 4, (0, 1))
    draws = model.sample_prior(20_000, torch.Generator().manual_seed(5)).detach()
    inside = (draws[:, :2, None] < values[None]).float().mean(0)  # (2, 4): mass below
    torch.testing.assert_close(
        inside, torch.tensor([[0.125, 0.375, 0.625, 0.875]] * 2), atol=0.02, rtol=0
    )
    torch.testing.assert_close(center, draws.median(0).values, atol=0.05, rtol=0)
    assert center.abs().min() > 0.5  # not 0: the old grid would have missed the prior
    prior_image = model.pseudo_inputs.detach().clamp(0, 1)  # (1, C, H, W)
    scores = kl_per_dim(model, prior_image.repeat(3, 1, 1, 1))
    torch.testing.assert_close(scores, torch.zeros_like(scores), atol=1e-4, rtol=0)
    with torch.no_grad():
        z_mean, z_log_var = model.encode(prior_image)
    assert gaussian_kl(z_mean, z_log_var).sum() > 1.0


def test_manifold_of_a_one_dimensional_latent_is_one_row() -> None:
    result = manifold(random_model(1), grid=5)
    assert result.images.shape == (5, 1, 8, 8) and result.dims == (0,)


def test_lerp_and_slerp_paths() -> None:
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    line = latent_path(a, b, 5, "lerp")
    torch.testing.assert_close(line[2], torch.tensor([1.5, 1.5]))
    arc = latent_path(a, b, 5, "slerp")
    torch.testing.assert_close(arc[[0, -1]], torch.stack([a, b]))
    torch.testing.assert_close(arc.norm(dim=1), torch.full((5,), 3.0))  # stays on the circle
    torch.testing.assert_close(arc[2], torch.tensor([1.0, 1.0]) * 3 / 2**0.5)
    parallel = slerp(a, 2 * a, torch.linspace(0, 1, 3))  # no angle: a straight line, no NaN
    torch.testing.assert_close(parallel, torch.stack([a, 1.5 * a, 2 * a]))
    with pytest.raises(ConfigError, match="at least 2 steps"):
        latent_path(a, b, 1)
    with pytest.raises(ConfigError, match="unknown interpolation"):
        latent_path(a, b, 3, "cubic")


def test_interpolation_starts_and_ends_at_the_reconstructions() -> None:
    model = random_model(3)
    x = torch.rand(2, 1, 8, 8)
    path = interpolate(model, x[0], x[1], steps=6, method="slerp")
    assert path.shape == (6, 1, 8, 8)
    torch.testing.assert_close(path[[0, -1]], model.reconstruct(x))


def test_traverse_sets_one_dimension_per_row_around_the_code() -> None:
    model = random_model(3)
    x = torch.rand(1, 8, 8)
    images = traverse(model, x, dims=[2, 0], value_range=2.0, steps=5)
    code = encode_means(model, x[None])[0]
    values = torch.linspace(-2, 2, 5)
    z = code.repeat(10, 1)
    z[:5, 2], z[5:, 0] = values, values
    torch.testing.assert_close(images, model.decode_mean(z).detach())


def test_kl_per_dim_agrees_with_evaluation_and_orders_dims(run3: vaekit.Run) -> None:
    test = synthetic_splits().test
    kl = kl_per_dim(run3.model, test.x, batch_size=50)
    reference = evaluate_elbo(run3.model, test)
    torch.testing.assert_close(kl, torch.tensor(reference["kl_per_dim"], dtype=kl.dtype))
    order = kl_order(kl)
    assert sorted(order) == [0, 1, 2] and kl[order[0]] >= kl[order[1]] >= kl[order[2]]
    assert kl_order(torch.tensor([0.5, 2.0, 0.5])) == [1, 0, 2]  # ties: lower index first


class PointEncoder(torch.nn.Module):
    """An autoencoder-like model: encode gives a point code and no log-variance."""

    latent_dim = 2

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([3.0, 0.5]))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x.flatten(1)[:, :2] * self.scale, None


def test_dimensions_are_scored_by_kl_or_by_code_variance(run3: vaekit.Run) -> None:
    x = synthetic_splits().test.x
    scores = dimension_scores(run3.model, x)
    assert scores.kind == "KL" and torch.equal(scores.values, kl_per_dim(run3.model, x))
    assert scores.label(0) == f"z[0] KL {float(scores.values[0]):.2f}"
    points = dimension_scores(PointEncoder(), x)
    expected = (x.flatten(1)[:, :2] * torch.tensor([3.0, 0.5])).double().var(0)
    assert points.kind == "var" and torch.allclose(points.values, expected)
    assert kl_order(points.values) == [0, 1]  # pixel (0, 0) varies with the class, (0, 1) not


# --- latent codes -----------------------------------------------------------------------
def test_subsample_is_seeded_sorted_and_distinct() -> None:
    picked = subsample(1000, 50, seed=3)
    assert len(picked.unique()) == 50 and torch.equal(picked, picked.sort().values)
    assert torch.equal(picked, subsample(1000, 50, seed=3))
    assert torch.equal(subsample(10, 50), torch.arange(10))


def test_latent_codes_of_a_2d_model_are_the_means_themselves(run2: vaekit.Run) -> None:
    test = synthetic_splits().test
    codes = latent_codes(run2.model, test, n=100, method="auto", seed=1)
    assert codes.method == "z" and codes.points.shape == (100, 2)
    expected = encode_means(run2.model, test.x[codes.indices])
    np.testing.assert_allclose(codes.points, expected.double().numpy(), rtol=1e-6)
    assert torch.equal(codes.labels, test.y[codes.indices])


def test_latent_codes_of_a_larger_model_use_pca_or_tsne(run3: vaekit.Run) -> None:
    test = synthetic_splits().test
    pca = latent_codes(run3.model, test, n=128, method="pca")
    assert pca.method == "pca" and pca.axis_names == ("PC 1", "PC 2")
    assert pca.points.shape == (128, 2) and abs(pca.points.mean(0)).max() < 1e-6  # centred
    tsne = latent_codes(run3.model, test, n=60, method="auto")
    assert tsne.method == "tsne" and tsne.points.shape == (60, 2)
    with pytest.raises(ConfigError, match="unknown method"):
        latent_codes(run3.model, test, method="umap")


def knn_accuracy(codes) -> float:
    """5-fold cross-validated 5-nearest-neighbour accuracy of the labels from the 2-D points."""
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    labels = codes.labels.numpy()
    return float(cross_val_score(KNeighborsClassifier(5), codes.points, labels, cv=5).mean())


def test_latent_plot_of_the_bar_patterns_separates_the_classes(run2: vaekit.Run) -> None:
    codes = latent_codes(run2.model, synthetic_splits().test)
    assert knn_accuracy(codes) > 0.9  # 4 classes: chance is about 0.25


@pytest.mark.slow
def test_latent_plot_of_a_2d_mnist_model_separates_digits(
    mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real MNIST, z=2, 3 epochs: k-NN on the plotted points far above chance (0.11).

    Measured 0.61 (5-fold CV on 5000 test points); see docs/explore.md."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small MLP is fastest on one thread, most so on a busy machine
    try:
        config = {
            "model": {"hidden": [512], "latent_dim": 2},
            "train": {"epochs": 3, "lr": 2e-3, "batch_size": 128, "eval_batch_size": 5000},
        }
        run = vaekit.train(config, tmp_path / "z2", progress=False, outputs=False, data=mnist)
    finally:
        torch.set_num_threads(threads)
    codes = latent_codes(run.model, mnist.test, n=5000)
    chance = torch.bincount(codes.labels).max().item() / len(codes.labels)
    assert chance < 0.12
    assert knn_accuracy(codes) > 0.5


# --- inputs from image files --------------------------------------------------------------
def test_image_files_load_as_model_inputs(tmp_path: Path) -> None:
    pixels = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    loaded = load_image_file(tmp_path / "grey.png", (1, 8, 8))
    torch.testing.assert_close(loaded, torch.from_numpy(pixels / 255.0).float()[None])
    Image.fromarray(np.stack([pixels] * 3, -1)).save(tmp_path / "rgb.png")
    torch.testing.assert_close(load_image_file(tmp_path / "rgb.png", (1, 8, 8)), loaded)
    assert load_image_file(tmp_path / "rgb.png", (3, 8, 8)).shape == (3, 8, 8)


def test_bad_image_files_give_one_line_data_errors(tmp_path: Path) -> None:
    Image.new("L", (28, 28)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big.png: image is 28x28 pixels, the model needs 8x8"):
        load_image_file(tmp_path / "big.png", (1, 8, 8))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.png: not a readable image file"):
        load_image_file(tmp_path / "junk.png", (1, 8, 8))
    with pytest.raises(DataError, match="nothere.png: image file not found"):
        load_image_file(tmp_path / "nothere.png", (1, 8, 8))


def test_inputs_are_test_indices_or_files(tmp_path: Path) -> None:
    test = synthetic_splits().test
    image, name = resolve_input("5", test)
    assert torch.equal(image, test.x[5]) and name == f"test #5, label {int(test.y[5])}"
    with pytest.raises(ConfigError, match=r"--to 128: no such test image .*0\.\.127"):
        resolve_input("128", test, "--to")


# --- commands -----------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


@pytest.mark.parametrize("which", ["run2", "run3"])
def test_every_command_draws_its_picture(which: str, request, capsys) -> None:
    run = request.getfixturevalue(which).path
    commands = {
        "latent.png": ["latent", str(run), "--method", "pca"],
        "manifold.png": ["manifold", str(run), "--grid", "6"],
        "interpolation.png": ["interpolate", str(run), "--from", "0", "--to", "9"],
        "slerp.png": ["interpolate", str(run), "--from", "1", "--to", "2", "--method", "slerp"],
        "traversal.png": ["traverse", str(run), "--index", "3", "--steps", "7"],
    }
    for name, argv in commands.items():
        output = run / f"cmd-{name}"
        assert main([*argv, "-o", str(output)]) == 0, argv
        width, height = png_size(output)
        assert width > 100 and height > 50
    assert "wrote" in capsys.readouterr().out
    with Image.open(run / "cmd-interpolation.gif") as gif:
        assert gif.is_animated and gif.n_frames == 2 * 10 - 2  # forwards, then back
    dims = "0,1" if which == "run2" else "2,0,1"
    assert main(["traverse", str(run), "--dims", dims, "-o", str(run / "t.png")]) == 0
    assert f"({dims.replace(',', ', ')})" in capsys.readouterr().out


def test_interpolate_accepts_an_image_file(run2: vaekit.Run, tmp_path: Path) -> None:
    digit = synthetic_splits().test.x[4, 0]
    Image.fromarray((digit * 255).round().byte().numpy()).save(tmp_path / "mine.png")
    argv = ["interpolate", str(run2.path), "--from", str(tmp_path / "mine.png"), "--to", "7"]
    assert main([*argv, "--steps", "4", "-o", str(tmp_path / "i.png")]) == 0
    assert png_size(tmp_path / "i.png")[0] > 100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["interpolate", "{run}", "--from", "0", "--to", "9999"], "--to 9999: no such test image"),
        (["interpolate", "{run}", "--from", "{tmp}/big.png", "--to", "1"], "needs 8x8"),
        (["traverse", "{run}", "--dims", "0,5"], "--dims 5: no such latent dimension"),
        (["traverse", "{run}", "--index", "-1"], "--index -1: no such test image"),
        (["manifold", "{run}", "-o", "{tmp}/grid.jpg"], "output must be a .png file"),
        (["latent", "{tmp}/nowhere"], "run folder not found"),
    ],
)
def test_command_mistakes_print_one_line(run2, tmp_path: Path, capsys, argv, message) -> None:
    Image.new("L", (28, 28)).save(tmp_path / "big.png")
    argv = [a.format(run=run2.path, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


# --- the report -------------------------------------------------------------------------
IMG_SRC = re.compile(r'<img src="data:image/(png|gif);base64,([A-Za-z0-9+/=]+)"')
SECTIONS = [
    "Metrics per epoch",
    "Loss curves",
    "Samples",
    "Reconstructions",
    "Latent space",
    "Manifold",
    "Interpolation",
    "Latent traversal",
    "KL per dimension",
    "Configuration",
]


def test_report_is_self_contained_with_every_section(run3: vaekit.Run, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(run3.path, folder)
    (folder / "samples.png").unlink()  # a missing training picture is drawn by the report
    evaluation = {  # the shape of `vaekit evaluate`'s file; the report renders any dict
        "elbo": {"neg_elbo": 91.0, "bits_per_dim": 0.1675},
        "iwae": [{"k": 1, "nll": 90.5}, {"k": 5000, "nll": 88.25, "seconds": 12.0}],
        "note": "<script>x</script>",
        "kl_per_dim": [1.5, 0.0],
    }
    (folder / "evaluation.json").write_text(json.dumps(evaluation))
    page = write_report(folder).read_text()
    for section in [*SECTIONS, "Evaluation"]:
        assert f"<h2>{section}</h2>" in page, section
    images = IMG_SRC.findall(page)
    assert len(images) == page.count("<img ") == 9
    for kind, payload in images:
        with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
            assert image.format == kind.upper() and image.width > 0
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    assert "elbo.neg_elbo</td><td>91</td>" in page and "[1.5, 0]" in page
    assert "<th>k</th><th>nll</th><th>seconds</th>" in page  # records as a nested table
    assert "<td>5000</td><td>88.25</td><td>12</td>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # values are escaped
    assert "embedded by t-SNE" in page


def test_report_without_evaluation_has_no_evaluation_section(run2: vaekit.Run) -> None:
    page = write_report(run2.path, run2.path / "r.html").read_text()
    assert "<h2>Evaluation</h2>" not in page and "drawn directly" in page
    assert main(["report", str(run2.path)]) == 0 and (run2.path / "report.html").is_file()


def test_open_run_takes_data_that_is_not_in_the_registry(tiny_run: vaekit.Run, synth) -> None:
    run = open_run(tiny_run.path, data=synth)
    assert torch.equal(run.test.x, synth.test.x) and run.classes == synth.classes


def test_conditional_models_are_drawn_with_a_fixed_label(idx_folder: Path, tmp_path: Path, capsys):
    config = tiny_config(epochs=2).to_dict()
    config["data"]["path"] = str(idx_folder)
    config["model"].update(name="cvae", latent_dim=2)
    run = vaekit.train(vaekit.RunConfig.from_dict(config), tmp_path / "cvae", progress=False)
    opened = open_run(run.path, label=1)
    z = torch.randn(5, 2)
    with torch.no_grad():
        wanted = run.model.decode_mean(z, torch.ones(5, dtype=torch.long))
        assert torch.equal(opened.model.decode_mean(z), wanted)
        assert not torch.equal(open_run(run.path, label=0).model.decode_mean(z), wanted)
    assert open_run(run.path).label == str(int(opened.test.y[0]))  # default: test image 0's
    for argv in (["manifold", "--grid", "4"], ["traverse", "--steps", "5"], ["latent"]):
        output = tmp_path / f"{argv[0]}.png"
        assert main([argv[0], str(run.path), *argv[1:], "--label", "1", "-o", str(output)]) == 0
        assert png_size(output)[0] > 100
    assert main(["manifold", str(run.path), "--label", "99"]) == 2
    err = capsys.readouterr().err
    assert "--label 99: the model has classes 0.." in err and "Traceback" not in err
    page = write_report(run.path).read_text()
    assert "Manifold" in page and "Style and content" not in page  # no analogies: not M2
