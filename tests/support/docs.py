"""The shell walkthroughs of README.md and docs/*.md, found by tag and run as written.

A walkthrough is a ```sh fence immediately after a ``<!-- doc-test: TAG -->`` line. Its tag is
unique across the README and every docs page, so a test names the block, not the page it lives
on, and the block can move between pages without the test noticing. ``run_block`` runs one
against a real server: the paths and addresses the docs use for ``make run`` (``.data``,
``127.0.0.1:50051``, ``:8080``, ``:8443``) are rewritten to the test's own.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TAG_PREFIX = "doc-test"

FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
TAG_LINE = re.compile(rf"^<!-- {TAG_PREFIX}: (\S+) -->\n\Z")
DATA_DIR = re.compile(r"(?<![\w/])\.data\b")
GRPC_ADDRESS = "127.0.0.1:50051"
HTTP_ADDRESS = "127.0.0.1:8080"
ADMIN_ADDRESS = "127.0.0.1:8443"


def doc_pages() -> list[Path]:
    """The README and every docs page, in a stable order."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Fence:
    """One fenced code block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    tag: str | None  # from the line immediately before the fence, if it is a doc-test tag

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def fences(page: Path) -> list[Fence]:
    """Every fenced block of a page, with the doc-test tag on the line just above it."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        previous_line = before[before.rstrip("\n").rfind("\n") + 1 :] if before else ""
        tag = TAG_LINE.match(previous_line)
        found.append(
            Fence(
                page=page,
                line=before.count("\n") + 1,
                lang=match.group(1),
                body=match.group(2),
                tag=tag.group(1) if tag else None,
            )
        )
    return found


def tagged_blocks() -> dict[str, list[Fence]]:
    """Every tagged ```sh block, by tag (a list, so that duplicates show)."""
    blocks: dict[str, list[Fence]] = {}
    for page in doc_pages():
        for fence in fences(page):
            if fence.tag is not None and fence.lang == "sh":
                blocks.setdefault(fence.tag, []).append(fence)
    return blocks


def stray_tags() -> list[str]:
    """Tag comments that are not immediately followed by a ```sh fence (where they are)."""
    stray = []
    for page in doc_pages():
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith(f"<!-- {TAG_PREFIX}:"):
                follows = lines[i + 1] if i + 1 < len(lines) else ""
                if TAG_LINE.match(line + "\n") is None or follows.strip() != "```sh":
                    stray.append(f"{page.relative_to(REPO)}:{i + 1}: {line}")
    return stray


def doc_block(tag: str) -> str:
    """The body of the ```sh block tagged ``tag`` in README.md or docs/*.md; fails unless the tag
    is there exactly once."""
    found = tagged_blocks().get(tag, [])
    where = ", ".join(f.where for f in found)
    assert found, f"no ```sh block tagged <!-- {TAG_PREFIX}: {tag} --> in README.md or docs/*.md"
    assert len(found) == 1, f"<!-- {TAG_PREFIX}: {tag} --> tags {len(found)} blocks: {where}"
    return found[0].body


def rewrite(
    script: str,
    data_dir: Path,
    address: str | None = None,
    *,
    http: str | None = None,
    admin: str | None = None,
) -> str:
    """The script with the docs' ``make run`` data directory and addresses replaced."""
    script = DATA_DIR.sub(lambda _: str(data_dir), script)
    for documented, actual in (
        (GRPC_ADDRESS, address),
        (HTTP_ADDRESS, http),
        (ADMIN_ADDRESS, admin),
    ):
        if actual is not None:
            script = script.replace(documented, actual)
    return script


def run_block(
    tag: str,
    data_dir: Path,
    address: str | None = None,
    *,
    prelude: str = "",
    http: str | None = None,
    admin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Runs the block tagged ``tag`` (after ``prelude``) with bash -euo pipefail from the
    repository root, against the given data directory and addresses."""
    script = rewrite(prelude + doc_block(tag), data_dir, address, http=http, admin=admin)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False,
    )  # fmt: skip
