#!/usr/bin/env bash
# Install inferline with every extra into .venv and run lint, types and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
.venv/bin/ruff check src tests bench
# Byte-compile our sources once: where PYTHONDONTWRITEBYTECODE is set (as on our machines) every
# CLI and server process the tests start would compile each inferline module it imports again
# (~0.1-0.2 s CPU a process, several hundred processes).
.venv/bin/python -m compileall -q src tests >/dev/null
# mypy (one core, ~35 s CPU from cold) runs beside the tests instead of before them; its
# output is printed after them, and either failing fails the script.
mypy_log=$(mktemp)
.venv/bin/mypy src >"$mypy_log" 2>&1 &
mypy_pid=$!
# Three workers, a test file per worker: the end-to-end tests wait on the processes they start,
# so three keep two cores busy; more would mostly share the same cores: a run is close to
# CPU-bound (1,383 s CPU for 1,059 tests at load 10-15, ~690 s on two cores, vs 704-728 s of quiet
# wall; see DESIGN.md "Tests run torch on one thread").
status=0
.venv/bin/python -m pytest -q -n 3 --dist loadfile "$@" || status=$?
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
echo "== mypy src"
cat "$mypy_log"
rm -f "$mypy_log"
[ "$mypy_status" -eq 0 ] || exit "$mypy_status"
exit "$status"
