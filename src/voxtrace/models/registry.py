"""The backbone registry: one name -> one builder, in the style of timm's `@register_model`.

A builder is a function `builder(input_shape, weights=None, **kwargs) -> keras.Model` mapping an image
`[H, W, 3]` to features: a 4-D feature map `[B, h, w, C]` for convolutional backbones, or a pooled vector
`[B, D]` for sequence backbones (`mobilenetv3_bilstm`). `weights` is `None` (random init) or `"imagenet"`;
only builders registered with `imagenet=True` accept `"imagenet"`.

Names are matched case-insensitively and ignoring `-` and `_`, so `ResNest50`, `ResNeSt50` and `resnest-50`
are the same model. An alias is a second name for a registered builder (e.g. `convnext_base_in22k`,
`RegNetZD8`); aliases may carry their own default pretrain.

What the rest of voxtrace needs to know about a model lives on its entry, as timm's `default_cfgs` beside
each `@register_model`: its input (image or waveform), the sample rate it was built for, an inference batch
hint, its gradient-clipping default and the pretrain sources it takes with their loader. No code outside
`voxtrace.models` looks at a model's name to decide anything.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass
from typing import Callable

from voxtrace.vocabulary import PRETRAIN_TAGS


class PretrainError(ValueError):
    """Pretrained weights could not be found or loaded. The message says which file and where."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered backbone and the facts about it that training and inference use."""

    name: str
    builder: Callable
    min_size: int = 32  # smallest H and W the backbone accepts
    imagenet: bool = False  # ImageNet weights can be fetched through keras.applications / kimm
    default_pretrain: str | None = None  # what `pretrain="default"` means for this name
    alias_of: str | None = None  # the canonical name when this entry is an alias
    family: str = ""
    waveform: bool = False  # takes waveforms [N, 1] (features.kind: raw) instead of images [H, W, 3]
    sample_rate: int | None = None  # the only audio.sample_rate it works at (None: any)
    batch_hint: int | None = None  # inference windows per device that fit a typical GPU (None: by input size)
    agc_clip: float | None = None  # adaptive gradient clipping factor when train.agc_clip is unset
    pretrain_sources: tuple[str, ...] = ()  # further model.pretrain tags ("whisper") and file suffixes (".bin")
    pretrain_loader: Callable | None = None  # loader(entry, input_shape, pretrain, kwargs) for those sources

    @property
    def input_kind(self) -> str:
        return "waveform" if self.waveform else "image"

    def takes_pretrain(self, pretrain) -> bool:
        """Whether `pretrain` is one of this model's own sources (a tag, or a file with one of its suffixes)."""
        text = str(pretrain)
        return any(text == s if not s.startswith(".") else text.lower().endswith(s) for s in self.pretrain_sources)


_REGISTRY: dict[str, ModelEntry] = {}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def register_model(fn: Callable | None = None, *, name: str | None = None, family: str = "", **facts):
    """Register `fn` under `name` (default: the function's name). Usable bare or with arguments; `facts` are
    `ModelEntry` fields (min_size, imagenet, waveform, sample_rate, batch_hint, agc_clip, pretrain_sources,
    pretrain_loader)."""

    def wrap(builder: Callable) -> Callable:
        _add(ModelEntry(name=name or builder.__name__, builder=builder,
                        family=family or builder.__module__.rsplit(".", 1)[-1], **facts))
        return builder

    return wrap(fn) if fn is not None else wrap


def register_alias(alias: str, target: str, default_pretrain: str | None = None) -> None:
    """Make `alias` resolve to the registered model `target` (optionally with its own default pretrain)."""
    base = get_entry(target)
    _add(dataclasses.replace(base, name=alias, default_pretrain=default_pretrain, alias_of=base.name))


def _add(entry: ModelEntry) -> None:
    tags = [s for s in entry.pretrain_sources if not s.startswith(".")]
    if set(tags) - set(PRETRAIN_TAGS):
        raise ValueError(f"{entry.name}: pretrain tags {tags} must be in voxtrace.vocabulary.PRETRAIN_TAGS")
    key = _key(entry.name)
    if key in _REGISTRY:
        raise ValueError(f"model name {entry.name!r} is already registered (as {_REGISTRY[key].name!r})")
    _REGISTRY[key] = entry


def list_models(pattern: str = "*", include_aliases: bool = True) -> list[str]:
    """Registered names matching a shell-style `pattern` (case-insensitive), sorted case-insensitively."""
    pat = pattern.lower()
    names = [e.name for e in _REGISTRY.values() if include_aliases or e.alias_of is None]
    return sorted((n for n in names if fnmatch.fnmatch(n.lower(), pat)), key=str.lower)


def get_entry(name: str) -> ModelEntry:
    """The entry for `name`; an unknown name raises ValueError with the closest registered names."""
    entry = _REGISTRY.get(_key(str(name)))
    if entry is None:
        names = list_models()
        close = difflib.get_close_matches(str(name).lower(), [n.lower() for n in names], n=5, cutoff=0.5)
        by_lower = {n.lower(): n for n in names}
        hint = f" Did you mean: {', '.join(by_lower[c] for c in close)}?" if close else ""
        raise ValueError(
            f"unknown model name {name!r}.{hint} See voxtrace.models.list_models() for all "
            f"{len(names)} names. Received: name={name!r}"
        )
    return entry


def check_input_size(name: str, input_shape, key: str = "input_shape") -> None:
    """Refuse an image smaller than the backbone's minimum, naming `key` (e.g. features.img_size)."""
    entry = get_entry(name)
    height, width = int(input_shape[0]), int(input_shape[1])
    if min(height, width) < entry.min_size:
        raise ValueError(
            f"{entry.name} needs images of at least {entry.min_size}x{entry.min_size}. "
            f"Received: {key}={[height, width]}"
        )


def create_model(name: str, input_shape, pretrain: str | None = None, **kwargs):
    """Build backbone `name` for images of `input_shape` ([H, W] or [H, W, 3]).

    `pretrain`: None (random init), "imagenet", "imagenet21k", "default" (the name's own default, e.g. the
    `_in22k` aliases) or the path of a weights file (.weights.h5, .keras, .h5). Keyword arguments that are
    None are dropped so that CLI defaults never override a model's own defaults. Raw-waveform backbones
    (`waveform=True`) take `input_shape=(N, 1)` and check their input length themselves.
    """
    from voxtrace.models.weights import build_with_pretrain

    entry = get_entry(name)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2 and not entry.waveform:
        shape = shape + (3,)
    if not entry.waveform:
        if len(shape) != 3:
            raise ValueError(f"input_shape must be [H, W] or [H, W, C]. Received: input_shape={input_shape!r}")
        check_input_size(name, shape)
    if pretrain == "default":
        pretrain = entry.default_pretrain
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return build_with_pretrain(entry, shape, pretrain, kwargs)
