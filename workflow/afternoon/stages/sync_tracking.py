"""Stage sync-tracking (run by hand, not a rule): once the tracking store is back, re-log from
disk every run whose tracking failed (``afternoon.tracking.sync``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from afternoon.tracking.sync import sync_tracking


def main(args: argparse.Namespace) -> None:
    sync_tracking(Path(args.results), Path(args.marker) if args.marker else None)
