#!/usr/bin/env bash
# Load: sends events (1,000,000 by default) through the local pipeline on
# moto (`s3-export local`: SQS, the event source mapping emulation, the real
# batcher, the real flusher, a destination), then counts what was exported
# independently of the project's code: scripts/count_exports.py reads every
# gzip file back with boto3 and Python's gzip module, and prints events
# sent, exported, duplicates, rejected and what is left under staging/
# (staged objects and older chunks). Exits 1 when they do not add up.
#
#   scripts/load.sh [--events N] [--tenants N] [--producer mixed|ndjson|gzip] [--release]
#
# By default the producers pack events into gzip NDJSON messages of 256 KiB
# (the producer crate, `content-encoding: gzip`), as a cost-minded producer
# does: a million events are a few hundred messages. `--producer mixed`
# sends every body shape, a few events a message: far more messages, and
# moto's SQS slows down with queue depth (README.md, "Load").
set -euo pipefail
cd "$(dirname "$0")/.."
events=1000000
tenants=20
producer=gzip
release=()
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --tenants) tenants=$2; shift 2 ;;
    --producer) producer=$2; shift 2 ;;
    --release) release=(--release); shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done

./scripts/setup-python.sh
cargo build --quiet "${release[@]}" --bin s3-export
work=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null; wait "$moto_pid" 2>/dev/null; rm -rf "$work"' EXIT
endpoint="http://127.0.0.1:$port"
for _ in $(seq 100); do
  .venv/bin/python -c "import urllib.request; urllib.request.urlopen('$endpoint/moto-api/')" 2>/dev/null && break
  sleep 0.2
done

started=$SECONDS
status=0
RUST_LOG=${RUST_LOG:-warn} cargo run --quiet "${release[@]}" --bin s3-export -- local --endpoint "$endpoint" \
  --events "$events" --tenants "$tenants" --producer "$producer" >"$work/local.log" || status=$?
echo "pipeline      ${events} events (producer style $producer) in $((SECONDS - started)) s (s3-export local exited $status)"
grep -E '^(sent|delivered|staged|flushed|OK|MISMATCH)' "$work/local.log" || true
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
  .venv/bin/python scripts/count_exports.py --endpoint "$endpoint" --local-log "$work/local.log"
