#!/usr/bin/env bash
# Build the MOSES benchmark environment: a separate virtual environment with
# MOSES's own code (`molsets`: moses.metrics, moses.vae, the data files) and the
# old libraries it needs. These pins live here only, never in vaekit's
# requirements.
#
#   bash benchmarks/moses_env.sh [DIR]      # default DIR: /work/moses-venv
#
# Idempotent: a second run finds everything in place and changes nothing.
# It prints what it did. Everything comes from the package registry at build
# time; nothing downloads at run time (fcd_torch ships its ChemNet weights,
# molsets ships the MOSES SMILES files and the precomputed test statistics).
#
# Why each pin:
#   torch==2.13.0      the CPU wheel that lies on this machine's disk; a bare
#                      `torch` would make pip fetch a CUDA build of several GB,
#                      so it is installed first and checked with --dry-run.
#   numpy==1.26.4      < 2: pandas 1.x and MOSES's pickled test statistics.
#   pandas==1.5.3      < 2: moses/metrics/utils.py calls DataFrame.append.
#   rdkit==2024.3.6    a wheel that runs on numpy 1.x and still has the old
#                      fingerprint call MOSES uses (AllChem.GetMorganFingerprint-
#                      AsBitVect; deprecated, its warning goes to RDKit's log,
#                      which MOSES silences). Checked: its Morgan fingerprints,
#                      logP, QED and SA equal the statistics MOSES ships for the
#                      test set (2,000 molecules compared, all equal).
#   fcd_torch==1.0.7   FCD/Test; ships ChemNet_v0.13_pretrained.pt.
#   molsets==0.3.1     MOSES itself, with --no-deps: its declared deps pin
#                      pomegranate==0.12 (only moses.baselines uses it) and
#                      would drag in more; what moses.metrics and moses.vae
#                      import is listed here instead.
#   scipy, tqdm, matplotlib   imported by moses.metrics / moses.vae / moses.utils.
# rdkit.six is gone from current RDKit (2024.03 has none); MOSES's SA scorer imports
# `from rdkit.six import iteritems`, so a small shim module is written into
# the venv's rdkit package.
set -euo pipefail

DIR="${1:-/work/moses-venv}"
PYTHON="${PYTHON:-python3.11}"
TORCH="torch==2.13.0"
PINS=(
  "numpy==1.26.4"
  "pandas==1.5.3"
  "scipy==1.17.1"
  "rdkit==2024.3.6"
  "fcd_torch==1.0.7"
  "tqdm==4.70.1"
  "matplotlib==3.11.2"
)
MOSES="molsets==0.3.1"

say() { printf '[moses_env] %s\n' "$*"; }
# pip prints one warning per missing local index folder; hide only those lines.
quiet_pip() { "$DIR/bin/pip" "$@" 2>&1 | grep -v "^WARNING: Location 'file://" || true; }

# 1. The virtual environment.
if [[ -x "$DIR/bin/python" ]]; then
  say "venv exists: $DIR ($("$DIR/bin/python" --version))"
else
  command -v "$PYTHON" >/dev/null || { say "error: $PYTHON not found (set PYTHON=...)"; exit 2; }
  say "creating venv $DIR with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$DIR"
fi
PY="$DIR/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { say "error: $DIR is not a Python 3.11 venv"; exit 2; }

# 2. torch: the local CPU wheel, never a CUDA build.
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.__version__ == "2.13.0+cpu" else 1)' 2>/dev/null; then
  say "torch 2.13.0+cpu already installed"
else
  plan="$(quiet_pip install --dry-run "$TORCH")"
  if ! grep -q 'Would install.*torch-2\.13\.0+cpu' <<<"$plan" || grep -qi 'nvidia' <<<"$plan"; then
    printf '%s\n' "$plan" | tail -5
    say "error: pip would not take the CPU wheel of $TORCH; refusing to install"
    exit 1
  fi
  say "installing $TORCH (CPU wheel, checked with --dry-run)"
  quiet_pip install -q "$TORCH"
fi

# 3. The libraries MOSES imports, pinned (torch named again so nothing replaces it).
plan="$(quiet_pip install --dry-run "$TORCH" "${PINS[@]}")"
if grep -qiE 'Would install.*( torch-|nvidia)' <<<"$plan"; then
  printf '%s\n' "$plan" | tail -5
  say "error: installing the pins would replace torch or pull CUDA packages; refusing"
  exit 1
fi
if grep -q '^Would install' <<<"$plan"; then
  say "installing: $(grep '^Would install' <<<"$plan" | cut -d' ' -f3-)"
  quiet_pip install -q "$TORCH" "${PINS[@]}"
else
  say "pinned libraries already installed"
fi

# 4. MOSES itself, without its declared dependencies.
if [[ "$("$PY" -m pip show molsets 2>/dev/null | awk '/^Version:/{print $2}')" == "0.3.1" ]]; then
  say "molsets 0.3.1 already installed"
else
  say "installing $MOSES --no-deps"
  quiet_pip install -q --no-deps "$MOSES"
fi

# 5. The rdkit.six shim (only where RDKit has no six module of its own).
SHIM="$("$PY" -c 'import os, rdkit; print(os.path.join(os.path.dirname(rdkit.__file__), "six.py"))')"
SHIM_MARK="# vaekit benchmarks/moses_env.sh shim"
NEW_SHIM="$(mktemp)"
cat >"$NEW_SHIM" <<EOF
$SHIM_MARK
"""A stand-in for rdkit.six, which current RDKit releases no longer ship.

MOSES (moses/metrics/SA_Score/sascorer.py) still does
\`from rdkit.six import iteritems\`; this gives it the few Python 3 names of
the old module.
"""

PY2 = False
PY3 = True
string_types = (str,)
integer_types = (int,)
class_types = (type,)
text_type = str
binary_type = bytes
range = range
next = next


def iteritems(d, **kwargs):
    return iter(d.items(**kwargs))


def iterkeys(d, **kwargs):
    return iter(d.keys(**kwargs))


def itervalues(d, **kwargs):
    return iter(d.values(**kwargs))
EOF
if [[ -f "$SHIM" ]] && ! grep -q "$SHIM_MARK" "$SHIM"; then
  say "RDKit ships its own rdkit.six: leaving it alone"
  rm -f "$NEW_SHIM"
elif [[ -f "$SHIM" ]] && cmp -s "$NEW_SHIM" "$SHIM"; then
  say "rdkit.six shim already in place: $SHIM"
  rm -f "$NEW_SHIM"
else
  mv "$NEW_SHIM" "$SHIM" && chmod 644 "$SHIM"
  say "wrote rdkit.six shim $SHIM"
fi

# 6. Check: everything the benchmark scripts use imports, offline.
"$PY" - <<'EOF'
import warnings

warnings.filterwarnings("ignore")
import fcd_torch, moses, moses.metrics, moses.vae, numpy, pandas, rdkit, scipy, torch
from moses.vae.config import get_parser

assert torch.version.cuda is None, "torch is a CUDA build"
assert numpy.__version__.startswith("1."), numpy.__version__
assert pandas.__version__.startswith("1."), pandas.__version__
get_parser().parse_args([])
print(
    f"[moses_env] ok: python {__import__('sys').version.split()[0]}, torch {torch.__version__}, "
    f"numpy {numpy.__version__}, pandas {pandas.__version__}, scipy {scipy.__version__}, "
    f"rdkit {rdkit.__version__}, molsets {moses.__version__}, fcd_torch imported"
)
EOF
say "use: $PY benchmarks/moses_metrics.py --help ; $PY benchmarks/moses_baseline.py --help"
