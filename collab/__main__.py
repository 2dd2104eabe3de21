"""``python -m collab``: the same as the ``collab`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
