#!/usr/bin/env bash
# The benchmark (README: Benchmarks): builds the release binaries, the
# functions' included (their cold starts are measured), and runs
# s3-export-bench. Arguments go to it: `--events 20000` for a quick run,
# `--help` for the rest. Its last line is the JSON summary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
exec target/release/s3-export-bench "$@"
