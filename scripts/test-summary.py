"""The last line of `make test`: how many tests ran and how many were skipped.

    python scripts/test-summary.py REPORT.xml

REPORT.xml is pytest's JUnit XML (``pytest --junitxml``). Exit status 1 when CI=true and a test
was skipped: CI installs every component the suite needs, so a skip there is a broken machine
(the suite's own component checks already fail instead of skipping; this catches any other).
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET


def main(argv: list[str]) -> int:
    (path,) = argv
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        print("make test: no test report: pytest stopped before it ran the tests (see above)")
        return 0
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")

    def count(key: str) -> int:
        return sum(int(suite.get(key, 0)) for suite in suites)

    skipped, failed, errors = count("skipped"), count("failures"), count("errors")
    ran = count("tests") - skipped
    print(f"make test: {ran} tests ran, {skipped} skipped ({failed} failed, {errors} errors)")
    if skipped and os.environ.get("CI") == "true":
        print(f"make test: CI=true and {skipped} test(s) skipped: failing (pytest -rs says why)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
