"""Keep the README true: every command of its ```bash blocks runs, in README order.

The commands run in a fresh project directory (a copy of the repository's `examples/`, nothing
built), through bash, with `inferline` (and `.venv/bin/inferline`) a shim for `python -m inferline`
of the code under test, so `inferline quickstart` and earlier steps set up the later ones as they
would for a reader. A command that cannot run on this machine is in SKIPS with its reason; every
other command runs, so a new README command either runs or the test fails until it is handled.

`inferline serve ... &` starts the server in the background on a free loopback port (replacing
the previous one, which a reader would have stopped) and the README's `localhost:8080` /
`127.0.0.1:8080` become that port — the only rewrite. Each command must exit 0 (or, for the
few in EXPECTED_FAILURES, fail as the README says), print the JSON its `# -> {...}` comment
promises, and print the key line in EXPECTED_OUTPUT; readme_checks.py checks a few further (the
SQL worked example's tables, the rows of the prepared example).

`inferline` runs each command in a fork of a Python that has already imported inferline and its
heavy dependencies (tests/e2e/zygote.py, checked against real processes by test_zygote.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLI_PRELOAD, free_port, subprocess_env
from tests.e2e import readme_checks, zygote
from tests.e2e.readme_commands import (
    Command,
    SavedFile,
    block_commands,
    contains,
    readme_steps,
    split_comment,
)

README = Path(__file__).resolve().parents[2] / "README.md"
PORT_IN_README = 8080
CURL_RETRY_S = 20.0  # a version added to the store is loaded in the background (torch takes a while)


@dataclass(frozen=True)
class Rule:
    pattern: str  # re.search over the command as the README writes it
    text: str  # why it is skipped / what stderr or stdout must contain

    def matches(self, command: str) -> bool:
        return re.search(self.pattern, command) is not None


SKIPS = (
    Rule(
        r"^python3 -m venv \.venv$",
        "makes a virtualenv; the test's .venv/bin holds shims for the python and inferline under test",
    ),
    Rule(
        r"^(\.venv/bin/)?pip install ",
        "installs from PyPI (needs the network); every extra is installed in the environment under test",
    ),
    Rule(
        r"^bash scripts/test\.sh$",
        "installs every extra and runs the whole suite, this test included (.ci/run runs it)",
    ),
    Rule(r"--runner=DataflowRunner\b", "needs a Google Cloud project, GCS buckets and Dataflow"),
    Rule(r"--runner=FlinkRunner\b", "needs a Flink cluster (flink-host:8081) and Beam's Java job server"),
    Rule(r"--runner=SparkRunner\b", "needs a Spark cluster (spark://host:7077) and Beam's Java job server"),
)

# Commands the README shows failing on purpose: they must exit non-zero and print this on stderr.
EXPECTED_FAILURES = (Rule(r"^inferline --debug run broken\.yaml$", "Traceback (most recent call last)"),)

# One key line each command's output must contain (stdout), where the README says what it prints.
EXPECTED_OUTPUT = (
    Rule(r"^(\.venv/bin/)?inferline quickstart$", "example ready: data examples/iris/data/iris.csv"),
    Rule(r"^inferline quickstart digits$", "accuracy"),
    Rule(r"^(\w+=\S+ )?inferline run ", " 0 dead-lettered"),
    Rule(r"^inferline run examples/iris/stream\.yaml", "10,000 rows read, 10,000 predicted"),
    Rule(r"^inferline models add ", "added "),
    Rule(r"^inferline models list$", "iris"),
    Rule(r"^inferline models pin iris 1$", "pinned iris/1"),
    Rule(r"^inferline models remove iris 2$", "removed iris/2"),
    Rule(r"^inferline publish iris ", "published 10,000 messages to topic iris"),
    Rule(r"^inferline report .*--label target", "accuracy"),
    Rule(r"^inferline report .*--compare iris_onnx", "agreement with iris_onnx 100.0%"),
    Rule(r"-f top_classes\.sql$", "zero"),
    Rule(r"\) AS accuracy FROM ML\.PREDICT", "0.9"),
    Rule(r"FROM digits_predictions GROUP BY", "count_star()"),
    Rule(r"FROM inferline_runs", "rows_per_second"),
    Rule(r"^curl .*/predictions/digits ", '"model_id":"digits/1","predictions":[0]'),
    Rule(r"^curl .*/dashboard/stats", '"loaded"'),
)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path: Path) -> None:
    project = fresh_project(tmp_path / "project")
    env = readme_env(project)
    port = free_port()
    done: list[str] = []
    started = time.monotonic()
    with zygote_shim(project, env, tmp_path / "zygote.log"):
        try:
            run_the_readme(project, env, port, done, tmp_path)
        finally:
            print("\n".join(done))
            print(f"README commands: {time.monotonic() - started:.1f} s")
    saved = {s.name for s in readme_steps(README.read_text(encoding="utf-8")) if isinstance(s, SavedFile)}
    left = [path for path in not_ignored(project) if path not in saved]
    assert not left, f".gitignore misses files the README's commands wrote: {left}"


def run_the_readme(project: Path, env: dict[str, str], port: int, done: list[str], logs: Path) -> None:
    server: subprocess.Popen[bytes] | None = None
    notes: readme_checks.Notes = {}  # what readme_checks' checks recorded
    try:
        for step in readme_steps(README.read_text(encoding="utf-8")):
            if isinstance(step, SavedFile):
                (project / step.name).write_text(with_port(step.text, port), encoding="utf-8")
                done.append(f"README:{step.line}  saved {step.name}")
                continue
            skip = first(SKIPS, step.text)
            if skip is not None:
                done.append(f"README:{step.line}  SKIP {step.text}  ({skip.text})")
                continue
            t0 = time.monotonic()
            if step.background:
                stop_server(server)
                server = start_server(step, with_port(step.text, port), project, env, port, logs)
            else:
                run_readme_command(step, with_port(step.text, port), project, env, notes)
            done.append(f"README:{step.line}  ran ({time.monotonic() - t0:.1f} s) {step.text}")
    finally:
        stop_server(server)


@pytest.mark.parametrize(
    ("table", "name"),
    [(SKIPS, "SKIPS"), (EXPECTED_FAILURES, "EXPECTED_FAILURES"), (EXPECTED_OUTPUT, "OUTPUT")],
)
def test_every_rule_still_matches_a_readme_command(table: tuple[Rule, ...], name: str) -> None:
    commands = [s.text for s in readme_steps(README.read_text(encoding="utf-8")) if isinstance(s, Command)]
    stale = [rule.pattern for rule in table if not any(rule.matches(c) for c in commands)]
    assert not stale, f"{name} entries that match no README command any more: {stale}"


def test_every_check_matches_one_readme_command() -> None:
    commands = [s.text for s in readme_steps(README.read_text(encoding="utf-8")) if isinstance(s, Command)]
    matches = {pattern: [c for c in commands if re.search(pattern, c)] for pattern, _ in readme_checks.CHECKS}
    assert all(len(found) == 1 for found in matches.values()), matches


def test_a_wrong_sql_table_is_reported(tmp_path: Path) -> None:
    table = (
        "┏━━━━━━━━━━━━┳━━━━━━┳━━━━━━┳━━━━━━━━━━━━━┓\n"
        "┃ file       ┃ rank ┃ name ┃ probability ┃\n"
        "┡━━━━━━━━━━━━╇━━━━━━╇━━━━━━╇━━━━━━━━━━━━━┩\n"
        + "".join(
            f"│ 0_{n}.png │    1 │ {first} │         0.9 │\n│ 0_{n}.png │    2 │ five │         0.1 │\n"
            for n, first in ((1, "zero"), (2, "zero"), (3, "six"))
        )
        + "└────────────┴──────┴──────┴─────────────┘\n6 rows\n"
    )
    rows = readme_checks.sql_table(table)
    assert rows[0] == {"file": "0_1.png", "rank": "1", "name": "zero", "probability": "0.9"}
    assert "expected the zeros' first class to be 'zero'" in str(
        readme_checks.top_two_classes(table, tmp_path, {})
    )
    assert readme_checks.top_two_classes(table.replace("six", "zero"), tmp_path, {}) is None
    notes: readme_checks.Notes = {}
    accuracy = "┃ accuracy ┃\n│   0.9778 │\n"
    assert readme_checks.hand_accuracy(accuracy, tmp_path, notes) is None and notes
    metrics = "┃ accuracy ┃ f1_score ┃ log_loss ┃ roc_auc ┃\n│   {} │    0.978 │   0.0757 │  0.9997 │\n"
    assert readme_checks.evaluation(metrics.format("0.9778"), tmp_path, notes) is None
    assert "differs from the hand-written" in str(
        readme_checks.evaluation(metrics.format("0.9"), tmp_path, notes)
    )


def test_the_readme_has_its_commands_and_promises() -> None:
    steps = readme_steps(README.read_text(encoding="utf-8"))
    commands = [s for s in steps if isinstance(s, Command)]
    assert len(commands) >= 50
    assert {"compare.yaml", "top_classes.sql"} <= {s.name for s in steps if isinstance(s, SavedFile)}
    ping = next(c for c in commands if c.text.endswith("/ping"))
    assert ping.promise == {"status": "Healthy"}
    assert sum(c.promise is not None for c in commands) >= 3
    assert sum(c.background for c in commands) >= 2


def test_commands_are_read_as_a_shell_reads_them() -> None:
    body = (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[a]'  # comment\n"
        "inferline models add iris m.joblib \\\n"
        "  --inputs a,b   # trailing\n"
        "# a comment line\n"
        "curl -s 'localhost:8080/x?a=1#frag' -d '{\"a\": \"# not a comment\"}'\n"
        '# -> {"ok": true}   (more words)\n'
        "inferline serve --models store &\n"
    )
    commands = block_commands(body, first_line=10)
    assert [c.text for c in commands] == [
        "python3 -m venv .venv",
        ".venv/bin/pip install -e '.[a]'",
        "inferline models add iris m.joblib --inputs a,b",
        "curl -s 'localhost:8080/x?a=1#frag' -d '{\"a\": \"# not a comment\"}'",
        "inferline serve --models store &",
    ]
    assert [c.line for c in commands] == [10, 10, 11, 14, 16]
    assert commands[3].promise == {"ok": True}
    assert [c.background for c in commands] == [False, False, False, False, True]
    assert split_comment("echo a#b # c") == ("echo a#b", "c")
    assert contains({"a": [1, {"b": 2, "c": 3}], "d": 4}, {"a": [1, {"b": 2}]})
    assert not contains({"a": [1, 2]}, {"a": [1]})


def test_a_wrong_readme_command_is_reported() -> None:
    def result(code: int, out: str, err: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], code, out, err)

    curl = Command("curl -s localhost:8080/predictions/iris/1", 10, {"predictions": [0]})
    assert check_result(curl, result(0, '{"model_id":"iris/1","predictions":[2]}')) == (
        'the README promises {"predictions": [0]}'
    )
    assert check_result(curl, result(0, '{"code":404,"type":"ModelNotFound","message":"m"}')) == (
        "the server answered an error"
    )
    assert check_result(Command("inferline models list", 1), result(1, "")) == "the command failed"
    assert check_result(Command("inferline models list", 1), result(0, "no models")) == (
        "expected 'iris' in its output"
    )
    broken = Command("inferline --debug run broken.yaml", 2)
    assert check_result(broken, result(0, "")) == "the README shows this command failing, but it exited 0"
    assert check_result(broken, result(1, "", "Traceback (most recent call last):\n...")) is None
    assert with_port("curl localhost:8080/x; serve --port 8080; 127.0.0.1:80801", 5) == (
        "curl localhost:5/x; serve --port 5; 127.0.0.1:80801"
    )


def test_files_the_gitignore_misses_are_reported(tmp_path: Path) -> None:
    project = fresh_project(tmp_path / "project")
    for name in ("warehouse.duckdb", "model_store/iris/1/inferline.json", "stray.txt", "out/iris.parquet"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text("x", encoding="utf-8")
    assert not_ignored(project) == ["stray.txt"]


# -- helpers ----------------------------------------------------------------------------------------


def first(rules: tuple[Rule, ...], command: str) -> Rule | None:
    return next((rule for rule in rules if rule.matches(command)), None)


def fresh_project(project: Path) -> Path:
    """The repository's examples/ and .gitignore as a checkout has them (nothing built, the files
    in git's index), plus .venv/bin shims."""
    shutil.copytree(
        README.parent / "examples",
        project / "examples",
        ignore=shutil.ignore_patterns("data", "models", "images", "__pycache__", "*.duckdb*"),
    )
    shutil.copy(README.parent / ".gitignore", project / ".gitignore")
    git(project, "init", "-q")
    git(project, "add", "-A")
    bin_dir = project / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = shlex.quote(sys.executable)
    for name, command in (("inferline", f"{python} -m inferline"), ("python", python)):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec {command} "$@"\n', encoding="utf-8")
        shim.chmod(0o755)
    # `. .venv/bin/activate`: the shims are already first on PATH; this keeps them there.
    (bin_dir / "activate").write_text('PATH="$PWD/.venv/bin:$PATH"; export PATH\n', encoding="utf-8")
    return project


@contextlib.contextmanager
def zygote_shim(project: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    """`inferline` in the project runs `python -m inferline` in a fork of a Python that has
    already imported CLI_PRELOAD (tests/e2e/zygote.py): the same command line, cwd, environment,
    stdio, exit status and signals as a fresh process, without its ~0.5-3 s of imports."""
    try:
        with zygote.running("inferline", CLI_PRELOAD, cwd=project, env=env, log=log) as client:
            shim = project / ".venv" / "bin" / "inferline"
            shim.write_text(f'#!/bin/sh\nexec {shlex.join(client)} "$@"\n', encoding="utf-8")
            yield
    finally:
        print(f"--- zygote:\n{log.read_text(encoding='utf-8', errors='replace')}")


def git(project: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=project, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def not_ignored(project: Path) -> list[str]:
    """Files written since fresh_project() that .gitignore does not cover."""
    status = git(project, "status", "--porcelain", "--untracked-files=all")
    return [line[3:] for line in status.splitlines() if line.startswith("?? ")]


def readme_env(project: Path) -> dict[str, str]:
    env = {k: v for k, v in subprocess_env().items() if not k.startswith("INFERLINE_")}
    env["PATH"] = os.pathsep.join([str(project / ".venv" / "bin"), env.get("PATH", "")])
    env["COLUMNS"] = "200"
    return env


def with_port(text: str, port: int) -> str:
    """The README's server port (8080) -> the test's free port; nothing else changes."""
    return re.sub(rf"(localhost:|127\.0\.0\.1:|--port ){PORT_IN_README}\b", rf"\g<1>{port}", text)


def run_readme_command(
    step: Command, command: str, project: Path, env: dict[str, str], notes: readme_checks.Notes
) -> None:
    deadline = time.monotonic() + (CURL_RETRY_S if command.startswith("curl ") else 0)
    while True:
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,  # a hang detector: at load 10-15 `quickstart digits` took over 180 s
        )
        problem = check_result(step, result) or readme_checks.check(step.text, result.stdout, project, notes)
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"README.md line {step.line}: {step.text}\n{problem}\n"
                f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        time.sleep(0.2)


def check_result(step: Command, result: subprocess.CompletedProcess[str]) -> str | None:
    """What is wrong with a command's result, or None."""
    failure = first(EXPECTED_FAILURES, step.text)
    if failure is not None:
        if result.returncode == 0:
            return "the README shows this command failing, but it exited 0"
        return None if failure.text in result.stderr else f"expected {failure.text!r} on stderr"
    if result.returncode != 0:
        return "the command failed"
    for rule in EXPECTED_OUTPUT:
        if rule.matches(step.text) and rule.text not in result.stdout:
            return f"expected {rule.text!r} in its output"
    if step.text.startswith("curl "):
        answer = parse_json(result.stdout)
        if isinstance(answer, dict) and {"code", "type", "message"} <= answer.keys():
            return "the server answered an error"
        if step.promise is not None and not contains(answer, step.promise):
            return f"the README promises {json.dumps(step.promise)}"
    return None


def parse_json(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def start_server(
    step: Command, command: str, project: Path, env: dict[str, str], port: int, logs: Path
) -> subprocess.Popen[bytes]:
    if not command.startswith("inferline serve "):
        raise AssertionError(
            f"README.md line {step.line}: teach this test to run {step.text!r} in the background"
        )
    command = command.removesuffix("&").strip()
    if "--port " not in command:
        command += f" --port {port}"
    log = logs / f"serve-readme-{step.line}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {command}"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise AssertionError(
                f"README.md line {step.line}: {step.text} exited {process.returncode}\n{log.read_text()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return process
        if time.monotonic() > deadline:
            stop_server(process)
            raise AssertionError(f"README.md line {step.line}: server not ready in 60 s\n{log.read_text()}")
        time.sleep(0.05)


def stop_server(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
