"""`vaekit export`: ONNX and TorchScript graphs that match the PyTorch model, a dynamic
batch, sampling with onnxruntime alone, and failures that leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from conftest import tiny_config
from helpers import assert_one_line_error, run_cli
from vaekit.apps import export as export_module
from vaekit.apps.export import export_run
from vaekit.models.loading import load

pytest.importorskip("onnxruntime")
import onnxruntime  # noqa: E402

MODELS = {
    "mlp": {},
    "conv": {"arch": "conv", "hidden": [], "channels": [4, 8]},
    "hvae": {"name": "hvae", "latent_layers": [2, 2], "upper_hidden": [8]},
}


@pytest.fixture(scope="module")
def runs(synth, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_runs")
    out = {}
    for name, model in MODELS.items():
        config = tiny_config(epochs=1)
        raw = config.to_dict()
        raw["model"] |= model
        config = vaekit.RunConfig.from_dict(raw)
        vaekit.train(config, root / name, progress=False, outputs=False, data=synth)
        out[name] = root / name
    return out


def run_graph(path: Path, fmt: str, value: torch.Tensor) -> list[np.ndarray]:
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: value.numpy()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.load(str(path))
    with torch.no_grad():
        out = graph(value)
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", list(MODELS))
def test_exported_graphs_match_pytorch_at_any_batch(runs, tmp_path, name, fmt):
    report = export_run(runs[name], fmt, tmp_path / "out")
    assert all(diff <= 1e-5 for diff in report["parity"].values()), report["parity"]
    ext = ".onnx" if fmt == "onnx" else ".pt"
    names = {"encoder" + ext, "decoder" + ext, "export.json"}
    names |= {"prior" + ext} if name == "hvae" else set()
    assert {p.name for p in (tmp_path / "out").iterdir()} == names
    meta = json.loads((tmp_path / "out" / "export.json").read_text())
    assert meta["export_format"] == fmt and meta["vaekit_version"] == vaekit.__version__
    assert meta["graphs"]["encoder"]["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert meta["graphs"]["encoder"]["inputs"][0]["range"] == [0, 1]

    model = load(runs[name])
    g = torch.Generator().manual_seed(1)
    for batch in (1, 7):
        x = torch.rand(batch, 1, 8, 8, generator=g)
        z = torch.randn(batch, model.latent_dim, generator=g)
        with torch.no_grad():
            expected = {
                "encoder": model.encode(x),
                "decoder": (model.decode_mean(z), model.decode(z)),
            }
            if name == "hvae":
                expected["prior"] = (export_module.HierarchicalPrior(model)(z),)
        inputs = {"encoder": x, "decoder": z, "prior": z}
        for graph, want in expected.items():
            got = run_graph(tmp_path / "out" / f"{graph}{ext}", fmt, inputs[graph])
            assert len(got) == len(want)
            for a, b in zip(got, want, strict=True):
                assert a.shape == tuple(b.shape)
                assert np.abs(a - b.numpy()).max() <= 1e-5


SAMPLER = """
import sys, json
import numpy as np, onnxruntime
from PIL import Image
folder, png = sys.argv[1], sys.argv[2]
meta = json.load(open(folder + "/export.json"))
session = onnxruntime.InferenceSession(folder + "/decoder.onnx", providers=["CPUExecutionProvider"])
z = np.random.default_rng(0).standard_normal((16, meta["latent_dim"])).astype(np.float32)
x = session.run(["x_mean"], {"z": z})[0]
assert x.shape == (16, *meta["data_shape"]) and 0 <= x.min() and x.max() <= 1
c, h, w = meta["data_shape"]
grid = x.reshape(4, 4, h, w).transpose(0, 2, 1, 3).reshape(4 * h, 4 * w)
Image.fromarray((grid * 255).round().astype(np.uint8)).save(png)
assert "torch" not in sys.modules
print("ok")
"""


def test_onnx_decoder_samples_without_torch(runs, tmp_path):
    export_run(runs["mlp"], "onnx", tmp_path / "out")
    png = tmp_path / "grid.png"
    result = subprocess.run(
        [sys.executable, "-c", SAMPLER, str(tmp_path / "out"), str(png)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    from PIL import Image

    assert Image.open(png).size == (32, 32)


def test_cli_prints_parity_and_files(runs, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        ["export", runs["mlp"], "--format", "torchscript", "-o", out], capsys
    )
    assert code == 0, err
    assert "encoder.z_mean:" in stdout and "decoder.x_mean:" in stdout
    assert str(out / "decoder.pt") in stdout and str(out / "export.json") in stdout


@pytest.mark.parametrize(
    "args",
    [["--format", "tflite"], ["--absent-run"]],
    ids=["bad-format", "missing-run"],
)
def test_bad_format_and_missing_run_leave_nothing(runs, tmp_path, capsys, args):
    run = tmp_path / "absent" if args == ["--absent-run"] else runs["mlp"]
    extra = [] if args == ["--absent-run"] else args
    out = tmp_path / "out"
    code, _, err = run_cli(["export", run, *extra, "-o", out], capsys)
    assert_one_line_error(code, err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failed_parity_check_leaves_nothing(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    out = tmp_path / "new" / "out"
    code, _, err = run_cli(["export", runs["mlp"], "-o", out], capsys)
    assert_one_line_error(code, err)
    assert "differs from the PyTorch model" in err
    assert list(tmp_path.iterdir()) == []


def test_missing_extra_is_one_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    code, _, err = run_cli(["export", runs["mlp"], "-o", tmp_path / "out"], capsys)
    assert_one_line_error(code, err)
    assert "pip install 'vaekit[export]'" in err
    assert list(tmp_path.iterdir()) == []
