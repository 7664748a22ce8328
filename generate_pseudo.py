#!/usr/bin/env python
"""`voxtrace pseudo` as the reference's top-level script. See `python generate_pseudo.py --help`."""

import sys

from voxtrace.cli import main_for

if __name__ == "__main__":
    sys.exit(main_for("pseudo"))
