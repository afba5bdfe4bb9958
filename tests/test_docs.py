"""The docs stay true: generated sections match their source, links and file paths resolve, flags exist.

Checked files: the README, CONTRIBUTING, CHANGELOG and every page under
``docs/`` and ``deploy/``. A path is an inline code span naming something in the checkout
(``proxy/settings.py``, ``tests/helpers/``, ``policies/*.yaml``), or a test as
``file::function``; docs/security.md names tests relative to ``tests/``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from celgate.proxy import cli
from tests.helpers import REPO
from tests.helpers.generated import GENERATED, REGENERATE, Generated

DOCS = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "CHANGELOG.md",
    *sorted((REPO / "docs").rglob("*.md")),
    *sorted((REPO / "deploy").rglob("*.md")),
]

# Paths the docs name because they must not exist, or no longer do.
ABSENT_ON_PURPOSE = {
    ("docs/agents.md", "agents/__init__.py"),  # "Don't add agents/__init__.py"
    ("CHANGELOG.md", "policy/model.py"),  # a rename, as history
}

_FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\s]+)`")


def _prose(doc: Path) -> str:
    """The text outside fenced code blocks: a path in a shell example is not a reference."""
    return _FENCE.sub("", doc.read_text())


def _name(doc: Path) -> str:
    return doc.relative_to(REPO).as_posix()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(doc), re.MULTILINE):
        slug, n = _slug(heading), 1
        while slug in anchors:  # repeated headings get -1, -2, ...
            slug, n = f"{_slug(heading)}-{n}", n + 1
        anchors.add(slug)
    return anchors


def _links() -> list[tuple[str, str]]:
    return [(_name(doc), target) for doc in DOCS for target in _LINK.findall(_prose(doc)) if ":" not in target]


def _path_references() -> list[tuple[str, str]]:
    tops = {p.name for p in REPO.iterdir()} | {p.name for p in (REPO / "tests").iterdir()} | {"celgate"}
    return [
        (_name(doc), span)
        for doc in DOCS
        for span in _CODE.findall(_prose(doc))
        if "/" in span and span.split("/")[0] in tops and "<" not in span
    ]


@pytest.mark.parametrize("section", GENERATED, ids=lambda s: f"{s.path}:{s.marker}")
def test_generated_sections_match_their_source(section: Generated) -> None:
    assert section.current() == section.generate(), f"regenerate with: {REGENERATE}"


@pytest.mark.parametrize(("doc", "target"), _links())
def test_every_relative_link_resolves(doc: str, target: str) -> None:
    path, _, fragment = target.partition("#")
    file = (REPO / doc).parent / path if path else REPO / doc
    assert file.exists(), f"{doc}: link to missing {path}"
    if fragment:
        assert fragment in _anchors(file), f"{doc}: no heading #{fragment} in {_name(file.resolve())}"


@pytest.mark.parametrize(("doc", "span"), _path_references())
def test_every_referenced_file_exists(doc: str, span: str) -> None:
    path, _, function = span.partition("::")
    bases = (REPO, (REPO / doc).parent, REPO / "tests")
    found = [match for base in bases for match in base.glob(path.rstrip("/"))]
    if (doc, path) in ABSENT_ON_PURPOSE:
        assert not found, f"{doc} names {path} as absent, but it exists"
        return
    assert found, f"{doc}: {path} does not exist"
    if function:
        assert re.search(rf"^(async )?def {function}\(", found[0].read_text(), re.MULTILINE), (
            f"{doc}: {path} has no {function}"
        )


def test_every_flag_in_the_readme_table_is_a_serve_flag() -> None:
    table = next(s for s in GENERATED if s.marker == "settings-table").current()
    documented = {flag for cell in re.findall(r"^\| `([^`]+)`", table, re.MULTILINE) for flag in cell.split(" / ")}
    documented = {flag.split()[0] for flag in documented}
    assert len(documented) > 20, "the README's configuration table was not found"
    assert documented <= _serve_flags(), documented - _serve_flags()


def _serve_flags() -> set[str]:
    """The option strings ``celgate serve`` accepts, from the CLI's own parser."""
    (commands,) = (a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(commands.choices["serve"]._option_string_actions)
