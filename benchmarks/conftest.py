"""Benchmarks are collected only from this folder, by `make bench` (they never run in `make test`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
