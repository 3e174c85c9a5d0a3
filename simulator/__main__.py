"""`python -m simulator ...`: the same as `gruwatch simulate ...`."""

from __future__ import annotations

import sys

from gruwatch.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["simulate", *sys.argv[1:]]))
