#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of record decoding, event validation
# (fuzz/fuzz_targets/record.rs) and the batcher's plan (batch.rs), on the
# stable toolchain: the sanitizer-coverage instrumentation cargo-fuzz adds is
# passed as stable -C flags, so neither nightly nor cargo-fuzz is needed.
#
#   scripts/fuzz.sh [seconds per target, default 60] [target ...]
#
# The corpus grows in fuzz/corpus/<target>/ (seeded from tests/fixtures/);
# a crashing input is written to fuzz/artifacts/<target>/ and the script
# fails. Replay one with: fuzz/target/<host>/release/<target> <file>
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(record batch)

host=$(rustc -vV | sed -n 's/^host: //p')
# What `cargo fuzz build` passes (without a sanitizer), all stable flags.
# --target keeps them off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cdebug-assertions -Coverflow-checks"
(cd fuzz && cargo build --release --locked --target "$host" --bins)

for target in "${targets[@]}"; do
  corpus=fuzz/corpus/$target
  artifacts=fuzz/artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  cp -n tests/fixtures/*.json "$corpus/" 2>/dev/null || true
  echo "== fuzzing $target for ${seconds}s"
  "fuzz/target/$host/release/$target" \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus"
done
