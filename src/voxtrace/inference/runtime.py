"""Run exported models (`voxtrace export`) like Keras checkpoints, without TensorFlow for ONNX and TFLite.

ONNX runs on ONNX Runtime, TFLite on LiteRT (`ai_edge_litert`, TensorFlow's interpreter only where LiteRT
is not installed); a SavedModel needs TensorFlow. An export folder `OUT` (its `manifest.json` lists the
members) is a model dir like a folder of runs: `export_runs` gives one `ModelRun` per exported run, whose
checkpoints are the member folders, and `ExportedModel.load` loads a member, so `voxtrace predict` and
`voxtrace serve` score an export with the same windows, aggregation and open-set rule as the checkpoints.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INPUT_NAME = "waveform"
DEFAULT_BATCH = 32  # windows per call of a dynamic-batch export (benchmarks/export_speed.py)


def cpu_threads() -> int:
    """The CPU cores this process may run on: the threads of an exported model. Through `voxtrace predict`'s
    path on the idle 2-core CPU, two threads scored 1.19x (ONNX) and 1.25x (TFLite) Keras' files/s, one thread
    0.81x and 0.72x (benchmarks/export_speed.py): the decoding threads need little of a core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def onnx_options(threads: int | None = None):
    """ONNX Runtime settings of `OnnxRunner`: every graph optimisation, operators one after the other,
    `cpu_threads()` intra-op threads that sleep rather than spin between operators (the decoding threads share
    the cores). benchmarks/export_speed.py --levers times the alternatives."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRunner:
    """An ONNX Runtime session on the CPU (`onnx_options`)."""

    def __init__(self, path: str, threads: int | None = None):
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, onnx_options(threads), providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        self.input_name = spec.name
        self.batch = spec.shape[0] if isinstance(spec.shape[0], int) else None

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: waveforms})[0]


def tflite_interpreter_class():
    """LiteRT's `Interpreter`, or TensorFlow's where `ai_edge_litert` is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteRunner:
    """A TFLite interpreter (XNNPACK, the default delegate, `cpu_threads()`), resized to each batch."""

    def __init__(self, model_content: bytes | None = None, model_path: str | None = None,
                 threads: int | None = None):
        import warnings

        with warnings.catch_warnings():  # tf.lite.Interpreter announces its move to LiteRT
            warnings.simplefilter("ignore")
            self.interpreter = tflite_interpreter_class()(model_content=model_content, model_path=model_path,
                                                          num_threads=threads or cpu_threads())
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = None if self.input["shape_signature"][0] == -1 else int(self.input["shape"][0])
        self.allocated = None

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        if self.allocated != waveforms.shape:
            if self.batch is None:
                self.interpreter.resize_tensor_input(self.input["index"], list(waveforms.shape))
            self.interpreter.allocate_tensors()
            self.allocated = waveforms.shape
        self.interpreter.set_tensor(self.input["index"], waveforms)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).copy()


class SavedModelRunner:
    """A TF SavedModel's serving signature (needs TensorFlow)."""

    def __init__(self, path: str, output_name: str | None = None):
        import tensorflow as tf

        self.loaded = tf.saved_model.load(path)
        self.fn = self.loaded.signatures["serving_default"]
        self.output_name = output_name or next(iter(self.fn.structured_outputs))
        self.batch = self.fn.structured_input_signature[1][INPUT_NAME].shape[0]

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        return self.fn(**{INPUT_NAME: tf.constant(waveforms)})[self.output_name].numpy()


def read_manifest(folder: Path) -> dict:
    """`folder/manifest.json`, or FileNotFoundError / ValueError naming it."""
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.json in export folder {folder}")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err


@dataclass
class ExportedModel:
    """An exported model folder, run like a Keras model: `predict_on_batch(waveforms [B, N]) -> [B, C]`."""

    folder: Path
    manifest: dict
    runner: object

    @classmethod
    def load(cls, folder) -> "ExportedModel":
        from voxtrace.vocabulary import EXPORT_FORMATS

        folder = Path(folder)
        manifest = read_manifest(folder)
        fmt = manifest.get("format")
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"{folder / 'manifest.json'}: format must be one of {list(EXPORT_FORMATS)}. "
                             f"Received: format={fmt!r}")
        path = str(folder / manifest["file"])
        if fmt == "savedmodel":
            runner = SavedModelRunner(path, manifest["output"]["name"])
        elif fmt == "tflite":
            runner = TFLiteRunner(model_path=path)
        else:
            runner = OnnxRunner(path)
        return cls(folder=folder, manifest=manifest, runner=runner)

    @property
    def name(self) -> str:
        return f"{self.manifest.get('run', self.folder.name)}/{self.folder.name} ({self.manifest['format']})"

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def batch_size(self) -> int:
        """Windows per call: the export's fixed batch, else `DEFAULT_BATCH`."""
        return self.manifest["input"]["shape"][0] or DEFAULT_BATCH

    def predict_on_batch(self, waveforms) -> np.ndarray:
        """Probabilities `[B, C]`; a fixed-batch export is fed in zero-padded chunks of its batch size."""
        waveforms = np.ascontiguousarray(waveforms, dtype=np.float32)
        batch = self.manifest["input"]["shape"][0]
        if batch is None or batch == len(waveforms):
            return np.asarray(self.runner(waveforms))
        parts = []
        for start in range(0, len(waveforms), batch):
            chunk = waveforms[start:start + batch]
            padded = np.zeros((batch, waveforms.shape[1]), np.float32)
            padded[: len(chunk)] = chunk
            parts.append(np.asarray(self.runner(padded))[: len(chunk)])
        return np.concatenate(parts)

    __call__ = predict_on_batch


def is_export_folder(path) -> bool:
    """Whether `path` is an exported ensemble (`OUT/manifest.json` listing `members`)."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    try:
        return "members" in json.loads(manifest.read_text())
    except ValueError:
        return False


def is_export_member(path) -> bool:
    """Whether `path` is one exported model folder (its `manifest.json` names a model `file`)."""
    return Path(path).is_dir() and (Path(path) / "manifest.json").is_file()


def export_runs(out) -> list:
    """One `ModelRun` per run of the exported ensemble `out`: its member folders as checkpoints, the config
    exported beside them, and `OUT/RUN/csv/oof.csv` (the run's out-of-fold scores) for open-set calibration."""
    from voxtrace.config import Config
    from voxtrace.inference.checkpoints import ModelRun, check_same_classes

    out = Path(out)
    members = read_manifest(out).get("members") or []
    if not members:
        raise FileNotFoundError(f"the exported ensemble {out / 'manifest.json'} lists no members")
    by_run: dict[str, list[Path]] = {}
    for member in members:
        folder = out / member["path"]
        if not is_export_member(folder):
            raise FileNotFoundError(f"{out / 'manifest.json'} lists member {member['path']!r}, but {folder} "
                                    f"has no manifest.json")
        by_run.setdefault(member["run"], []).append(folder)
    runs = []
    for name, folders in sorted(by_run.items()):
        config = folders[0] / read_manifest(folders[0]).get("config", "config.yaml")
        if not config.is_file():
            raise FileNotFoundError(f"exported model {folders[0]} has no config beside it: expected {config}")
        runs.append(ModelRun(run_dir=out / name, name=name, cfg=Config.load(config), checkpoints=sorted(folders),
                             exported=True))
    check_same_classes(runs)
    return runs


def load_exported_ensemble(out) -> list[ExportedModel]:
    """Every member listed in `OUT/manifest.json` of an exported ensemble."""
    out = Path(out)
    if not (out / "manifest.json").is_file():
        raise FileNotFoundError(f"no ensemble manifest.json in {out}; export with `voxtrace export` first")
    return [ExportedModel.load(out / m["path"]) for m in read_manifest(out)["members"]]
