#!/usr/bin/env bash
# Installs what lits needs to build and test into the project-local .venv:
# torch 2.11.0 from PyPI (its libtorch is what lits links) and the pinned test peers.
# Idempotent: when .venv already matches requirements.txt it returns in about a second.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
req="$root/requirements.txt"
stamp="$venv/.lits-requirements.sha256"
python=${PYTHON:-python3}

die() { echo "setup: error: $*" >&2; exit 1; }

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$venv/libtorch/build-version" ] \
    && [ -f "$venv/libtorch/include/torch/csrc/api/include/torch/torch.h" ]; then
  echo "setup: .venv is up to date (torch $(cat "$venv/libtorch/build-version"))"
  exit 0
fi

command -v "$python" >/dev/null 2>&1 || die "$python not found; install Python 3.10 or newer (or set PYTHON=/path/to/python3)"
"$python" - <<'PY' || die "Python 3.10 or newer is required, found $("$python" --version 2>&1)"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
"$python" -c 'import venv, ensurepip' 2>/dev/null \
  || die "$python lacks the venv/ensurepip modules (on Debian/Ubuntu: apt-get install python3-venv)"

if [ ! -x "$venv/bin/python" ]; then
  # torch with its CUDA wheels needs about 5 GB; ask for 8 to leave room for the build.
  free_kb=$(df -Pk "$root" | awk 'NR == 2 { print $4 }')
  [ "$free_kb" -ge $((8 * 1024 * 1024)) ] \
    || die "need at least 8 GB free under $root for torch and its CUDA libraries, have $((free_kb / 1024 / 1024)) GB"
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip --version >/dev/null 2>&1 || die "pip does not work in $venv; remove it and run again"

echo "setup: installing requirements.txt into .venv (torch with CUDA libraries: a few minutes the first time)"
"$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" \
  || die "pip install failed (see above); nothing was changed outside .venv"

torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
  || die "torch does not import in $venv"
# The wheel stores no build-version file; torch-sys reads it to check the version.
"$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' > "$torch_dir/build-version"
ln -sfn "$torch_dir" "$venv/libtorch"
echo "$want" > "$stamp"
echo "setup: done (torch $(cat "$venv/libtorch/build-version") at .venv/libtorch)"
