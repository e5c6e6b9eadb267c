#!/usr/bin/env bash
# Runs every test: the pure unit tests, and the integration tests that start
# their own moto_server on a free 127.0.0.1 port. Extra arguments go to
# `cargo test` (for example a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export MOTO_SERVER="$PWD/.venv/bin/moto_server"
# tests/binaries.rs runs the functions' own binaries, which `cargo test` alone
# does not build for packages without integration tests.
cargo build --workspace --bins
cargo test --workspace "$@"
