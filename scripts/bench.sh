#!/usr/bin/env bash
# The benchmark (README: Benchmarks): builds the release binaries, the
# functions' included (their cold starts are measured, and the process
# phase runs them through the Runtime API against moto_server, which
# scripts/setup-python.sh installs), and runs s3-export-bench. Arguments go
# to it: `--events 20000` for a quick run, `--no-process` to skip the
# process phase, `--help` for the rest. Its last line is the JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export MOTO_SERVER="${MOTO_SERVER:-$PWD/.venv/bin/moto_server}"
cargo build --release --workspace --bins
exec target/release/s3-export-bench "$@"
