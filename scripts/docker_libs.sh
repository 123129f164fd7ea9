#!/usr/bin/env bash
# Used by the Docker build stages: moves the torch wheel's libraries that a lits binary
# loads out of .venv into DEST, keeping their layout below site-packages (torch/lib,
# nvidia/*/lib) so the libraries' own run paths ($ORIGIN/../../nvidia/...) still hold, and
# leaves symbolic links behind so the build can still link against .venv/libtorch. Then it
# removes from site-packages what the build does not need (torch's Python code, the rest of
# the nvidia-* wheels, triton...): .venv keeps torch's headers and the libraries' links.
#
#   scripts/docker_libs.sh cpu|cuda DEST
#
# cpu:  libtorch_cpu, libc10 and what they load (libgomp, the CUDA runtime and CUPTI).
# cuda: that, libtorch_cuda and every library of the wheel it loads, plus the ones it opens
#       at run time (libtorch_cuda_linalg, cuDNN's engine libraries, NVRTC).
set -euo pipefail

die() { echo "docker_libs: error: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: scripts/docker_libs.sh cpu|cuda DEST"
kind=$1
dest=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
sp=$(dirname "$(readlink -f "$root/.venv/libtorch")")
[ -f "$sp/torch/lib/libtorch_cpu.so" ] || die "no torch wheel under $sp: run scripts/setup.sh first"

shopt -s nullglob
roots=("$sp/torch/lib/libtorch_cpu.so" "$sp/torch/lib/libc10.so")
case "$kind" in
  cpu) ;;
  cuda)
    roots+=("$sp/torch/lib/libtorch_cuda.so" "$sp/torch/lib/libtorch_cuda_linalg.so"
      "$sp/torch/lib/libcaffe2_nvrtc.so" "$sp"/nvidia/cudnn/lib/lib*.so*
      "$sp"/nvidia/*/lib/libnvrtc-builtins.so.*) ;;
  *) die "the first argument must be cpu or cuda, not '$kind'" ;;
esac

# The roots and every library of the wheel they load (ldd follows the run paths).
mapfile -t libs < <(
  for f in "${roots[@]}"; do
    echo "$f"
    ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
  done | while read -r f; do readlink -f "$f"; done | grep -F "$sp/" | sort -u
)
for f in "${libs[@]}"; do
  rel=${f#"$sp"/}
  mkdir -p "$dest/$(dirname "$rel")"
  mv "$f" "$dest/$rel"
  ln -s "$dest/$rel" "$f"
done
echo "docker_libs: moved ${#libs[@]} libraries ($(du -sh "$dest" | cut -f1)) to $dest"

# The links under nvidia/ stay: the linker follows libtorch's run paths through them.
find "$sp" -mindepth 1 -maxdepth 1 ! -name torch ! -name nvidia -exec rm -rf {} +
find "$sp/nvidia" ! -type l ! -type d -delete
find "$sp/torch" -mindepth 1 -maxdepth 1 ! -name include ! -name lib ! -name share ! -name build-version \
  -exec rm -rf {} +
echo "docker_libs: .venv keeps $(du -sh "$sp" | cut -f1) (torch's headers and library links)"
