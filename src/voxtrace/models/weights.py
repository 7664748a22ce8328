"""Pretrained weights for backbones: ImageNet through keras.applications / kimm, or a local file.

Nothing downloads unless `pretrain="imagenet"` is asked for. When the download fails (offline machines),
the error names the file keras looked for, the cache folder to place it in and the URL it came from.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import keras

from voxtrace.models.registry import PretrainError
from voxtrace.vocabulary import PRETRAIN_TAGS

IMAGENET_TAGS = PRETRAIN_TAGS[:2]  # through keras.applications / kimm
WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")


def keras_cache_dir() -> Path:
    """The folder keras.utils.get_file caches into: $KERAS_HOME (read when keras starts), else ~/.keras."""
    from keras.src.backend.config import keras_home

    return Path(os.path.expanduser(keras_home()))


def build_with_pretrain(entry, input_shape: tuple, pretrain: str | None, kwargs: dict) -> keras.Model:
    """Build `entry` for `input_shape` and initialise it as `pretrain` asks: ImageNet, one of the entry's own
    sources (its `pretrain_loader`), or a Keras weights file."""
    if pretrain is None:
        return entry.builder(input_shape, **kwargs)
    if pretrain in IMAGENET_TAGS:
        return _build_imagenet(entry, input_shape, pretrain, kwargs)
    if entry.takes_pretrain(pretrain):
        return entry.pretrain_loader(entry, input_shape, pretrain, kwargs)
    if pretrain in PRETRAIN_TAGS:
        raise PretrainError(f"{entry.name} takes no model.pretrain={pretrain!r} (its sources: null, a weights file"
                            f"{', ImageNet' if entry.imagenet else ''}{''.join(', ' + s for s in entry.pretrain_sources)})")
    model = entry.builder(input_shape, **kwargs)
    load_weights_file(model, pretrain)
    return model


def _build_imagenet(entry, input_shape, tag, kwargs):
    if not entry.imagenet:
        raise PretrainError(
            f"{entry.name} is a voxtrace backbone with no published ImageNet weights: train it from scratch "
            f"(model.pretrain=null) or pass the path of a weights file. Received: pretrain={tag!r}"
        )
    if tag == "imagenet21k":
        raise PretrainError(
            f"{entry.name}: keras.applications and kimm publish ImageNet-1k weights only; use "
            f"pretrain='imagenet', or convert ImageNet-21k weights to a .weights.h5 file and pass its path. "
            f"Received: pretrain={tag!r}"
        )
    requests: list[tuple] = []
    try:
        with _recording_downloads(requests):
            return entry.builder(input_shape, weights="imagenet", **kwargs)
    except Exception as err:  # any download or load failure becomes one actionable message
        if not requests:
            raise PretrainError(f"{entry.name}: loading ImageNet weights failed: {err}") from err
        fname, origin, subdir, cache_dir = requests[-1]
        folder = Path(cache_dir) if cache_dir else keras_cache_dir()
        raise PretrainError(
            f"{entry.name}: could not fetch ImageNet weights ({type(err).__name__}: {err}). Without network "
            f"access, download {origin} elsewhere and place it as {folder / subdir / fname} (the Keras cache: "
            f"$KERAS_HOME/{subdir}/ or ~/.keras/{subdir}/), or pass the file's path as pretrain."
        ) from err


@contextlib.contextmanager
def _recording_downloads(requests: list):
    """Note every weights request made by keras.applications and kimm, then download as usual."""
    from keras.src.utils import file_utils

    download = keras.utils.get_file
    internal = file_utils.get_file

    def recording_get_file(fname=None, origin=None, **kw):
        requests.append((fname, origin, kw.get("cache_subdir", "datasets"), kw.get("cache_dir")))
        return download(fname, origin, **kw)

    file_utils.get_file = recording_get_file
    keras.utils.get_file = recording_get_file
    try:
        yield
    finally:
        file_utils.get_file = internal
        keras.utils.get_file = download


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> keras.Model:
    """Load a local weights file into `model`, skipping weights whose shapes do not match (e.g. a head).

    `.keras`: weights are matched by layer name (the backbone of a saved classifier loads into a new one).
    `.h5` / `.hdf5` (legacy, e.g. the keras.applications ImageNet files): matched by layer name.
    `.weights.h5`: matched by structure, so it must come from the same backbone (`backbone.save_weights`).
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(WEIGHT_SUFFIXES):
        raise PretrainError(
            f"model.pretrain must be null, a tag ({', '.join(PRETRAIN_TAGS)}) or a weights file ending in "
            f"{list(WEIGHT_SUFFIXES)} (some backbones take more: Whisper .bin and .safetensors). "
            f"Received: pretrain={str(path)!r}"
        )
    if not path.is_file():
        raise PretrainError(f"weights file not found: {path} (from model.pretrain)")
    try:
        if name.endswith(".keras"):
            _load_by_name(model, path)
        elif name.endswith(".weights.h5"):
            model.load_weights(path, skip_mismatch=True)
        else:
            model.load_weights(path, by_name=True, skip_mismatch=True)
    except PretrainError:
        raise
    except Exception as err:
        raise PretrainError(f"could not load weights from {path} into {model.name}: {err}") from err
    return model


def _load_by_name(model: keras.Model, path: Path) -> None:
    source = keras.saving.load_model(path, compile=False, safe_mode=True)
    by_name = {layer.name: layer for layer in _leaf_layers(source)}
    loaded = 0
    for layer in _leaf_layers(model):
        src = by_name.get(layer.name)
        if src is None or not layer.weights:
            continue
        values = src.get_weights()
        if [tuple(v.shape) for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            loaded += 1
    if loaded == 0:
        raise PretrainError(f"no layer of {model.name} matches a layer (by name and shape) in {path}")


def _leaf_layers(model):
    """Layers that own weights directly, looking inside nested models."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.Model):
            yield layer

