#!/usr/bin/env bash
# Installs what lits needs to build and test into the project-local .venv:
# torch 2.11.0 from PyPI (its libtorch is what lits links) and the pinned test peers.
# In full mode it also puts the real-CT smoke check's scan (tests/real_ct.rs) at
# .venv/share/lits/real-ct/lung2_image.nii.gz: pyradiomics 3.0.1's data/lung2_image.nrrd,
# from its source distribution on PyPI (sha256-pinned), as NIfTI (scripts/real_ct.py).
# Idempotent: when .venv already matches requirements.txt it returns in about a second.
#
# LITS_SETUP picks what goes in (the Docker images' build stages use the narrower ones):
#   full       (default) torch with its CUDA libraries and the test peers
#   torch      torch with its CUDA libraries only
#   torch-cpu  the torch wheel alone (no dependencies: it is not importable) and the two CUDA
#              libraries that libtorch_cpu loads (runtime, CUPTI), at torch's own pins; enough
#              to build and run a CPU-only lits (LITS_TORCH_CUDA=0, see build/torch_link.rs)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
req="$root/requirements.txt"
stamp="$venv/.lits-requirements.sha256"
python=${PYTHON:-python3}
mode=${LITS_SETUP:-full}

die() { echo "setup: error: $*" >&2; exit 1; }

real_ct="$venv/share/lits/real-ct/lung2_image.nii.gz"
# The Docker images' narrower modes build and run lits without the test suite: no scan.
fetch_real_ct() {
  if [ "$mode" != full ] || [ -f "$real_ct" ]; then return 0; fi
  echo "setup: fetching the real-CT test scan (pyradiomics 3.0.1 source distribution, 34 MB, from PyPI)"
  "$venv/bin/python" "$root/scripts/real_ct.py" fetch "$real_ct" \
    || die "could not put the real-CT test scan at $real_ct (see above)"
}

case "$mode" in
  full) want=$(sha256sum "$req" | cut -d' ' -f1) ;;
  torch | torch-cpu) want=$( (echo "$mode"; cat "$req") | sha256sum | cut -d' ' -f1) ;;
  *) die "LITS_SETUP must be full, torch or torch-cpu, not '$mode'" ;;
esac
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$venv/libtorch/build-version" ] \
    && [ -f "$venv/libtorch/include/torch/csrc/api/include/torch/torch.h" ]; then
  # A .venv set up before the scan was part of it gets the scan now.
  fetch_real_ct
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

pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
torch_req=$(grep -E '^torch==' "$req") || die "requirements.txt pins no torch==VERSION"
case "$mode" in
  full)
    echo "setup: installing requirements.txt into .venv (torch with CUDA libraries: a few minutes the first time)"
    "${pip[@]}" -r "$req" || die "pip install failed (see above); nothing was changed outside .venv" ;;
  torch)
    echo "setup: installing $torch_req with its CUDA libraries into .venv"
    "${pip[@]}" "$torch_req" || die "pip install failed (see above); nothing was changed outside .venv" ;;
  torch-cpu)
    echo "setup: installing $torch_req without dependencies, and its CUDA runtime and CUPTI, into .venv"
    "${pip[@]}" --no-deps "$torch_req" || die "pip install failed (see above); nothing was changed outside .venv"
    # torch pins its CUDA libraries through one cuda-toolkit requirement; take its version.
    cuda_req=$("$venv/bin/python" - <<'PY'
import importlib.metadata, re
for r in importlib.metadata.requires("torch") or []:
    m = re.match(r"cuda-toolkit\[[^]]*\](==[^;\s]+)", r)
    if m:
        print(f"cuda-toolkit[cudart,cupti]{m.group(1)}")
PY
)
    [ -n "$cuda_req" ] || die "the installed torch names no cuda-toolkit requirement"
    # torch lacks its Python dependencies here, on purpose: no warning about them.
    "${pip[@]}" --no-warn-conflicts "$cuda_req" || die "pip install failed (see above); nothing was changed outside .venv" ;;
esac

if [ "$mode" = torch-cpu ]; then
  # Without its dependencies torch does not import: locate it and read its version from the
  # package metadata instead.
  torch_dir=$("$venv/bin/python" -c 'import importlib.util; print(importlib.util.find_spec("torch").submodule_search_locations[0])') \
    || die "torch is not installed in $venv"
  torch_version=$("$venv/bin/python" -c 'import importlib.metadata; print(importlib.metadata.version("torch").split("+")[0])')
else
  torch_dir=$("$venv/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))') \
    || die "torch does not import in $venv"
  torch_version=$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
fi
# The wheel stores no build-version file; torch-sys reads it to check the version.
echo "$torch_version" > "$torch_dir/build-version"
ln -sfn "$torch_dir" "$venv/libtorch"
echo "$want" > "$stamp"
fetch_real_ct
echo "setup: done (torch $(cat "$venv/libtorch/build-version") at .venv/libtorch)"
