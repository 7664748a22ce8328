"""Distribution strategies, mixed precision and seeding."""

from __future__ import annotations

import glob
import json
import logging
import os
import random

import keras
import numpy as np
import tensorflow as tf

from voxtrace.vocabulary import STRATEGIES

log = logging.getLogger(__name__)


def _tf_config_workers() -> int:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 0
    try:
        return len(json.loads(raw).get("cluster", {}).get("worker", []))
    except json.JSONDecodeError as err:
        raise ValueError(f"TF_CONFIG is not valid JSON: {err}") from err


def _tpu_hinted() -> bool:
    """Whether this host may have a TPU; asking the resolver elsewhere can block on a metadata server."""
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR") or glob.glob("/dev/accel*")
                or glob.glob("/dev/vfio/[0-9]*"))


def _tpu_strategy() -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def tensorflow_summary() -> str:
    """TensorFlow's version, build and the devices it sees, e.g. `TensorFlow 2.21.0 (CPU build) | devices CPU:0`;
    a CUDA build that sees no GPU says so."""
    cuda = tf.test.is_built_with_cuda()
    devices = ", ".join(d.name.rsplit("device:", 1)[-1] for d in tf.config.list_logical_devices())
    no_gpu = " (no GPU visible)" if cuda and not tf.config.list_logical_devices("GPU") else ""
    return f"TensorFlow {tf.__version__} ({'CUDA' if cuda else 'CPU'} build) | devices {devices}{no_gpu}"


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """A `tf.distribute` strategy by name (`train.strategy`); prints the devices and the strategy chosen.

    auto: a TPU if a resolver finds one, `MultiWorkerMirroredStrategy` if TF_CONFIG lists more than one
    worker, `MirroredStrategy` over every GPU if there are several, else the default strategy.
    cpu / gpu: one device. mirrored: every GPU, or every logical CPU device when there is no GPU.
    multiworker: `MultiWorkerMirroredStrategy` from TF_CONFIG. tpu: `TPUStrategy`.
    """
    strategy = _choose_strategy(name)
    replicas = strategy.num_replicas_in_sync
    log.info(f"> {tensorflow_summary()} | strategy {type(strategy).__name__}, {replicas} replica"
             + ("s" if replicas != 1 else ""))
    return strategy


def _choose_strategy(name: str) -> tf.distribute.Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {list(STRATEGIES)}. Received: train.strategy={name!r}")
    if name == "auto":
        if _tpu_hinted():
            try:
                return _tpu_strategy()
            except (ValueError, RuntimeError, tf.errors.OpError):
                pass
        if _tf_config_workers() > 1:
            return tf.distribute.MultiWorkerMirroredStrategy()
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "gpu":
        if not tf.config.list_logical_devices("GPU"):
            raise ValueError("train.strategy='gpu' but TensorFlow sees no GPU")
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("train.strategy='multiworker' needs the TF_CONFIG environment variable")
        _tf_config_workers()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the one process that writes outputs (the chief, or worker 0 of a chief-less cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


def set_mixed_precision(strategy: tf.distribute.Strategy, enabled: bool) -> str:
    """Set and return the global dtype policy: mixed_bfloat16 on TPU, mixed_float16 on GPUs of compute
    capability >= 7.0, float32 otherwise (and whenever `enabled` is false)."""
    policy = "float32"
    if enabled:
        if isinstance(strategy, tf.distribute.TPUStrategy):
            policy = "mixed_bfloat16"
        else:
            gpus = tf.config.list_physical_devices("GPU")
            capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                            for g in gpus]
            if gpus and all(c and c[0] >= 7 for c in capabilities):
                policy = "mixed_float16"
    keras.mixed_precision.set_dtype_policy(policy)
    return policy


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; `deterministic` also makes TF ops deterministic (slower)."""
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
