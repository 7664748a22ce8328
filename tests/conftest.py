"""Test-wide settings: quiet TensorFlow, a non-interactive plot backend, the `slow` marker, and with
VOXTRACE_NO_SKIPS=1 (set by `make test`) a run that skipped any test fails: the install provides every
engine, browser and package the tests need, so a skip there means a missing install step."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

NO_SKIPS = os.environ.get("VOXTRACE_NO_SKIPS") == "1"


def _skipped(session) -> list:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    return reporter.stats.get("skipped", []) if reporter is not None else []


def pytest_sessionfinish(session, exitstatus):
    if NO_SKIPS and exitstatus == pytest.ExitCode.OK and _skipped(session):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if NO_SKIPS and skipped:
        terminalreporter.write_line(
            f"VOXTRACE_NO_SKIPS=1: {len(skipped)} skipped test(s) fail this run (reasons in the summary)", red=True)
