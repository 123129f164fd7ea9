# Sourced by the benchmarks that run the `lits` binary, from the repository root: sets PY
# (the project's Python), WORK (a temporary folder removed on exit) and LITS_BIN (the
# release build, built here unless LITS_BIN is already set).
PY=.venv/bin/python
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [ -z "${LITS_BIN:-}" ]; then
  cargo build --release -q -p lits-cli
  LITS_BIN="${CARGO_TARGET_DIR:-target}/release/lits"
fi
