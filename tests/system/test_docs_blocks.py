"""The docs stay honest: every shell walkthrough is tagged and run by a test, the README stays a
front door, and relative links lead somewhere.

The rule for fenced blocks in README.md and docs/*.md:

* a ```sh block is a walkthrough: it must sit right under a ``<!-- doc-test: TAG -->`` line, its
  tag must be unique, and some test under tests/ must run it with ``doc_block("TAG")`` or
  ``run_block("TAG", …)`` (tests/support/docs.py);
* commands that cannot run inside a test (``make run``, ``make test``, a bench, a reply shown
  with placeholders) go in a ```console or ```text block, which is shown and never run;
* any other language (```python, ```json, …) is not allowed for shell, and no block is left
  without a language.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from tests.support.docs import REPO, TAG_PREFIX, doc_pages, fences, stray_tags, tagged_blocks

README_LIMIT = 15_000  # bytes
SHOWN_ONLY = {"console", "text"}
RUN = {"sh"}
SHELLISH = {"bash", "shell", "zsh", "shell-session"}
LINK = re.compile(r"(?<!\!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
USE = re.compile(r"""\b(?:doc_block|run_block)\(\s*["']([\w.-]+)["']""")


def _test_sources() -> str:
    this = Path(__file__).resolve()
    return "\n".join(
        path.read_text() for path in sorted((REPO / "tests").rglob("*.py")) if path != this
    )


def test_every_fence_has_a_language_and_no_shell_goes_unmarked() -> None:
    wrong = []
    for page in doc_pages():
        for fence in fences(page):
            if not fence.lang:
                wrong.append(f"{fence.where}: a fence without a language")
            elif fence.lang in SHELLISH:
                wrong.append(
                    f"{fence.where}: ```{fence.lang}: use ```sh (tagged, run by a test) or "
                    "```console (shown only)"
                )
    assert wrong == []


def test_every_sh_block_is_tagged() -> None:
    untagged = [
        fence.where
        for page in doc_pages()
        for fence in fences(page)
        if fence.lang in RUN and fence.tag is None
    ]
    assert untagged == [], (
        f"```sh blocks without <!-- {TAG_PREFIX}: TAG --> right above them: {untagged}; tag "
        "them and run them in a test, or show them as ```console if they cannot run in one"
    )


def test_tags_are_unique_and_sit_on_sh_blocks() -> None:
    duplicated = {tag: [f.where for f in found] for tag, found in tagged_blocks().items()}
    assert {tag: where for tag, where in duplicated.items() if len(where) > 1} == {}
    assert stray_tags() == []


def test_every_tag_is_run_by_a_test() -> None:
    used = set(USE.findall(_test_sources()))
    unused = {tag: found[0].where for tag, found in tagged_blocks().items() if tag not in used}
    assert unused == {}, f"tagged blocks no test runs (doc_block/run_block): {unused}"


def test_tests_name_only_tags_that_exist() -> None:
    missing = set(USE.findall(_test_sources())) - set(tagged_blocks())
    assert missing == set()


def test_the_readme_is_a_front_door() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def _anchors(page: Path) -> set[str]:
    text = page.read_text()
    for fence in reversed(fences(page)):  # headings inside code blocks are not headings
        text = text.replace(fence.body, "")
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def test_relative_links_lead_somewhere() -> None:
    broken = []
    for page in doc_pages():
        text = page.read_text()
        for fence in fences(page):
            text = text.replace(fence.body, "")
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, …
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / unquote(path)).resolve() if path else page
            where = f"{page.relative_to(REPO)}: {target}"
            if not resolved.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert broken == []
