# The two commands of the README's quick start, plus helpers. Each target runs the
# set-up first; it returns in a second when .venv is already in place.

CARGO ?= cargo

.PHONY: setup train test env build

setup:
	@scripts/setup.sh

## Train on the built-in default data (synthetic CT phantoms) with configs/quickstart.json.
train: setup
	$(CARGO) run --release -p lits-cli -- train

## The whole test suite: Rust unit, integration and end-to-end tests, with the Python peers.
test: setup
	$(CARGO) test --workspace --all-targets

env: setup
	$(CARGO) run --release -p lits-cli -- env

build: setup
	$(CARGO) build --release -p lits-cli
