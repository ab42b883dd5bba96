"""Headless Chromium for tests: dump a page's DOM after it ran, take screenshots, query elements."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The Chromium binary, or skip the test (CI installs Debian's `chromium`)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _run(url: str, profile: Path, extra: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def dump_dom(
    url: str, profile: Path, *, virtual_time_budget_ms: int | None = None, timeout: float = 60
) -> str:
    """The page's DOM as Chromium serialises it after loading (and running scripts)."""
    extra = ["--dump-dom"]
    if virtual_time_budget_ms is not None:
        extra.append(f"--virtual-time-budget={virtual_time_budget_ms}")
    result = _run(url, profile, extra, timeout)
    if result.returncode != 0 or "<html" not in result.stdout:
        raise AssertionError(
            f"chromium --dump-dom {url} failed ({result.returncode}):\n{result.stderr[-2000:]}"
        )
    return result.stdout


def screenshot(
    url: str,
    path: Path,
    profile: Path,
    *,
    size: tuple[int, int] = (1280, 2000),
    virtual_time_budget_ms: int | None = None,
    timeout: float = 60,
) -> Path:
    """A PNG of the page at `size`; returns `path`."""
    extra = [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}"]
    if virtual_time_budget_ms is not None:
        extra.append(f"--virtual-time-budget={virtual_time_budget_ms}")
    result = _run(url, profile, extra, timeout)
    if not path.exists() or path.stat().st_size == 0:
        raise AssertionError(f"chromium --screenshot {url} wrote nothing:\n{result.stderr[-2000:]}")
    return path


@dataclass
class Element:
    """An element of a parsed DOM: tag, attributes, its text (descendants included), children."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with `tag` whose attributes equal `attrs` (`class_` means `class`)."""
        wanted = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                (v in child.attrs.get(k, "").split() if k == "class" else child.attrs.get(k) == v)
                for k, v in wanted.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def find(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        if not found:
            raise AssertionError(f"no <{tag or '*'}> with {attrs} in the page")
        return found[0]

    def by_id(self, element_id: str) -> Element:
        return self.find(id=element_id)

    def num(self, name: str) -> float:
        return float(self.attrs[name])


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        for element in self.stack:
            element.text += data


def parse_dom(html: str) -> Element:
    """Parse serialised HTML into `Element`s for assertions."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root
