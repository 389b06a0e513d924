"""Stage report: the study's report (``afternoon.report.study``): "The Score Thus Far" table,
learning curves, overfitting gaps, costs, per-run confusion matrices and misclassified images,
the searches, provenance; one self-contained HTML page plus scores.csv, scores.md and the
figures. ``--settings`` is the report-only config slice the rule passes, ``--paths`` every file
it reads and writes (``layout``)."""

from __future__ import annotations

import argparse

from afternoon.report.study import build_report


def main(args: argparse.Namespace) -> None:
    build_report(args.settings, args.paths)
