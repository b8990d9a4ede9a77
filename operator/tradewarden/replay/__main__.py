"""``python -m tradewarden.replay``: see :mod:`tradewarden.replay.cli`."""

from __future__ import annotations

import sys

from tradewarden.replay.cli import main

sys.exit(main())
