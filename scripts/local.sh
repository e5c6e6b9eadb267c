#!/usr/bin/env bash
# Runs the pipeline locally end to end on moto_server (see README.md).
# Extra arguments go to `s3-export local` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-python.sh
export MOTO_SERVER="$PWD/.venv/bin/moto_server"
cargo run --quiet --bin s3-export -- local "$@"
