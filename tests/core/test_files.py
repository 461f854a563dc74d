"""Files: weights and checkpoints are safetensors (never unpickled), writes are atomic and a failed write is one clear error."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch

import vaekit
from vaekit.core.errors import RunError, VaekitError


class Payload:
    """Unpickling this creates the marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_weights_and_checkpoints_are_safetensors(tiny_run):
    for name in ("model.safetensors", "checkpoint.safetensors"):
        raw = (tiny_run.path / name).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + header_len])
        assert "__metadata__" in header and "vaekit" in header["__metadata__"]


@pytest.mark.parametrize("target", ["model.safetensors", "checkpoint.safetensors"])
def test_a_pickle_in_place_of_weights_is_refused_and_not_executed(
    tiny_run, synth, tmp_path, target
):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"state_dict": Payload(marker)})
    pickle.loads(evil)  # the payload works: loading it with pickle creates the marker
    assert marker.exists()
    marker.unlink()

    copy = shutil.copytree(tiny_run.path, tmp_path / "copy")
    (copy / target).write_bytes(evil)
    torch.save({"state_dict": Payload(marker)}, tmp_path / "evil.pt")  # torch's own format
    for evil_file in (None, tmp_path / "evil.pt"):
        if evil_file is not None:
            shutil.copy(evil_file, copy / target)
        with pytest.raises(RunError, match=f"{target}: not a readable safetensors file"):
            if target == "model.safetensors":
                vaekit.load(copy)
            else:
                vaekit.train(resume=copy, progress=False, outputs=False, data=synth)
    assert not marker.exists()


def test_a_failed_write_is_one_clear_error(tmp_path, monkeypatch):
    target = tmp_path / "notes.txt"
    target.write_text("old")

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(VaekitError, match=r"notes.txt: write failed \(Permission denied\)"):
        vaekit.core.files.atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [
        "notes.txt"
    ]
