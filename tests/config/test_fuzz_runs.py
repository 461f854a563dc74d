"""Fuzzing the run-folder readers (hypothesis): config.json (RunConfig.load / from_dict),
safetensors weights and checkpoints (load_tensors), and opening a whole run folder
(models.loading.load, which goes through load_weights_into).

Whatever a file holds, the reader gives a config, tensors or a model, or a VaekitError
whose one-line message names the file, never another exception. Inputs are random bytes,
random JSON, and the files of a real tiny run broken on purpose (truncated, bit-flipped,
absurd header sizes, wrong JSON types, tensors of another dtype or shape)."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import vaekit
from helpers import check_reads_or_names_file, corrupted
from vaekit.config.runs import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE
from vaekit.config.schema import RunConfig
from vaekit.core.errors import ConfigError
from vaekit.core.files import load_tensors
from vaekit.models.loading import load

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# any JSON value: what a hand-edited or damaged config may hold where a value belongs
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def run_files(tiny_run: vaekit.Run) -> dict[str, bytes]:
    """The bytes of a finished tiny run's config, weights and checkpoint."""
    names = (CONFIG_FILE, WEIGHTS_FILE, CHECKPOINT_FILE)
    return {name: (tiny_run.path / name).read_bytes() for name in names}


# --- config.json ------------------------------------------------------------------------------
def load_config(path: Path) -> RunConfig:
    return RunConfig.load(path)


@st.composite
def edited_configs(draw, valid: dict) -> dict:
    """A valid config dict with one edit: a value replaced by any JSON, a key dropped or
    added, a section replaced by a non-object, or the whole thing nested deep."""
    raw = json.loads(json.dumps(valid))
    how = draw(st.sampled_from(["value", "drop", "add", "section", "nest"]))
    section = draw(st.sampled_from(["data", "model", "train"]))
    key = draw(st.sampled_from(sorted(raw[section])))
    if how == "value":
        raw[section][key] = draw(JSON)
    elif how == "drop":
        del raw[section][key]
    elif how == "add":
        raw[section][draw(st.text(min_size=1, max_size=6))] = draw(JSON)
    elif how == "section":
        raw[section] = draw(JSON.filter(lambda v: not isinstance(v, dict)))
    else:
        for _ in range(draw(st.integers(1, 400))):
            raw = {"model": raw} if draw(st.booleans()) else [raw]
    return raw


@FUZZ
@given(data=st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()))
def test_any_config_file_gives_a_config_or_names_the_file(data: bytes):
    with tempfile.TemporaryDirectory() as tmp:
        check_reads_or_names_file(load_config, Path(tmp) / CONFIG_FILE, data)


@FUZZ
@given(data=st.data())
def test_an_edited_config_gives_a_config_or_names_the_file(run_files, data):
    valid = run_files[CONFIG_FILE]
    edited = edited_configs(json.loads(valid)).map(lambda raw: json.dumps(raw).encode())
    text = data.draw(edited | corrupted(valid))
    with tempfile.TemporaryDirectory() as tmp:
        check_reads_or_names_file(load_config, Path(tmp) / CONFIG_FILE, text)


@FUZZ
@given(data=st.data())
def test_from_dict_gives_a_config_or_a_config_error(run_files, data):
    raw = data.draw(JSON | edited_configs(json.loads(run_files[CONFIG_FILE])))
    try:
        RunConfig.from_dict(raw, source="edited.json")
    except ConfigError as err:
        assert "edited.json" in str(err) and "\n" not in str(err), str(err)


# --- safetensors files ------------------------------------------------------------------------
def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    """(JSON header, tensor bytes) of a safetensors file."""
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join_safetensors(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "C64", "X"]


@st.composite
def edited_safetensors(draw, valid: bytes) -> bytes:
    """A valid safetensors file with its header edited: a tensor's dtype, shape or offsets,
    the vaekit metadata (any JSON, or not JSON), or an absurd header length."""
    header, body = split_safetensors(valid)
    names = sorted(k for k in header if k != "__metadata__")
    name = draw(st.sampled_from(names))
    how = draw(st.sampled_from(["dtype", "shape", "offsets", "metadata", "length"]))
    if how == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(DTYPES))
    elif how == "shape":
        header[name]["shape"] = draw(st.lists(st.integers(0, 2**40), max_size=4))
    elif how == "offsets":
        header[name]["data_offsets"] = draw(st.lists(st.integers(0, 2**64 - 1), max_size=3))
    elif how == "metadata":
        text = draw(JSON.map(json.dumps) | st.text(max_size=12))
        header["__metadata__"] = {"vaekit": text}
    else:
        text = json.dumps(header).encode()
        size = draw(st.sampled_from([0, 1, len(text) + 1, 2**31, 2**63, 2**64 - 1]))
        return struct.pack("<Q", size) + text + body
    return join_safetensors(header, body)


def safetensors_inputs(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=64), corrupted(valid), edited_safetensors(valid))


@FUZZ
@given(data=st.data(), name=st.sampled_from([WEIGHTS_FILE, CHECKPOINT_FILE]))
def test_any_tensor_file_gives_tensors_or_names_the_file(run_files, data, name: str):
    raw = data.draw(safetensors_inputs(run_files[name]))
    with tempfile.TemporaryDirectory() as tmp:
        check_reads_or_names_file(load_tensors, Path(tmp) / name, raw)


# --- a whole run folder -----------------------------------------------------------------------
@st.composite
def changed_weights(draw, valid: bytes) -> bytes:
    """The run's weights saved again with one tensor changed: another dtype, another shape,
    NaN values, or dropped, or an extra tensor."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / WEIGHTS_FILE
        path.write_bytes(valid)
        tensors, meta = load_tensors(path)
        name = draw(st.sampled_from(sorted(tensors)))
        how = draw(st.sampled_from(["dtype", "shape", "nan", "drop", "extra"]))
        if how == "dtype":
            dtype = draw(
                st.sampled_from(
                    [
                        torch.float16,
                        torch.bfloat16,
                        torch.float64,
                        torch.int64,
                        torch.uint8,
                        torch.bool,
                        torch.float8_e4m3fn,
                    ]
                )
            )
            tensors[name] = tensors[name].to(dtype)
        elif how == "shape":
            tensors[name] = torch.zeros(draw(st.lists(st.integers(0, 5), max_size=3)))
        elif how == "nan":
            tensors[name] = torch.full_like(tensors[name], float("nan"))
        elif how == "drop":
            del tensors[name]
        else:
            tensors["extra.weight"] = torch.zeros(2)
        save_file(tensors, str(path), metadata={"vaekit": json.dumps(meta)})
        return path.read_bytes()


@FUZZ
@given(data=st.data(), name=st.sampled_from([WEIGHTS_FILE, CHECKPOINT_FILE]))
def test_a_run_folder_with_damaged_weights_loads_or_names_the_file(
    tiny_run, run_files, data, name: str
):
    valid = run_files[name]
    inputs = safetensors_inputs(valid)
    if name == WEIGHTS_FILE:
        inputs = inputs | changed_weights(valid)
    raw = data.draw(inputs)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(tiny_run.path, run)
        if name == CHECKPOINT_FILE:  # without final weights the checkpoint's are loaded
            (run / WEIGHTS_FILE).unlink()
        check_reads_or_names_file(lambda _: load(run), run / name, raw)
