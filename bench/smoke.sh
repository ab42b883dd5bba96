#!/usr/bin/env bash
# Every benchmark at its smallest size: proves they run; figures are not meaningful here.
# Two at a time (each is mostly one busy process; CI has two cores once the tests are done),
# the longest first; each one's output is printed whole when it ends, and any failure fails
# the script after all have run.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${SMOKE_JOBS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
# Longest first (smoke wall seconds measured one at a time), the rest in name order.
first=(bench/torchserve.py bench/warehouse.py bench/serve.py bench/train.py bench/formats.py)
scripts=("${first[@]}")
for script in bench/*.py; do
  [[ " ${first[*]} " == *" $script "* ]] || scripts+=("$script")
done

run_one() {
  local script=$1 log status
  log="$logs/$(basename "$script").log"
  started=$(date +%s)
  status=0
  .venv/bin/python "$script" --smoke >"$log" 2>&1 || status=$?
  {
    flock 9
    echo "== $script --smoke ($(($(date +%s) - started)) s, exit $status)"
    cat "$log"
  } 9>"$logs/print.lock"
  [ "$status" -eq 0 ] || touch "$logs/$(basename "$script").failed"
}
export -f run_one
export logs

printf '%s\n' "${scripts[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}
failed=$(cd "$logs" && ls -- *.failed 2>/dev/null | sed 's/\.failed$//' || true)
if [ -n "$failed" ]; then
  echo "smoke failed: $failed" >&2
  exit 1
fi
echo "smoke: ${#scripts[@]} benchmarks ran"
