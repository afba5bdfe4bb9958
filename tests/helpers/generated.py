"""The doc sections generated from code, and the one command that rewrites them.

Each section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in
its file; ``tests/test_docs.py`` fails when one differs from what its source
generates. Regenerate them all, from the checkout root, with::

    .venv/bin/python -m tests.helpers.generated
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from celgate.policy import context
from celgate.proxy import settings

from . import REPO

__all__ = ["GENERATED", "Generated", "main"]

REGENERATE = ".venv/bin/python -m tests.helpers.generated"


@dataclass(frozen=True)
class Generated:
    """One generated section: ``marker`` in ``path`` (relative to the checkout), made by ``source``."""

    path: str
    marker: str
    source: Callable[[], str]

    def _split(self) -> tuple[str, str, str]:
        """The file's text before, inside and after the markers."""
        text = (REPO / self.path).read_text()
        found = re.search(rf"(?<=<!-- {self.marker}:start -->\n)(.*?)(?=<!-- {self.marker}:end -->)", text, re.DOTALL)
        assert found, f"{self.path} lacks the {self.marker} markers"
        return text[: found.start()], found.group(), text[found.end() :]

    def current(self) -> str:
        """The section as the file has it now."""
        return self._split()[1]

    def generate(self) -> str:
        """The section as its source makes it."""
        return self.source() + "\n"

    def write(self) -> bool:
        """Rewrite the section from its source; True when the file changed."""
        before, inside, after = self._split()
        (REPO / self.path).write_text(before + self.generate() + after)
        return inside != self.generate()


GENERATED = (
    Generated("README.md", "settings-table", settings.markdown_table),
    Generated("docs/policies.md", "context-table", context.markdown_table),
)


def main() -> None:
    for section in GENERATED:
        print(f"{section.path} ({section.marker}): {'rewritten' if section.write() else 'up to date'}")


if __name__ == "__main__":
    main()
