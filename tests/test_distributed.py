"""The training loop under MirroredStrategy and MultiWorkerMirroredStrategy (subprocesses: device and cluster
setup must happen before TensorFlow starts)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multiworker_worker.py")


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _weights(path):
    with np.load(path) as data:
        return [data[k] for k in data.files]


def test_mirrored_two_cpu_replicas_match_default_strategy(tmp_path):
    proc = subprocess.run([sys.executable, str(WORKER), "mirrored", str(tmp_path)], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = json.loads((tmp_path / "mirrored.json").read_text())
    assert logs["replicas"] == 2
    default, mirrored = _weights(tmp_path / "default.npz"), _weights(tmp_path / "mirrored.npz")
    for a, b in zip(default, mirrored):
        np.testing.assert_allclose(a, b, atol=1e-5)
    reference = json.loads((tmp_path / "default.json").read_text())
    assert reference["loss"][1] < reference["loss"][0]  # it trained
    np.testing.assert_allclose(logs["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs["val_f1"], reference["val_f1"], rtol=1e-5)


def test_two_workers_train_together_to_the_single_process_weights(tmp_path):
    """Two workers of one global batch end with the weights and losses of one process trained on that batch."""
    single = subprocess.run([sys.executable, str(WORKER), "single", str(tmp_path)], env=_env(), capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ports = ",".join(str(p) for p in _free_ports(2))
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), "multiworker", str(tmp_path), "--task-index", str(i),
                          "--ports", ports], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    logs = [json.loads((tmp_path / f"worker-{i}.json").read_text()) for i in range(2)]
    assert [log["is_chief"] for log in logs] == [True, False]
    assert all(log["replicas"] == 2 for log in logs)
    assert logs[0]["loss"] == logs[1]["loss"] and logs[0]["val_f1"] == logs[1]["val_f1"]
    w0, w1 = _weights(tmp_path / "worker-0.npz"), _weights(tmp_path / "worker-1.npz")
    assert len(w0) == len(w1) == 4
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)

    reference = json.loads((tmp_path / "single.json").read_text())
    assert reference["loss"][1] < reference["loss"][0]  # it trained
    np.testing.assert_allclose(logs[0]["loss"], reference["loss"], rtol=1e-5)
    np.testing.assert_allclose(logs[0]["val_f1"], reference["val_f1"], rtol=1e-5)
    for a, b in zip(w0, _weights(tmp_path / "single.npz")):
        np.testing.assert_allclose(a, b, atol=1e-5)
