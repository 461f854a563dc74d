"""The docs' examples run: every ```python block marked `<!-- ci: run -->` in docs/*.md,
in an empty folder, and the custom-network module of docs/own-data.md."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import vaekit
from vaekit.nn import ARCHS

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKED = re.compile(r"<!-- ci: run -->\s*```python\n(.*?)```", re.S)


def marked_blocks() -> list[tuple[str, str]]:
    return [
        (f"{page.name}#{k}", code)
        for page in sorted(DOCS.glob("*.md"))
        for k, code in enumerate(MARKED.findall(page.read_text()))
    ]


def test_there_are_marked_examples():
    assert any(name.startswith("own-data.md") for name, _ in marked_blocks())


@pytest.mark.slow
@pytest.mark.parametrize(("name", "code"), marked_blocks(), ids=[n for n, _ in marked_blocks()])
def test_marked_example_runs(name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, name, "exec"), {"__name__": "__main__"})


def test_the_custom_network_example_trains(tmp_path, monkeypatch):
    page = (DOCS / "own-data.md").read_text()
    code = re.search(r"```python\n# my_nets.py\n(.*?)```", page, re.S).group(1)
    try:
        exec(compile(code, "own-data.md: my_nets.py", "exec"), {})
        images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
        vae = vaekit.VAE(latent_dim=2, arch="smallconv", hidden=(), epochs=1, progress=False)
        vae.fit(images, run_dir=tmp_path / "r")
        assert vae.reconstruct(images[:2]).shape == (2, 1, 28, 28)
    finally:
        ARCHS.pop("smallconv", None)
