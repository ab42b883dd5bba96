"""Read README.md as a reader would type it: the commands of its ```bash blocks, in order.

A bash block gives one command per logical line (`\\` continuations joined, comments dropped);
`a && b` gives two commands. A comment that is JSON (a trailing `# {...}` or a following
`# -> {...}` line, up to the first two spaces) is the output the README promises for the command
before it. A non-bash block that the paragraph before it says to save (`Save this as `NAME``)
is a file the reader writes at that point.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\w*)\s*$")
SAVE_AS = re.compile(r"[Ss]ave (?:this|it) as `(?P<name>[^`]+)`[^\n]*$")


@dataclass(frozen=True)
class Command:
    text: str  # as a shell runs it: continuations joined, comment dropped
    line: int  # README line the command starts on
    promise: Any = None  # JSON the README says it prints, if it says so

    @property
    def background(self) -> bool:
        return self.text.endswith("&") and not self.text.endswith("&&")


@dataclass(frozen=True)
class SavedFile:
    name: str
    text: str
    line: int


Step = Command | SavedFile


def readme_steps(text: str) -> list[Step]:
    """Commands of the bash blocks and files the prose says to save, in README order."""
    steps: list[Step] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence.group("lang"):
            i += 1
            continue
        indent, lang, start = fence.group("indent"), fence.group("lang"), i + 1
        end = start
        while not re.match(rf"^{indent}```\s*$", lines[end]):
            end += 1
        body = textwrap.dedent("\n".join(lines[start:end]))
        if lang == "bash":
            steps.extend(block_commands(body, first_line=start + 1))
        else:
            saved = SAVE_AS.search(_paragraph_before(lines, i))
            if saved:
                steps.append(SavedFile(saved.group("name"), body + "\n", start + 1))
        i = end + 1
    return steps


def block_commands(body: str, *, first_line: int = 1) -> list[Command]:
    commands: list[Command] = []
    physical = body.splitlines()
    n = 0
    while n < len(physical):
        line_no, logical = first_line + n, physical[n]
        while logical.endswith("\\") and n + 1 < len(physical):
            n += 1
            logical = logical[:-1].rstrip() + " " + physical[n].strip()
        n += 1
        code, comment = split_comment(logical)
        code = code.strip()
        if not code:
            if comment is not None and comment.startswith("->") and commands:
                promise = parse_promise(comment[2:])
                if promise is not None:
                    commands[-1] = Command(commands[-1].text, commands[-1].line, promise)
            continue
        parts = split_and(code)
        for k, part in enumerate(parts):
            last = k == len(parts) - 1
            promise = parse_promise(comment) if last and comment is not None else None
            commands.append(Command(part, line_no, promise))
    return commands


def split_comment(line: str) -> tuple[str, str | None]:
    """(code, comment text or None): a `#` outside quotes, at the start or after a blank."""
    quote: str | None = None
    escaped = False
    for pos, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (pos == 0 or line[pos - 1].isspace()):
            return line[:pos].rstrip(), line[pos + 1 :].strip()
    return line.rstrip(), None


def split_and(code: str) -> list[str]:
    """`a && b` -> [a, b] (outside quotes); anything else -> [code]."""
    parts: list[str] = []
    quote: str | None = None
    start = 0
    pos = 0
    while pos < len(code):
        char = code[pos]
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif code.startswith("&&", pos):
            parts.append(code[start:pos].strip())
            start = pos + 2
            pos += 1
        pos += 1
    parts.append(code[start:].strip())
    return [p for p in parts if p]


def parse_promise(comment: str) -> Any:
    """The JSON at the start of a comment (up to two blanks), or None."""
    text = re.split(r"\s{2,}", comment.strip(), maxsplit=1)[0]
    if not text.startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def contains(actual: Any, promised: Any) -> bool:
    """Whether `actual` has everything `promised` has (dict keys may be extra in `actual`)."""
    if isinstance(promised, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in promised.items()
        )
    if isinstance(promised, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(promised)
            and all(contains(a, p) for a, p in zip(actual, promised, strict=True))
        )
    return bool(actual == promised)


def _paragraph_before(lines: list[str], fence_index: int) -> str:
    k = fence_index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    paragraph: list[str] = []
    while k >= 0 and lines[k].strip() and not FENCE.match(lines[k]):
        paragraph.insert(0, lines[k])
        k -= 1
    return " ".join(line.strip() for line in paragraph)
