"""A Python that has already imported a CLI's heavy modules and runs `python -m MODULE ARGS`
commands in forked children, so each command skips the imports (the README test: ~60
`inferline` commands, each ~0.5-3 s of imports as a fresh process).

`serve_forever(path, module, preload)` imports `preload`, listens on the Unix socket `path` and,
per connection, forks a child that takes the client's argv, cwd, environment and
stdin/stdout/stderr (the fds themselves, passed with SCM_RIGHTS), becomes a process group of its
own, and runs the module as `python -m` does (`sys.path[0]` the cwd, fresh `sys.std*`, atexit
and non-daemon threads at exit). The client (`python -IS zygote.py --client PATH MODULE ARGS...`,
the test's `inferline` shim) forwards SIGINT/SIGTERM/SIGHUP/SIGQUIT to the child's group and
exits as the child did: its code, or killed by the same signal. A client that dies takes the
child's group with it (SIGKILL). The server stops when its stdin closes, killing what still runs.

This module's top level imports only the standard library: the client runs it with -I -S.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
HEADER = struct.Struct("!I")


@contextlib.contextmanager
def running(
    module: str, preload: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[list[str]]:
    """A zygote for `python -m module` with `preload` imported, until the block ends (what its
    commands still run is killed then); yields the client's command line, to which a command's
    arguments are appended."""
    import shutil
    import subprocess
    import tempfile
    import time

    sockets = Path(tempfile.mkdtemp(prefix="zygote-"))  # a Unix socket's path is under 108 bytes
    path = sockets / "zygote.sock"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, __file__, str(path), module, *preload],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while b"ready" not in log.read_bytes().splitlines():  # after any warning a preload printed
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"zygote: not started (exit {process.poll()}):\n{log.read_text()}")
            time.sleep(0.05)
        yield [sys.executable, "-IS", __file__, "--client", str(path), module]
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(60)
        shutil.rmtree(sockets, ignore_errors=True)


# -- client (the shim) -------------------------------------------------------------------------------


def client(path: str, module: str, args: list[str]) -> None:
    """Run `python -m module args` in the zygote at `path`; exit as that command exits."""
    # Signals ignored here (SIGINT of a `&` job of a non-interactive shell, nohup's SIGHUP) are
    # ignored by the command too, as a real process inherits them.
    ignored = [int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN]
    stdio = [fd for fd in (0, 1, 2) if _is_open(fd)]  # a closed one stays closed in the command
    request = json.dumps(
        {
            "argv": [module, *args],
            "cwd": os.getcwd(),
            "env": dict(os.environ),
            "ignored": ignored,
            "stdio": stdio,
        }
    ).encode()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    forward = _Forward(sock)
    for signum in FORWARDED:
        if signum not in ignored:
            signal.signal(signum, forward)
    sock.connect(path)
    data = HEADER.pack(len(request)) + request
    fds = array.array("i", stdio).tobytes()
    sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if stdio else [])
    sock.sendall(data[sent:])
    forward.started()
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            sys.stderr.write("zygote: the server closed the connection without an exit status\n")
            sys.exit(255)
        answer += chunk
    kind, number = answer.split()
    if kind == b"signal":  # die of the same signal, so the shell sees 128 + N
        for default in {*map(int, FORWARDED), int(number)}:
            with _suppress_oserror():  # SIGKILL and SIGSTOP keep their action
                signal.signal(default, signal.SIG_DFL)
        os.kill(os.getpid(), int(number))
        sys.exit(128 + int(number))  # a signal whose default is to be ignored
    sys.exit(int(number))


class _Forward:
    """The client's handler of FORWARDED signals: sent to the command once it is started,
    held until then."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.held: list[int] | None = []

    def __call__(self, signum: int, _frame: object) -> None:
        if self.held is not None:
            self.held.append(signum)
            return
        with _suppress_oserror():  # the command has just ended: its status is on the way
            self.sock.sendall(b"kill %d\n" % signum)

    def started(self) -> None:
        held, self.held = self.held or [], None
        for signum in held:
            self(signum, None)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


# -- server ------------------------------------------------------------------------------------------


def serve_forever(path: str, module: str, preload: list[str]) -> None:
    """Import `preload`, then run one forked child per connection until stdin closes."""
    for name in preload:
        __import__(name)
    if threading.active_count() > 1:  # forking would copy a Python thread's locks mid-use
        raise RuntimeError(f"zygote: preloading {preload} started threads: {threading.enumerate()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stop")
    jobs: dict[int, tuple[socket.socket, int]] = {}  # pid -> (connection, pidfd)
    jobs_argv: dict[int, list[str]] = {}
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "stop":
                for pid in list(jobs):
                    _kill_group(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (OSError, ValueError) as exc:  # a client gone mid-request: the others go on
                    print(f"zygote: a request failed: {exc!r}", flush=True)
                    conn.close()
                    continue
                keep = [listener.fileno(), selector.fileno(), conn.fileno()]
                pid = os.fork()
                if pid == 0:
                    others = [fd for c, p in jobs.values() for fd in (c.fileno(), p)]
                    _child(module, request, fds, [*keep, *others])
                with _suppress_oserror():  # the child does it too: a signal may come first
                    os.setpgid(pid, pid)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                jobs[pid] = (conn, pidfd)
                jobs_argv[pid] = request["argv"]
                selector.register(conn, selectors.EVENT_READ, ("conn", pid))
                selector.register(pidfd, selectors.EVENT_READ, ("exit", pid))
                continue
            what, pid = key.data
            if pid not in jobs:  # ended earlier in this round of events
                continue
            conn, pidfd = jobs[pid]
            if what == "conn":
                message = b""
                with _suppress_oserror():
                    message = conn.recv(4096)
                if not message:  # the client died: so does its command
                    selector.unregister(conn)
                    _kill_group(pid, signal.SIGKILL)
                for line in message.splitlines():
                    _kill_group(pid, int(line.split()[1]))
                continue
            _, status, usage = os.wait4(pid, 0)
            print(f"{usage.ru_utime + usage.ru_stime:6.2f} s CPU  {' '.join(jobs_argv.pop(pid))}", flush=True)
            with _suppress_oserror():
                if os.WIFSIGNALED(status):
                    conn.sendall(b"signal %d\n" % os.WTERMSIG(status))
                else:
                    conn.sendall(b"exit %d\n" % os.WEXITSTATUS(status))
            if conn in selector.get_map():  # not if the client is gone
                selector.unregister(conn)
            selector.unregister(pidfd)
            conn.close()
            os.close(pidfd)
            del jobs[pid]


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds = array.array("i")
    data, ancillary, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
        chunk = conn.recv(1 << 16)
        if not chunk:
            raise ConnectionError("zygote: the client closed the connection mid-request")
        data += chunk
    request: dict[str, Any] = json.loads(data[HEADER.size :])
    return request, list(fds)


def _kill_group(pid: int, signum: int) -> None:
    with _suppress_oserror():
        os.killpg(pid, signum)


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, tb: object) -> bool:
        return isinstance(value, OSError)


def _child(module: str, request: dict[str, Any], fds: list[int], inherited: list[int]) -> None:
    """In the forked child: become the command (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for signum in request["ignored"]:
            signal.signal(signum, signal.SIG_IGN)
        for fd in inherited:
            os.close(fd)
        for target, fd in zip(request["stdio"], fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        for target in {0, 1, 2} - set(request["stdio"]):
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        buffered = not os.environ.get("PYTHONUNBUFFERED")
        streams = [
            _stdio(fd, mode, old, buffered=buffered) if fd in request["stdio"] else None  # as CPython
            for fd, mode, old in ((0, "r", sys.stdin), (1, "w", sys.stdout), (2, "w", sys.stderr))
        ]
        sys.stdin, sys.stdout, sys.stderr = streams
        for name, stream in zip(("__stdin__", "__stdout__", "__stderr__"), streams, strict=True):
            setattr(sys, name, stream)
        sys.argv = list(request["argv"])
        sys.path[0] = request["cwd"]
        code = _run_module(module)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _run_module(module: str) -> int:
    """`python -m module`'s run and exit: the exit code, or death by SIGINT for an uncaught
    KeyboardInterrupt, as CPython does."""
    import atexit
    import runpy

    interrupted = False
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        interrupted, code = True, 130
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what CPython does at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with _suppress_oserror():
                stream.flush()
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _stdio(fd: int, mode: str, like: Any, *, buffered: bool) -> Any:
    """A standard stream over `fd` as CPython makes one at startup (create_stdio): the original's
    encoding and errors; unbuffered writes under PYTHONUNBUFFERED, else line-buffered for stderr
    and terminals."""
    import io

    raw = io.FileIO(fd, mode, closefd=False)
    raw.name = f"<std{'in' if fd == 0 else 'out' if fd == 1 else 'err'}>"
    stream: Any = raw
    if fd == 0:
        stream = io.BufferedReader(raw)
    elif buffered:
        stream = io.BufferedWriter(raw)
    return io.TextIOWrapper(
        stream,
        encoding=like.encoding,
        errors=like.errors,
        newline="\n",
        line_buffering=buffered and (fd == 2 or raw.isatty()),
        write_through=not buffered,
    )


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        client(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:  # zygote.py PATH MODULE [PRELOAD...]
        serve_forever(sys.argv[1], sys.argv[2], sys.argv[3:])
