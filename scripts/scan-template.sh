#!/usr/bin/env bash
# Scans template.yaml with checkov (after the SAM transform) and parliament
# (each IAM policy statement), offline; fails on any finding that
# scan-exceptions.yaml does not accept with a reason, and on an accepted one
# that no longer occurs. Makes .venv-scan first (scripts/setup-scan.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-scan.sh
exec .venv-scan/bin/python scripts/scan_template.py
