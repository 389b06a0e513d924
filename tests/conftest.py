"""Shared test set-up: the repository root and the package on sys.path."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if str(REPO / "workflow") not in sys.path:
    sys.path.insert(0, str(REPO / "workflow"))
