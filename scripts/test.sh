#!/usr/bin/env bash
# Install inferline with every extra into .venv and run lint, types and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check src tests bench
.venv/bin/mypy src
.venv/bin/python -m pytest -q "$@"
