#!/usr/bin/env bash
# Creates .venv-deploy with the pinned deploy tools (aws-sam-cli, cargo-lambda
# and zig) once, and again whenever requirements-deploy.txt changes, and adds
# the aarch64 Rust target that arm64 builds need. Safe to run repeatedly.
# Then: PATH="$PWD/.venv-deploy/bin:$PATH" sam build (or scripts/build-arm64.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-deploy
stamp="$venv/.requirements-deploy.txt"
if ! { [ -x "$venv/bin/sam" ] && [ -x "$venv/bin/cargo-lambda" ] && cmp -s requirements-deploy.txt "$stamp"; }; then
  echo "setting up $venv (aws-sam-cli, cargo-lambda, zig) ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-deploy.txt
  cp requirements-deploy.txt "$stamp"
fi
# arm64 (the template's default Architecture) needs the aarch64 standard
# library; x86_64 builds (Architecture=x86_64) do not.
if [ "${SKIP_AARCH64_TARGET:-}" != 1 ] &&
  ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi
