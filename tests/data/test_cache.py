"""The memory-mapped cache of large image folders and .npy files (data/cache.py): same
examples and same training as in memory, built once, rebuilt when the files change,
never left half-written; and image folders whose own path passes through a hidden folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import vaekit
from helpers import assert_one_line_error, assert_same_weights, run_cli, save_png
from vaekit.config import DataConfig
from vaekit.core.errors import ConfigError, DataError
from vaekit.data import batches, cache, folder
from vaekit.data.arrays import read_arrays, read_items
from vaekit.data.registry import load_data


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch) -> Path:
    """Every cache of these tests under tmp_path/cache ($VAEKIT_CACHE)."""
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def colour_folder(root: Path, n: int = 40, classes: int = 2) -> Path:
    """n random 6x5 RGB images in `classes` class sub-folders."""
    for i in range(n):
        save_png(root / f"c{i % classes}" / f"{i:03d}.png", size=(6, 5), mode="RGB", seed=i)
    return root


def folder_config(root: Path, **options) -> DataConfig:
    return DataConfig(name="folder", path=str(root), **options)


def cached_folders(home: Path) -> list[Path]:
    return [p for p in (home / "examples").iterdir() if p.is_dir()]


def in_file_order(items) -> torch.Tensor:
    """The examples of cached Items (training split first) in the folder's file order."""
    return items.storage[torch.tensor(np.argsort(items.ids, kind="stable"))]


def test_cached_splits_equal_in_memory_and_are_views_of_the_file(tmp_path, cache_home):
    root = colour_folder(tmp_path / "data")
    memory = load_data(folder_config(root, cache="off"))
    cached = load_data(folder_config(root, cache="on"))
    for split in ("train", "test"):
        a, b = getattr(memory, split), getattr(cached, split)
        assert torch.equal(a.storage, b.storage) and torch.equal(a.y, b.y)
    assert cached.train.storage.dtype == torch.uint8
    whole = 40 * 3 * 6 * 5  # bytes of every example: each split is a view of all of them
    for part in (cached.train, cached.test, cached.train.head(5)):
        assert part.storage.untyped_storage().nbytes() == whole
    if Path("/proc/self/maps").exists():  # and they are the file's pages, memory-mapped
        address = cached.train.storage.untyped_storage().data_ptr()
        mapped = [line for line in Path("/proc/self/maps").read_text().splitlines()]
        spans = [line.split()[0].split("-") + [line] for line in mapped]
        (line,) = [t for a, b, t in spans if int(a, 16) <= address < int(b, 16)]
        assert line.endswith(cache.PIXELS)
    (built,) = cached_folders(cache_home)
    manifest = json.loads((built / cache.MANIFEST).read_text())
    assert manifest["shape"] == [40, 3, 6, 5] and len(manifest["files"]) == 40


def test_training_from_the_cache_gives_the_same_weights(tmp_path):
    root = colour_folder(tmp_path / "data")
    for mode in ("off", "on"):
        config = vaekit.RunConfig.from_dict(
            {
                "data": {"name": "folder", "path": str(root), "cache": mode},
                "model": {"hidden": [8], "latent_dim": 2},
                "train": {"epochs": 2, "batch_size": 8, "seed": 3},
            }
        )
        vaekit.train(config, tmp_path / mode, progress=False, outputs=False)
    assert_same_weights(
        tmp_path / "off" / "model.safetensors", tmp_path / "on" / "model.safetensors"
    )


def test_cache_is_reused_and_rebuilt_when_files_or_options_change(tmp_path, monkeypatch):
    root = colour_folder(tmp_path / "data", n=12)
    first = read_items(folder_config(root, cache="on")).storage.clone()
    decoded = []
    original = folder.decode_chunk
    monkeypatch.setattr(
        folder, "decode_chunk", lambda paths, *a: decoded.append(len(paths)) or original(paths, *a)
    )
    assert torch.equal(read_items(folder_config(root, cache="on")).storage, first)
    assert decoded == []  # read from the cache, nothing decoded
    changed = save_png(root / "c0" / "000.png", size=(6, 5), mode="RGB", seed=99)
    os.utime(changed, ns=(1, 1))  # another size or time: the manifest no longer matches
    items = read_items(folder_config(root, cache="on"))
    assert sum(decoded) == 12
    assert not torch.equal(items.storage, first)
    assert torch.equal(in_file_order(items), read_items(folder_config(root, cache="off")).storage)
    save_png(root / "c1" / "new.png", size=(6, 5), mode="RGB", seed=5)  # a file added
    assert len(read_items(folder_config(root, cache="on")).ids) == 13
    resized = read_items(folder_config(root, cache="on", resize=[4, 4]))  # options changed
    assert resized.storage.shape == (13, 3, 4, 4)
    decoded.clear()
    for damaged in ("[]", "{", ""):  # a damaged manifest is a stale cache: rebuilt
        (cache.cache_folder(root) / cache.MANIFEST).write_text(damaged)
        assert torch.equal(
            read_items(folder_config(root, cache="on", resize=[4, 4])).storage, resized.storage
        )
    assert sum(decoded) == 3 * 13


def test_interrupted_build_leaves_no_cache(tmp_path, cache_home, monkeypatch):
    root = colour_folder(tmp_path / "data", n=20)
    monkeypatch.setattr(folder, "DECODE_CHUNK", 4)

    def interrupted(self, rows):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(cache.NpySink, "write", interrupted)
        with pytest.raises(KeyboardInterrupt):
            read_items(folder_config(root, cache="on"))
    assert cached_folders(cache_home) == []  # neither a cache nor a temporary folder
    assert read_items(folder_config(root, cache="on")).storage.shape == (20, 3, 6, 5)


def test_parallel_decode_matches_and_names_a_bad_file(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for i in range(9):  # greyscale first: colour auto switches to RGB at the colour image
        save_png(root / f"{i:02d}.png", size=(6, 5), mode="L", seed=i)
    save_png(root / "09.png", size=(6, 5), mode="RGB", seed=9)
    monkeypatch.setattr(folder, "PARALLEL_FROM", 1)
    monkeypatch.setattr(folder, "DECODE_CHUNK", 3)
    monkeypatch.setattr(folder, "worker_count", lambda: 2)
    items = read_items(folder_config(root, cache="off"))
    assert items.storage.shape == (10, 3, 6, 5)
    grey = np.asarray(folder.read_image(root / "00.png"))
    assert all(np.array_equal(items.storage[0, c].numpy(), grey) for c in range(3))
    save_png(root / "05.png", size=(7, 5), mode="L", seed=5)  # another size, in a worker
    with pytest.raises(DataError, match=r"05\.png: image is 5x7 pixels"):
        read_items(folder_config(root, cache="on"))


def test_auto_caches_only_large_folders(tmp_path, cache_home, monkeypatch):
    root = colour_folder(tmp_path / "data", n=6)
    read_items(folder_config(root))
    assert not (cache_home / "examples").exists()
    monkeypatch.setattr(cache, "AUTO_MIN_EXAMPLES", 5)
    read_items(folder_config(root))
    assert len(cached_folders(cache_home)) == 1
    with pytest.raises(ConfigError, match="data.cache must be one of"):
        read_items(folder_config(root, cache="always"))


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch, capsys):
    root = colour_folder(tmp_path / "data", n=4)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("VAEKIT_CACHE", str(tmp_path / "file"))
    with pytest.raises(DataError, match="cannot write the data cache.*--cache off"):
        read_items(folder_config(root, cache="on"))
    code, _, err = run_cli(["train", "--data", root, "--cache", "on", "--epochs", "1"], capsys)
    assert_one_line_error(code, err)


def test_large_npy_through_the_cache(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 5, 4, 3), dtype=np.uint8)  # (N, H, W, C)
    np.save(tmp_path / "images.npy", images)
    path = str(tmp_path / "images.npy")
    memory = load_data(DataConfig(name="array", path=path, cache="off"))
    cached = load_data(DataConfig(name="array", path=path, cache="on"))
    assert cached.train.storage.shape == (27, 3, 5, 4) and cached.train.storage.dtype == torch.uint8
    assert torch.equal(memory.train.storage, cached.train.storage)
    assert torch.equal(memory.test.storage, cached.test.storage)
    values = rng.random((30, 6))
    values[17, 2] = np.inf
    np.save(tmp_path / "bad.npy", values)
    with pytest.raises(DataError, match=r"value inf at index \[17, 2\]"):
        read_arrays(DataConfig(name="array", path=str(tmp_path / "bad.npy"), cache="on"))


def test_folder_under_a_hidden_folder_is_read(tmp_path):
    root = tmp_path / ".cache" / "datasets" / "pets"  # e.g. downloaded under ~/.cache
    for i in range(3):
        save_png(root / "cats" / f"{i}.png", seed=i)
        save_png(root / "dogs" / f"{i}.png", seed=10 + i)
    save_png(root / "dogs" / ".thumbs" / "0.png")  # hidden inside the folder: left out
    save_png(root / "cats" / ".hidden.png")
    items = read_items(folder_config(root))
    assert items.classes == ["cats", "dogs"] and len(items.ids) == 6
    assert not any("." in Path(i).parent.as_posix() for i in items.ids)


def resident_file_mib() -> float:
    """This process's resident pages that are file-backed (RssFile), in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile line")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_batches_of_a_mapped_cache_keep_resident_memory_flat(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (4096, 3, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "pixels.npy", pixels)  # 48 MiB
    expected = torch.from_numpy(pixels).float().sum()
    for release_bytes, bound in (
        (2**22, lambda grown: grown < 16),
        (2**40, lambda grown: grown > 40),
    ):
        monkeypatch.setattr(cache, "RELEASE_BYTES", release_bytes)
        x = cache.map_npy(tmp_path / "pixels.npy")
        before = resident_file_mib()
        total = sum(batch.sum() * 255 for batch, _ in batches.BatchIterator(x, None, 256).epoch(0))
        assert bound(resident_file_mib() - before)  # kept under 4 MiB of mapped files, or never
        assert torch.isclose(total, expected, rtol=1e-6)
        del x
