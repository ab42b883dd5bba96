"""No web page can manage models: cross-site requests and pickles over HTTP, on a real server.

The Chromium test opens a page on another port that tries what issue 16 showed working: a
`no-cors` POST to `/models` registering a pickle. The server is started with the pickle's
folder trusted, so only the origin check stands between the page and code execution.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.browser import dump_dom, parse_dom
from tests.conftest import free_port
from tests.e2e.server import running_server, server_log


@pytest.fixture
def store(tmp_path: Path, iris_example: Path) -> Path:
    root = tmp_path / "store"
    ModelStore(str(root)).add("iris", str(iris_example / "models/iris-1.onnx"), inputs=FEATURES)
    return root


@contextlib.contextmanager
def page_server(folder: Path) -> Iterator[int]:
    """Serve `folder` over HTTP on another port: the 'other web site'."""
    port = free_port()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


ATTACK = """<!doctype html><html><body><div id="out">pending</div><script>
const target = "{base}/models?url={url}&model_name={name}";
Promise.all([
  fetch(target, {{method: "POST", mode: "no-cors"}}),
  fetch(target, {{method: "POST", mode: "no-cors", body: "x"}}),
]).then(() => {{ document.getElementById("out").textContent = "sent"; }},
        (e) => {{ document.getElementById("out").textContent = "failed " + e; }});
</script></body></html>
"""


def served_names(base: str) -> list[str]:
    return [m["modelName"] for m in httpx.get(f"{base}/models").json()["models"]]


def test_a_page_on_another_origin_cannot_register_a_model(
    tmp_path: Path, store: Path, iris_example: Path
) -> None:
    pickle = tmp_path / "trusted" / "evil.joblib"
    pickle.parent.mkdir()
    shutil.copy(iris_example / "models/iris-1.joblib", pickle)
    site = tmp_path / "site"
    site.mkdir()
    trusted = {"INFERLINE_TRUSTED_PATHS": f"{pickle.parent}:{store}"}
    with (
        page_server(site) as page_port,
        running_server(
            store, "--watch-interval", "0", "--allow-origin", f"http://localhost:{page_port}", env=trusted
        ) as base,
    ):
        (site / "evil.html").write_text(ATTACK.format(base=base, url=pickle, name="evil"))
        (site / "friend.html").write_text(
            ATTACK.format(base=base, url=iris_example / "models/iris-1.onnx", name="friend")
        )
        refused = parse_dom(
            dump_dom(
                f"http://127.0.0.1:{page_port}/evil.html", tmp_path / "chrome", virtual_time_budget_ms=5000
            )
        )
        assert refused.by_id("out").text == "sent"  # the requests reached the server ...
        assert served_names(base) == ["iris"]  # ... which registered nothing
        log = server_log(store)
        assert (
            f"refused POST /models: refusing a request from the web page origin 'http://127.0.0.1:{page_port}'"
            in (log)
        )
        # The same page from an origin listed with --allow-origin may manage models.
        allowed = parse_dom(
            dump_dom(
                f"http://localhost:{page_port}/friend.html", tmp_path / "chrome", virtual_time_budget_ms=5000
            )
        )
        assert allowed.by_id("out").text == "sent"
        assert "friend" in served_names(base)
        # A pickle from a folder in INFERLINE_TRUSTED_PATHS may be registered (by a script).
        listed = httpx.post(f"{base}/models", params={"url": str(pickle), "model_name": "p"}, timeout=60)
        assert listed.status_code == 200, listed.text
    assert not (store / "evil").exists()


def test_browser_shaped_requests_are_refused(tmp_path: Path, store: Path, iris_example: Path) -> None:
    onnx = str(iris_example / "models/iris-1.onnx")
    register = {"url": onnx, "model_name": "added"}
    with running_server(store, "--watch-interval", "0") as base:
        port = base.rsplit(":", 1)[1]
        refusals = [
            (
                {"Origin": "https://evil.example"},
                "refusing a request from the web page origin 'https://evil.example'",
            ),
            ({"Origin": "null"}, "refusing a request from the web page origin 'null'"),
            ({"Origin": "http://127.0.0.1:1"}, "(this server is http://127.0.0.1:"),
            ({"Sec-Fetch-Site": "cross-site"}, "refusing a cross-site browser request"),
            ({"Sec-Fetch-Site": "same-site"}, "refusing a same-site browser request"),
            ({"Content-Type": "text/plain"}, "refusing a text/plain body, which any web page can send"),
            (
                {"Content-Type": "application/x-www-form-urlencoded"},
                "refusing a application/x-www-form-urlencoded body",
            ),
            ({"Host": f"rebound.example:{port}"}, "Host 'rebound.example' is not a loopback name"),
        ]
        for headers, message in refusals:
            answer = httpx.post(f"{base}/models", params=register, headers=headers, content=b"x")
            assert answer.status_code == 403, (headers, answer.text)
            body = answer.json()
            assert body["type"] == "Forbidden" and message in body["message"], (headers, body)
        for method, path in (("DELETE", "/models/iris"), ("PUT", "/models/iris/1/set-default")):
            answer = httpx.request(method, f"{base}{path}", headers={"Origin": "https://evil.example"})
            assert answer.status_code == 403, answer.text
        assert served_names(base) == ["iris"]
        assert httpx.post(f"{base}/predictions/iris", json=[5.1, 3.5, 1.4, 0.2]).status_code == 200

        # What curl, scripts and the same origin send is accepted.
        same_origin = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
        assert (
            httpx.post(f"{base}/models", params=register, headers=same_origin, timeout=60).status_code == 200
        )
        form_with_header = {"Content-Type": "text/plain", "X-Requested-With": "inferline"}
        again = httpx.post(
            f"{base}/models", params=register, headers=form_with_header, content=b"x", timeout=60
        )
        assert again.status_code == 200, again.text
        assert served_names(base) == ["added", "iris"]
        pickles_need_a_listed_folder(base, tmp_path, store, iris_example)


def pickles_need_a_listed_folder(base: str, tmp_path: Path, store: Path, iris_example: Path) -> None:
    """Without INFERLINE_TRUSTED_PATHS no file that loading could run is registered over HTTP."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    pickle = folder / "model.joblib"
    shutil.copy(iris_example / "models/iris-1.joblib", pickle)
    shutil.copy(pickle, folder / "model.skops")  # a pickle under a safe format's name
    shutil.copy(pickle, folder / "model.bin")
    for name, framework in (("model.joblib", None), ("model.skops", None), ("model.bin", "sklearn")):
        params = {
            "url": str(folder / name),
            "model_name": "p",
            **({"framework": framework} if framework else {}),
        }
        answer = httpx.post(f"{base}/models", params=params, timeout=60)
        assert answer.status_code == 400, answer.text
        assert (
            "file registered over HTTP (it could run code) from an untrusted location; use the safe "
            ".skops or .onnx format, or add its folder to INFERLINE_TRUSTED_PATHS"
        ) in answer.json()["message"]
    assert not (store / "p").exists()  # refused before the file reached the store
