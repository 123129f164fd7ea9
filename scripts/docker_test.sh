#!/usr/bin/env bash
# Builds the CPU and CUDA images and runs them:
#   CPU:  `lits env --json`; the quick start for one epoch with /runs mounted, as an
#         unprivileged user who must own every file it writes; `lits predict` of a phantom
#         (mounted read-only at /data) with that run; the image under 800 MB.
#   CUDA: `lits env --json` exits 0 and reports CUDA unavailable (no GPU here); `ldd` inside
#         the image resolves every library of the binary; the image under 4.5 GB.
#
# Docker: an existing daemon is used when `docker info` answers (DOCKER_HOST too); otherwise,
# as root, the script starts its own dockerd (installing docker.io with apt if missing) with
# its data in LITS_DOCKER_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/lits/docker), so base
# images and build cache outlive the run, and stops it at the end.
#
# Base images: the Dockerfiles' defaults (RUST_IMAGE, RUNTIME_IMAGE) when present or
# pullable; otherwise local stand-ins, tagged lits-local/... so that they are never taken
# for the real ones: Debian from debootstrap (LITS_DEBIAN_MIRROR), and the build stage's
# Rust toolchain copied from this machine's (`rustc --print sysroot`).
#
# Behind an HTTPS-intercepting proxy the builds need the site's CA certificates: the PEM
# file LITS_SITE_CA, else the certificates in /usr/local/share/ca-certificates (Debian's
# folder for local ones), are passed as the build secret `site-ca`.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cache=${LITS_DOCKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lits/docker}
mirror=${LITS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
tag=${LITS_DOCKER_TAG:-test}
# What the build cache may keep between runs (the CUDA build stage alone holds 3.5 GB).
keep_storage=${LITS_DOCKER_KEEP_STORAGE:-8GB}

die() { echo "docker_test: error: $*" >&2; exit 1; }
say() { echo "docker_test: [$(date +%T), $((SECONDS))s] $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/lits-docker.XXXXXX")
dockerd_pid=
cleanup() {
  local rc=$?
  if [ -n "$dockerd_pid" ]; then
    say "stopping dockerd"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  # Mounts a killed build container may leave in the daemon's folder, then the folder (the
  # test's runs may belong to another user; they are ours to remove).
  local mnt
  while read -r _ mnt _; do
    case "$mnt" in "$work"/*) umount -l "$mnt" 2>/dev/null || true ;; esac
  done < /proc/mounts
  rm -rf "$work" || true
  exit "$rc"
}
trap cleanup EXIT

# --- daemon -------------------------------------------------------------------------------
command -v docker >/dev/null || command -v dockerd >/dev/null || [ "$(id -u)" -ne 0 ] \
  || { say "installing docker.io"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
command -v docker >/dev/null || die "no docker client (install docker.io)"
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || die "no Docker daemon answers, and only root can start one"
  command -v dockerd >/dev/null || { say "installing docker.io"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
  mkdir -p "$cache"
  # A short folder for the daemon's sockets (a socket path must stay under 108 bytes).
  export DOCKER_HOST="unix://$work/docker.sock"
  say "starting dockerd (data in $cache)"
  # Niced: its build containers inherit the priority and leave the CPUs to other work.
  nice -n 15 dockerd --data-root "$cache/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
    -H "$DOCKER_HOST" > "$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log" >&2; die "dockerd did not start"; }
fi

# A client that builds with BuildKit (cache mounts, secrets): buildx where installed; else
# a client from before Docker 23, whose `build` still carries BuildKit (Debian's docker.io).
build=()
prune=()
for client in docker /usr/bin/docker; do
  command -v "$client" >/dev/null || continue
  if "$client" buildx version >/dev/null 2>&1; then
    build=("$client" buildx build --load); prune=("$client" buildx prune -f); break
  fi
  major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  if [ -n "$major" ] && [ "$major" -lt 23 ]; then
    build=(env DOCKER_BUILDKIT=1 "$client" build); prune=("$client" builder prune -f); break
  fi
done
[ ${#build[@]} -gt 0 ] || die "no Docker client with BuildKit: install the buildx plugin"

# What earlier runs left beyond the limit (a run that died did not prune).
"${prune[@]}" --keep-storage "$keep_storage" >/dev/null

# --- base images ----------------------------------------------------------------------------
default_arg() { sed -n "s/^ARG $1=//p" Dockerfile.cpu | head -1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
pullable() { timeout 120 docker pull -q "$1" >/dev/null 2>&1; }

debian_image() {
  local real=$1 local_tag=lits-local/debian:bookworm-debootstrap
  if have_image "$real" || pullable "$real"; then echo "$real"; return; fi
  if ! have_image "$local_tag"; then
    command -v debootstrap >/dev/null \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
      || die "$real cannot be pulled, and debootstrap is missing"
    say "making $local_tag with debootstrap ($mirror), as $real cannot be pulled" >&2
    local fs="$work/rootfs"
    debootstrap --variant=minbase bookworm "$fs" "$mirror" > "$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$fs"/var/cache/apt/archives/*.deb "$fs"/var/lib/apt/lists/*
    tar -C "$fs" -c . | docker import -c 'CMD ["bash"]' - "$local_tag" >/dev/null
    rm -rf "$fs"
  fi
  echo "$local_tag"
}

rust_image() {
  local real=$1 base=$2
  if have_image "$real" || pullable "$real"; then echo "$real"; return; fi
  local sysroot version local_tag
  sysroot=$(rustc --print sysroot) || die "$real cannot be pulled, and there is no local Rust toolchain"
  version=$(rustc --version | cut -d' ' -f2)
  local_tag="lits-local/rust:$version-bookworm-host"
  if ! have_image "$local_tag"; then
    say "making $local_tag from this machine's toolchain, as $real cannot be pulled" >&2
    local ctx="$work/rust-context"
    mkdir -p "$ctx"
    # What the official image sets: CARGO_HOME, RUSTUP_HOME, PATH, and gcc for linking.
    cat > "$ctx/Dockerfile" <<DOCKERFILE
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY toolchain /usr/local/rustup/toolchains/local
ENV CARGO_HOME=/usr/local/cargo RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:/usr/local/rustup/toolchains/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
    tar -c -C "$ctx" Dockerfile --transform 's,^\./,toolchain/,' -C "$sysroot" \
        --exclude=./share/doc . \
      | "${build[@]}" -q -t "$local_tag" - >/dev/null
  fi
  echo "$local_tag"
}

runtime_base=$(debian_image "$(default_arg RUNTIME_IMAGE)")
rust_base=$(rust_image "$(default_arg RUST_IMAGE)" "$runtime_base")
say "base images: $rust_base (build), $runtime_base (runtime)"

# --- build ----------------------------------------------------------------------------------
site_ca="$work/site-ca.pem"
if [ -n "${LITS_SITE_CA:-}" ]; then
  cp "$LITS_SITE_CA" "$site_ca"
else
  shopt -s nullglob
  certs=(/usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
  shopt -u nullglob
  if [ ${#certs[@]} -gt 0 ]; then cat "${certs[@]}" > "$site_ca"; else : > "$site_ca"; fi
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
for kind in cpu cuda; do
  say "building lits:$kind-$tag"
  "${build[@]}" -f "Dockerfile.$kind" -t "lits:$kind-$tag" \
    --secret id=site-ca,src="$site_ca" \
    --build-arg RUST_IMAGE="$rust_base" --build-arg RUNTIME_IMAGE="$runtime_base" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    --progress=plain . > "$work/build-$kind.log" 2>&1 \
    || { tail -40 "$work/build-$kind.log" >&2; die "the $kind image did not build"; }
done

# --- CPU image ------------------------------------------------------------------------------
cpu="lits:cpu-$tag"
say "$cpu: lits env --json"
docker run --rm "$cpu" env --json > "$work/env-cpu.json"
grep -q '"cuda_available": false' "$work/env-cpu.json" || die "lits env --json: $(cat "$work/env-cpu.json")"
user=$(docker image inspect -f '{{.Config.User}}' "$cpu")
case "$user" in "" | root | 0 | 0:*) die "$cpu runs as root";; esac

# The calling user, or an unprivileged stand-in when that is root.
uid=$(id -u); gid=$(id -g)
if [ "$uid" -eq 0 ]; then uid=4242; gid=4242; fi
runs="$work/runs"
mkdir -p "$runs"
chown "$uid:$gid" "$runs"
say "$cpu: quick start for one epoch as $uid:$gid, /runs mounted"
docker run --rm --user "$uid:$gid" -v "$runs:/runs" "$cpu" train --epochs 1 --out /runs/quick \
  > "$work/train.log" 2>&1 || { tail -30 "$work/train.log" >&2; die "lits train failed"; }
[ -f "$runs/quick/best.safetensors" ] || die "the run has no best.safetensors: $(ls "$runs/quick")"

say "$cpu: the same epoch on two processes (--nproc 2, c10d Gloo inside the container)"
docker run --rm --user "$uid:$gid" -v "$runs:/runs" "$cpu" train --epochs 1 --nproc 2 --threads 1 --out /runs/ddp \
  > "$work/ddp.log" 2>&1 || { tail -30 "$work/ddp.log" >&2; die "lits train --nproc 2 failed"; }
[ -f "$runs/ddp/checkpoints/last.ckpt" ] || die "the 2-process run has no checkpoint: $(ls "$runs/ddp")"

synth=$(find "$runs/.cache/synth" -name 'volume-0.nii.gz' -printf '%h\n' | head -1)
[ -n "$synth" ] || die "no generated phantom under $runs/.cache/synth"
say "$cpu: lits predict of a phantom from read-only /data"
docker run --rm --user "$uid:$gid" -v "$runs:/runs" -v "$synth:/data:ro" "$cpu" \
  predict --run /runs/quick /data/volume-0.nii.gz --out /runs/pred > "$work/predict.log" 2>&1 \
  || { tail -30 "$work/predict.log" >&2; die "lits predict failed"; }
[ -n "$(find "$runs/pred" -name '*.nii*' -print -quit)" ] || die "lits predict wrote no mask: $(ls -R "$runs/pred")"
foreign=$(find "$runs" \( ! -uid "$uid" -o ! -gid "$gid" \) -printf '%u:%g %p\n' | head -5)
[ -z "$foreign" ] || die "files in /runs not owned by $uid:$gid: $foreign"

# --- CUDA image -----------------------------------------------------------------------------
cuda="lits:cuda-$tag"
say "$cuda: lits env --json without a GPU"
docker run --rm "$cuda" env --json > "$work/env-cuda.json" \
  || die "lits env --json failed in $cuda: $(cat "$work/env-cuda.json")"
grep -q '"cuda_available": false' "$work/env-cuda.json" || die "lits env --json: $(cat "$work/env-cuda.json")"
say "$cuda: ldd of the binary"
docker run --rm --entrypoint ldd "$cuda" /usr/local/bin/lits > "$work/ldd.txt"
grep -q 'libtorch_cuda.so => /opt/lits/' "$work/ldd.txt" || die "the binary does not load libtorch_cuda: $(cat "$work/ldd.txt")"
! grep 'not found' "$work/ldd.txt" || die "libraries of the binary are missing in $cuda"

for image in "$cpu" "$cuda"; do
  python=$(docker run --rm --entrypoint /bin/sh "$image" -c 'command -v python3 python || true')
  [ -z "$python" ] || die "$image carries Python: $python"
done

# --- sizes, clean-up ------------------------------------------------------------------------
size_mb() { echo $(( $(docker image inspect -f '{{.Size}}' "$1") / 1000000 )); }
cpu_mb=$(size_mb "$cpu"); cuda_mb=$(size_mb "$cuda")
say "image sizes: $cpu ${cpu_mb} MB (limit 800), $cuda ${cuda_mb} MB (limit 4500)"
[ "$cpu_mb" -lt 800 ] || die "$cpu is ${cpu_mb} MB, over 800 MB"
[ "$cuda_mb" -lt 4500 ] || die "$cuda is ${cuda_mb} MB, over 4.5 GB"

# Images the rebuild replaced, and build cache beyond what the next run reuses.
docker image prune -f >/dev/null
"${prune[@]}" --keep-storage "$keep_storage" >/dev/null
say "passed"
