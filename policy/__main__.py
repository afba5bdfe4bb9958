"""``python -m celgate.policy check|test|explain ...``: the same as ``celgate policy ...``."""

import sys

from .cli import main

__all__: list[str] = []

sys.exit(main(sys.argv[1:]))
