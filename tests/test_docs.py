"""The documentation: the shipped contract equals the shared one, and every
relative link in the README, docs/ and bench/README.md points to a file of
this repository (and, with an anchor into Markdown, to one of its headings)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_CONTRACT = ROOT / "docs" / "CONTRACT.md"
# The contract's source, beside the repository (../shared) where it is checked out.
SHARED_CONTRACT = Path(__file__).resolve().parents[2] / "shared" / "CONTRACT.md"

DOCUMENTS = sorted([ROOT / "README.md", ROOT / "bench" / "README.md", *ROOT.glob("docs/*.md")])

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.DOTALL)
LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\(\s*<?(?P<target>[^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t#]*$", re.MULTILINE)


def relative_links(markdown: str) -> list[str]:
    """Link targets of `[text](target)` outside code, without URLs."""
    prose = CODE_SPAN.sub("", FENCE.sub("", markdown))
    targets = (match["target"] for match in LINK.finditer(prose))
    return [target for target in targets if not EXTERNAL.match(target)]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped,
    spaces as hyphens, `-1`, `-2`, ... for repeats."""
    seen: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", markdown)):
        slug = re.sub(r"[^\w\- ]", "", match["title"].strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen[f"{slug}-{count}"] = 1
    return set(seen)


def has_heading(document: Path, anchor: str) -> bool:
    return unquote(anchor) in anchors(document.read_text(encoding="utf-8"))


def test_link_parser_sees_links_and_skips_code_urls_and_anchors() -> None:
    text = (
        "See [the contract](CONTRACT.md#3-endpoints) and [a site](https://example.com),\n"
        '[an anchor](#top), [a\nwrapped one](<operations.md> "title").\n'
        "`[not](code.md)`\n```\n[nor](fenced.md)\n```\n"
    )
    assert relative_links(text) == ["CONTRACT.md#3-endpoints", "#top", "operations.md"]


def test_anchors_follow_github() -> None:
    text = "# Rotor — the contract\n## 3.2 `POST /token` (form)\n## Logs\n## Logs\n```\n# no\n```\n"
    assert anchors(text) == {"rotor--the-contract", "32-post-token-form", "logs", "logs-1"}


def test_the_shipped_contract_equals_the_shared_one() -> None:
    if not SHARED_CONTRACT.is_file():
        pytest.skip(
            f"{SHARED_CONTRACT} is absent (a clone without the shared folder): "
            "docs/CONTRACT.md was not compared with its source"
        )
    assert SHIPPED_CONTRACT.read_bytes() == SHARED_CONTRACT.read_bytes(), (
        "docs/CONTRACT.md differs from ../shared/CONTRACT.md: copy it again "
        "(cp ../shared/CONTRACT.md docs/CONTRACT.md)"
    )


def test_the_readme_links_every_document() -> None:
    linked = {
        target.partition("#")[0]
        for target in relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    }
    assert {
        "docs/CONTRACT.md",
        "docs/behaviour.md",
        "docs/operations.md",
        "docs/clients.md",
        "bench/README.md",
        "openapi/openapi.json",
    } <= linked


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_point_to_files_of_the_repository(document: Path) -> None:
    broken = []
    for target in relative_links(document.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        resolved = (document.parent / unquote(path)).resolve() if path else document
        if not resolved.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and not has_heading(resolved, anchor):
            broken.append(f"{target}: no such heading")
    assert broken == []
