"""Interleaved timing rounds and the headline line every ratio benchmark prints last.

Two (or more) workloads are timed in alternating rounds, the order flipped every round (A B, B A, A B, ...),
so that a slow spell of a shared machine lands on both sides. Each round gives one ratio of the two times
measured next to each other; the headline is the median of those ratios with their spread.
"""

from __future__ import annotations

import time

import numpy as np


def interleaved(workloads: dict, rounds: int, pause: float = 0.0, cpu_seconds: dict | None = None
                ) -> dict[str, list[float]]:
    """Wall seconds of each workload (a callable of no argument) per round, the order reversed every round.

    `cpu_seconds`, when given, receives the CPU seconds this process spent in each run the same way: unlike
    wall time, they do not grow when other processes take the cores.
    """
    names = list(workloads)
    seconds = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            time.sleep(pause)
            start, cpu_start = time.perf_counter(), time.process_time()
            workloads[name]()
            seconds[name].append(time.perf_counter() - start)
            if cpu_seconds is not None:
                cpu_seconds.setdefault(name, []).append(time.process_time() - cpu_start)
    return seconds


def summary(values) -> dict:
    """Median, min, max and interquartile range of per-round values."""
    values = np.asarray(values, dtype=np.float64)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "min": float(values.min()), "max": float(values.max()),
            "iqr": float(q3 - q1), "rounds": int(values.size)}


def headline(name: str, values, fmt: str = ".3f") -> str:
    """The last line of a benchmark: `name: median=X min=A max=B iqr=Q rounds=N` (read by run_all.py)."""
    s = summary(values)
    return (f"{name}: median={s['median']:{fmt}} min={s['min']:{fmt}} max={s['max']:{fmt}} "
            f"iqr={s['iqr']:{fmt}} rounds={s['rounds']}")
