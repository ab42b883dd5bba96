#!/usr/bin/env bash
# Every benchmark at its smallest size: proves they run; figures are not meaningful here.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench/*.py; do
  echo "== $script --smoke"
  .venv/bin/python "$script" --smoke
done
