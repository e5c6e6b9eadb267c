#!/usr/bin/env bash
# Creates .venv-scan with the pinned template scanners (checkov, parliament,
# aws-sam-translator) once, and again whenever requirements-scan.txt changes.
# Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-scan
stamp="$venv/.requirements-scan.txt"
if [ -x "$venv/bin/checkov" ] && [ -x "$venv/bin/parliament" ] && cmp -s requirements-scan.txt "$stamp"; then
  exit 0
fi
echo "setting up $venv (checkov, parliament, aws-sam-translator) ..." >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements-scan.txt
cp requirements-scan.txt "$stamp"
