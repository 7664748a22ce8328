"""Test-wide settings: quiet TensorFlow, a non-interactive plot backend, the `slow` marker."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
