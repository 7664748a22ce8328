#!/usr/bin/env python
"""`voxtrace train` as the reference's top-level script. See `python train.py --help`."""

import sys

from voxtrace.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("train"))
