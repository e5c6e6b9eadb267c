#!/usr/bin/env bash
# Creates .venv with the pinned Python tools (moto_server, cfn-lint, duckdb) once, and
# again whenever requirements-dev.txt changes. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
stamp="$venv/.requirements-dev.txt"
if [ -x "$venv/bin/moto_server" ] && cmp -s requirements-dev.txt "$stamp"; then
  exit 0
fi
echo "setting up $venv (moto_server, cfn-lint, duckdb) ..." >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-dev.txt
cp requirements-dev.txt "$stamp"
