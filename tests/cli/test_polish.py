"""The command line's polish and the package's metadata: defaults in every --help, model and
dataset lists from the registries, shell completion, install docs, the license, py.typed,
the Python versions declared against those tested, and the docs in the sdist."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from helpers import run_cli
from vaekit.apps.compare import VARIANTS
from vaekit.cli import make_parser
from vaekit.data.registry import DATASETS
from vaekit.models.registry import MODELS

ROOT = Path(__file__).resolve().parents[2]
TESTED_PYTHONS = {"3.11"}  # what CI runs (.ci/run); the classifiers must say exactly these


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = make_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def option_blocks(help_text: str) -> dict[str, str]:
    """First option string -> the help text block that describes it."""
    blocks: dict[str, str] = {}
    current = None
    for line in help_text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            blocks[current] = line
        elif current and line.startswith("   "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def test_every_help_shows_every_default():
    for name, parser in commands().items():
        blocks = option_blocks(parser.format_help())
        for action in parser._actions:
            default = getattr(action, "shown_default", action.default)
            if not action.option_strings or default in (None, False, [], argparse.SUPPRESS):
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            block = blocks[action.option_strings[0]]
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
            assert "default" in block or says(block, shown), (name, block)


def says(block: str, value: str) -> bool:
    """Whether a help block gives `value` in parentheses, "(0.1)" (numbers as numbers)."""
    for given in re.findall(r"\(([^()]*)\)", block):
        try:
            if given.strip() == value or float(given) == float(value):
                return True
        except ValueError:
            continue
    return False


def test_config_flags_show_the_default_config_in_help(capsys):
    code, out, _ = run_cli(["train", "--help"], capsys)
    blocks = option_blocks(out)
    assert code == 0
    assert "default: 10" in blocks["--epochs"] and "default: 0.001" in blocks["--lr"]
    assert "default: 128" in blocks["--batch-size"]


def test_model_and_dataset_lists_come_from_the_registries(capsys, tmp_path):
    train = option_blocks(commands()["train"].format_help())
    assert all(name in train["--model"] for name in MODELS)
    assert all(name in train["--dataset"] for name in DATASETS)
    compare = option_blocks(commands()["compare"].format_help())
    assert all(name in compare["--models"] for name in VARIANTS)
    code, _, err = run_cli(["train", "--model", "gan", "--out", tmp_path / "r"], capsys)
    assert code == 2 and ", ".join(sorted(MODELS)) in err
    code, _, err = run_cli(["train", "--dataset", "nope", "--out", tmp_path / "r"], capsys)
    assert code == 2 and ", ".join(sorted(DATASETS)) in err


def test_the_docs_list_the_registered_models_and_compare_names():
    readme = (ROOT / "README.md").read_text()
    (listed,) = re.findall(r"`--model ([\w|-]+)`", readme)
    assert set(listed.split("|")) == set(MODELS)
    models_doc = (ROOT / "docs" / "models.md").read_text()
    (row,) = [line for line in models_doc.splitlines() if line.startswith("| model | `--model`")]
    assert set(re.findall(r"`([\w-]+)`", row.split("|")[3])) == set(MODELS)
    (names,) = re.findall(r"Names: (.*?)\.\n", models_doc, re.S)
    assert set(re.findall(r"`([\w-]+)`", names)) == set(VARIANTS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_and_options(tmp_path, capsys):
    code, script, _ = run_cli(["completion", "bash"], capsys)
    assert code == 0
    (tmp_path / "vaekit.bash").write_text(script)
    probe = (
        f"source {tmp_path / 'vaekit.bash'}; "
        "COMP_WORDS=(vaekit tr); COMP_CWORD=1; _shtab_vaekit; echo ${COMPREPLY[@]}; "
        "COMP_WORDS=(vaekit evaluate --no-q); COMP_CWORD=2; _shtab_vaekit; echo ${COMPREPLY[@]}"
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    commands_line, option_line = result.stdout.splitlines()
    assert set(commands_line.split()) == {"train", "traverse"}
    assert option_line.split() == ["--no-quality"]


def test_zsh_completion_is_a_compdef(capsys):
    code, script, _ = run_cli(["completion", "zsh"], capsys)
    assert code == 0 and script.startswith("#compdef vaekit")
    assert "--no-quality" in script and "evaluate" in script


def test_the_readme_says_how_to_install_a_cpu_or_a_cuda_torch():
    readme = (ROOT / "README.md").read_text()
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert re.search(r"--index-url https://download.pytorch.org/whl/cu\d+", readme)
    assert "Tested: Python 3.11" in readme


def test_license_and_py_typed_ship_with_the_package():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert (ROOT / "src" / "vaekit" / "py.typed").is_file()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["vaekit"]


def test_declared_python_versions_are_the_tested_ones():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert declared == TESTED_PYTHONS
    assert project["requires-python"] == f">={min(TESTED_PYTHONS)}"
    assert f"{sys.version_info.major}.{sys.version_info.minor}" in declared  # this run counts


@pytest.mark.slow
def test_the_sdist_holds_the_docs_license_tests_and_py_typed(tmp_path):
    """Built from a copy of the files git would commit (tracked or new, not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp_path / "src-tree"
    for name in listed.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    build = subprocess.run(
        [
            sys.executable,
            "-c",
            "from setuptools import build_meta as b; print(b.build_sdist('dist'))",
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    archive = source / "dist" / build.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for doc in ("docs/evaluation.md", "docs/explore.md", "docs/models.md", "docs/architecture.png"):
        assert doc in names, doc
    assert {"LICENSE", "README.md", "src/vaekit/py.typed", "tests/conftest.py"} <= names
    assert not any("__pycache__" in name for name in names)
