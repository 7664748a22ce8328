"""The benchmarks' shared timing tools: interleaved rounds, the headline line and its parser."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_rounds_alternate_their_order_and_summarise_like_numpy():
    rounds = _load("rounds")
    order = []
    seconds = rounds.interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=4)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert [len(v) for v in seconds.values()] == [4, 4]
    values = [0.3, -0.1, 2.0, 0.05, 0.4]
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert rounds.summary(values) == {"median": median, "min": -0.1, "max": 2.0, "iqr": q3 - q1, "rounds": 5}


def test_run_all_reads_back_the_headline_each_benchmark_prints():
    rounds, run_all = _load("rounds"), _load("run_all")
    output = "warming up\n" + rounds.headline("loop_overhead", [0.01, 0.02, -0.03]) + "\n"
    parsed = run_all.parse_headlines(output)
    assert set(parsed) == {"loop_overhead"}
    assert float(parsed["loop_overhead"]["median"]) == 0.01
    assert float(parsed["loop_overhead"]["min"]) == -0.03 and parsed["loop_overhead"]["rounds"] == "3"
