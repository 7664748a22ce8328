"""Export trained checkpoints for deployment: TF SavedModel, TFLite or ONNX, each with a manifest.

Every export maps float32 waveforms `[batch, N]` (N = `audio.duration * audio.sample_rate`) to class
probabilities `[batch, C]`, front-end included. Beside each export lie `config.yaml` (the run's resolved
config) and `manifest.json` (format, file, classes, input / output names and shapes, windowing), and the
export folder holds an ensemble `manifest.json` listing every member, so an exported ensemble is
self-describing:

    OUT/manifest.json
    OUT/{run}/{fold-K|model}/{saved_model/ | model.tflite | model.onnx}, config.yaml, manifest.json

TFLite and ONNX are exported with a dynamic batch when the converter can; otherwise (a GRU's tensor lists
for TFLite) with the fixed batch `batch_size`, which `ExportedModel` fills by splitting and zero-padding.
Each run's out-of-fold scores are copied to `OUT/{run}/csv/oof.csv`, so the export calibrates the same
open-set rule. `voxtrace predict --model-dir OUT` and `voxtrace serve` run an export like checkpoints,
through `voxtrace.inference.runtime` (no TensorFlow for ONNX and TFLite).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from voxtrace.inference.checkpoints import discover_runs, load_checkpoint
from voxtrace.inference.runtime import INPUT_NAME, OnnxRunner, SavedModelRunner, TFLiteRunner
from voxtrace.inference.runtime import ExportedModel, load_exported_ensemble  # noqa: F401  (re-exported)
from voxtrace.io import atomic_path, atomic_write_json
from voxtrace.rundir import RunDir
from voxtrace.vocabulary import EXPORT_FORMATS as FORMATS

log = logging.getLogger(__name__)

FILES = {"savedmodel": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
ONNX_OPSET = 17
FIXED_BATCH = 32  # the batch of an export that cannot take a dynamic one: large enough to keep the cores busy


class ExportError(ValueError):
    """A checkpoint could not be exported to the asked format. The message says which and why."""


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {list(FORMATS)}. Received: format={fmt!r}")


def _signature(num_samples: int, batch: int | None):
    import tensorflow as tf

    return [tf.TensorSpec([batch, num_samples], tf.float32, name=INPUT_NAME)]


def _write_saved_model(model, num_samples: int, path: Path, batch: int | None = None) -> None:
    model.export(str(path), format="tf_saved_model", input_signature=_signature(num_samples, batch), verbose=False)


# ---- TFLite -----------------------------------------------------------------------------------------------
def _tflite_bytes(saved_model: Path, num_samples: int) -> bytes:
    """Convert with TFLite builtin ops only, and check that the interpreter runs the result."""
    import tensorflow as tf

    content = tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
    runner = TFLiteRunner(content)
    runner(np.zeros((runner.batch or 1, num_samples), np.float32))
    return content


def _export_tflite(model, num_samples: int, path: Path, batch_size: int) -> int | None:
    """Write `path` (.tflite); returns the fixed batch size, or None for a dynamic batch."""
    errors = []
    with tempfile.TemporaryDirectory(prefix=".export.", dir=path.parent) as tmp:
        for batch in (None, batch_size):
            saved = Path(tmp) / f"saved_model_{batch}"
            try:
                _write_saved_model(model, num_samples, saved, batch)
                content = _tflite_bytes(saved, num_samples)
            except Exception as err:  # converter and interpreter errors are many types; the next try may work
                errors.append(f"batch {batch or 'dynamic'}: {type(err).__name__}: {_tail(err)}")
                continue
            with atomic_path(path) as out:
                out.write_bytes(content)
            return batch
    raise ExportError(f"TFLite conversion of {model.name} failed with builtin ops: " + " | ".join(errors))


# ---- ONNX -------------------------------------------------------------------------------------------------
def _erfc_handler(ctx, node, name, args):
    """tf2onnx has no handler for Erfc (exact GELU): erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


def _complex_abs_handler(ctx, node, name, args):
    """|z| of tf2onnx's complex tensors (real and imaginary parts stacked on axis 0). tf2onnx's own handler
    needs that axis in the static shape, which an RFFT of a dynamic batch loses."""
    from tf2onnx import utils

    z = node.input[0]
    parts = [ctx.make_const(utils.make_name(f"{node.name}_part"), np.array([k], np.int64)).output[0]
             for k in (0, 1)]
    real, imag = (ctx.make_node("Gather", [z, part], attr={"axis": 0}).output[0] for part in parts)
    power = ctx.make_node("Add", [ctx.make_node("Mul", [real, real]).output[0],
                                  ctx.make_node("Mul", [imag, imag]).output[0]]).output[0]
    ctx.remove_node(node.name)
    ctx.make_node("Squeeze", [ctx.make_node("Sqrt", [power]).output[0], parts[0]], outputs=node.output,
                  name=node.name)


def _export_onnx(model, num_samples: int, path: Path, batch_size: int) -> int | None:
    """Write `path` (.onnx) with tf2onnx; returns the fixed batch size, or None for a dynamic batch."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError as err:
        raise ExportError(f"ONNX export needs tf2onnx and onnxruntime (pip install tf2onnx onnxruntime): {err}") from err

    import tensorflow as tf

    errors = []
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # a failed try logs every unconverted node; the error below sums it up
    try:
        with tempfile.TemporaryDirectory(prefix=".export.", dir=path.parent) as tmp:
            for batch in (None, batch_size):
                candidate = Path(tmp) / f"model_{batch}.onnx"
                serve = tf.function(lambda waveform: model(waveform, training=False))  # traced anew for each try
                try:
                    tf2onnx.convert.from_function(serve, input_signature=_signature(num_samples, batch),
                                                  opset=ONNX_OPSET, output_path=str(candidate),
                                                  custom_op_handlers={"Erfc": (_erfc_handler, []),
                                                                      "ComplexAbs": (_complex_abs_handler, [])})
                    runner = OnnxRunner(str(candidate))
                    runner(np.zeros((runner.batch or 1, num_samples), np.float32))
                except Exception as err:  # tf2onnx writes graphs it could not fully convert; onnxruntime refuses them
                    errors.append(f"batch {batch or 'dynamic'}: {type(err).__name__}: {_tail(err)}")
                    continue
                os.replace(candidate, path)
                return batch
    finally:
        logger.setLevel(level)
    raise ExportError(f"tf2onnx {tf2onnx.__version__} could not convert {model.name} (TF {tf.__version__}): "
                      + " | ".join(errors))


def _tail(err: BaseException, limit: int = 400) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text[-limit:]


# ---- one model, many checkpoints --------------------------------------------------------------------------
def export_model(model, cfg, out_dir, fmt: str, batch_size: int = FIXED_BATCH, source: dict | None = None) -> dict:
    """Export one waveform -> probabilities Keras model to `out_dir`; returns the manifest written beside it."""
    import keras
    import tensorflow as tf

    import voxtrace

    _check_format(fmt)
    if batch_size < 1:
        raise ExportError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = cfg.num_samples
    if tuple(model.input_shape) != (None, n):
        raise ExportError(f"model {model.name} takes inputs {model.input_shape}, but its config says waveforms of "
                          f"{n} samples (audio.duration * audio.sample_rate)")
    target = out_dir / FILES[fmt]
    batch, output_name = None, None
    if fmt == "savedmodel":
        with tempfile.TemporaryDirectory(prefix=".export.", dir=out_dir) as tmp:
            candidate = Path(tmp) / FILES[fmt]
            _write_saved_model(model, n, candidate)
            output_name = SavedModelRunner(str(candidate)).output_name
            shutil.rmtree(target, ignore_errors=True)
            os.replace(candidate, target)
    elif fmt == "tflite":
        batch = _export_tflite(model, n, target, batch_size)
    else:
        batch = _export_onnx(model, n, target, batch_size)
    cfg.save(out_dir / "config.yaml")
    manifest = {
        "format": fmt,
        "file": FILES[fmt],
        "config": "config.yaml",
        "model_name": cfg.model.name,
        "features_kind": cfg.features.kind,
        "classes": list(cfg.classes),
        "unknown_class": cfg.unknown_class,
        "sample_rate": cfg.audio.sample_rate,
        "num_samples": n,
        "window_hop": cfg.audio.window_hop,
        "window_agg": cfg.audio.window_agg,
        "input": {"name": INPUT_NAME, "shape": [batch, n], "dtype": "float32"},
        "output": {"name": output_name, "shape": [batch, cfg.num_classes], "dtype": "float32",
                   "meaning": "class probabilities (softmax), in the order of `classes`"},
        "versions": {"voxtrace": voxtrace.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
        **(source or {}),
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def export_checkpoints(model_dir, fmt: str, out=None, batch_size: int = FIXED_BATCH, progress: bool = True) -> dict:
    """Export every checkpoint under `model_dir` to `out` (default `MODEL_DIR/export/{fmt}`).

    A checkpoint that fails is reported and the others are still exported. Returns the ensemble manifest
    (also written to `OUT/manifest.json`) with `members` (exported) and `failed` (`{checkpoint: reason}`).
    """
    from tqdm.auto import tqdm

    _check_format(fmt)
    runs = discover_runs(model_dir)
    model_dir = Path(model_dir)
    out = Path(out) if out else (model_dir if model_dir.is_dir() else runs[0].run_dir) / "export" / fmt
    jobs = [(run, ckpt, fold) for run in runs for ckpt, fold in zip(run.checkpoints, run.folds)]
    members, failed = [], {}
    for run, ckpt, fold in tqdm(jobs, desc=f"export {fmt}", unit="ckpt", disable=not progress):
        folder = out / run.name / ckpt.stem
        source = {"run": run.name, "fold": fold, "source_checkpoint": str(ckpt.resolve())}
        try:
            model = load_checkpoint(ckpt)
            manifest = export_model(model, run.cfg, folder, fmt, batch_size=batch_size, source=source)
        except Exception as err:  # one bad checkpoint must not lose the others' exports
            failed[str(ckpt)] = f"{type(err).__name__}: {err}"
            log.warning(f"export of {ckpt} failed: {failed[str(ckpt)]}")
            continue
        finally:
            import keras

            keras.backend.clear_session()
        members.append({"path": folder.relative_to(out).as_posix(), "run": run.name, "fold": fold,
                        "model_name": manifest["model_name"], "batch": manifest["input"]["shape"][0]})
    for run in runs:  # the out-of-fold scores the open-set rule and the detection threshold are fitted on
        if run.files.oof.is_file() and any(m["run"] == run.name for m in members):
            with atomic_path(RunDir(out / run.name).oof) as copy:
                shutil.copyfile(run.files.oof, copy)
    ensemble = {"format": fmt, "classes": list(runs[0].cfg.classes), "unknown_class": runs[0].cfg.unknown_class,
                "agg": runs[0].cfg.infer.agg, "members": members, "failed": failed}
    if members:
        atomic_write_json(out / "manifest.json", ensemble)
    ensemble["out"] = str(out)
    return ensemble
