"""``python -m celgate.proxy`` is ``celgate``."""

import sys

from .cli import main

sys.exit(main())
