#!/usr/bin/env bash
# Install inferline with every extra into .venv and run lint, types and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/mypy src
# Three workers, a test file per worker: the end-to-end tests spend much of their time waiting on
# the processes they start, so three keep two cores busy (789 tests: 10.8 min on 3 vs ~25 serially).
.venv/bin/python -m pytest -q -n 3 --dist loadfile "$@"
