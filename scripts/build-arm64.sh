#!/usr/bin/env bash
# `sam build` of the three functions for the template's default architecture,
# arm64 (Graviton), with the pinned deploy tools of .venv-deploy (created on
# first use by scripts/setup-deploy.sh): cargo-lambda cross-compiles release
# builds with zig as the linker, without Docker. The bootstraps land in
# .aws-sam/build/<Function>/bootstrap, ready for `sam deploy`.
#
# Extra arguments go to `sam build`, e.g.
#   ./scripts/build-arm64.sh --parameter-overrides Architecture=x86_64
# (then deploy with the same Architecture). Set CARGO_TARGET_DIR to keep the
# release builds apart from the workspace's target/ (SAM uses target/ by
# default, shared by the three functions).
#
# About 10 to 20 minutes from a cold cache on 2 cores; later builds are
# incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-deploy.sh
export PATH="$PWD/.venv-deploy/bin:$PATH"
export SAM_CLI_TELEMETRY=0
started=$SECONDS
sam build "$@"
echo "built in $((SECONDS - started)) s:" >&2
for f in .aws-sam/build/*/bootstrap; do
  printf '%10d  %s\n' "$(stat -c %s "$f")" "$f"
  file -b "$f" 2>/dev/null | sed 's/^/            /' || true
done
