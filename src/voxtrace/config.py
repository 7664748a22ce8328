"""One typed config for every voxtrace command.

A config is built from YAML files (a file may name a ``base:`` file it extends) plus dotted CLI overrides
(``train.epochs=3``), then validated before any work starts. Every key is a dataclass field below, so an
unknown key, a value of the wrong type or a value out of range is refused with the dotted key and what is
allowed; NaN and infinity are refused in every numeric key. ``Config.to_dict()`` round-trips through
``Config.from_dict()``; each run saves its resolved config beside its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from voxtrace import vocabulary as vocab
from voxtrace.vocabulary import BALANCE_MODES, FROZEN_HEADS

ATTRIBUTION_CLASSES = ["espeak", "clustergen", "diphone", "hts", "vits", "unknown"]
DETECTION_CLASSES = ["bonafide", "spoof"]

# The closed choices of the config: dotted key -> allowed values (`voxtrace.vocabulary`), read by `validate`
# and by the generated docs/config.md.
CHOICES = {
    "task": vocab.TASKS, "data.dataset": vocab.DATASETS, "data.attribute_by": vocab.ATTRIBUTE_BY,
    "audio.pad_mode": vocab.PAD_MODES, "audio.crop_mode": vocab.CROP_MODES, "audio.window_agg": vocab.AGGREGATIONS,
    "features.kind": vocab.FEATURE_KINDS, "features.window": vocab.STFT_WINDOWS, "features.norm": vocab.FEATURE_NORMS,
    "features.wavelet": vocab.WAVELETS, "model.head.kind": vocab.HEAD_KINDS, "train.loss": vocab.LOSSES,
    "train.optimizer": vocab.OPTIMIZERS, "train.scheduler": vocab.SCHEDULERS, "train.strategy": vocab.STRATEGIES,
    "train.monitor": vocab.MONITORS, "infer.agg": vocab.AGGREGATIONS, "infer.open_set.score": vocab.OPEN_SET_SCORES,
    "infer.decision.rule": vocab.DECISION_RULES,
}


class ConfigError(ValueError):
    """A config key is unknown, missing, of the wrong type or out of range. The message names the key."""


@dataclass
class ExternalData:
    """spcup22: the reference's external corpora (PATHS.json LJ_DATA_DIR, VCTK_DATA_DIR, LIBRI_DATA_DIR,
    SYNTHETIC_DATA_DIR), added to training as the unknown class."""

    lj: bool = False  # LJSpeech (one speaker)
    vctk: bool = False  # VCTK (speaker folders p225/ ...)
    libri: bool = False  # LibriSpeech (speaker/chapter/ folders)
    synthetic: bool = False  # the reference's synthetic set (other generators)
    max_files: int | None = None  # at most this many files per source, drawn round-robin over its speakers


@dataclass
class DataConfig:
    """Where the training data lives and how it is split into folds."""

    dataset: str = "demo"  # the data set reader (voxtrace.data.manifest)
    root: str = "data/demo"  # a folder, a CSV file, or a key of PATHS.json
    paths_json: str = "PATHS.json"
    folds: int = 5
    selected_folds: list[int] = field(default_factory=lambda: [0])
    all_data: bool = False
    pseudo_csv: str | None = None
    pseudo_weight: float = 1.0  # sample weight of pseudo-labelled clips
    pseudo_parts: list[int] = field(default_factory=list)  # train on these parts of the pseudo CSV; empty: all
    balance: bool | str = False  # classes equal in the loss: weights (inverse frequency) | resample (repeat the rarer) | undersample (true); false: as read
    max_files: int | None = None  # cap per class, for debugging
    external: ExternalData = field(default_factory=ExternalData)
    attribute_by: str = "model_name"  # mlaad: the class of a clip, model_name or architecture
    protocols: str | None = None  # mlaad: folder of the source-tracing train/dev/eval.csv (or a PATHS.json key)


@dataclass
class AudioConfig:
    """Decoding and cropping of waveforms."""

    sample_rate: int = 16000
    duration: float = 6.0  # seconds seen by the model
    pad_mode: str = "constant"  # how short clips are padded
    crop_mode: str = "random"  # how long clips are cropped in training
    window_hop: float = 0.5  # inference windows overlap by this fraction of `duration`
    window_agg: str = "mean"  # how window scores of a long file are merged (geometric: softmax of mean logits)


@dataclass
class FeatureConfig:
    """The front-end: a Keras layer inside the model that maps waveforms to a 3-channel image."""

    kind: str = "logmel"  # the time-frequency image; raw: the waveform as is, for raw-waveform backbones
    img_size: list[int] = field(default_factory=lambda: [128, 384])  # H (frequency bins) x W (frames)
    n_fft: int = 2048
    win_length: int = 2048
    window: str = "hann"
    fmin: float = 20.0
    fmax: float = 8000.0
    top_db: float = 80.0
    n_coeffs: int = 40  # mfcc / lfcc coefficients (before resizing to H)
    wavelet: str = "haar"
    wavelet_level: int = 7
    normalize: bool = True
    norm: str = "standard"  # per-sample image normalization used when `normalize` is true


@dataclass
class AugmentConfig:
    """Train-time augmentation. Every `*_prob` is a probability in [0, 1]."""

    enabled: bool = True
    # waveform (the reference's knobs)
    audio_augment_prob: float = 0.8
    gn_prob: float = 0.5  # Gaussian noise
    timeshift_prob: float = 0.0
    timereverse_prob: float = 0.0
    # channel: what real transmission does to a clip (SP Cup part 2 and beyond)
    noise_snr_prob: float = 0.3
    snr_db: list[float] = field(default_factory=lambda: [10.0, 30.0])
    reverb_prob: float = 0.2
    bandlimit_prob: float = 0.2
    codec_prob: float = 0.3  # mp3 / telephone / mu-law / resampling chain, one picked at random
    # voice: changes the speaker, keeps the synthesis method
    pitch_prob: float = 0.0
    formant_prob: float = 0.0
    speed_prob: float = 0.0
    # spectrogram (inside the model, training only)
    spec_augment_prob: float = 0.8
    mask_prob: float = 0.75
    freq_mask: int = 8
    time_mask: int = 32
    hflip: bool = False
    vflip: bool = False
    jc_prob: float = 0.0  # JPEG-style compression of the image
    jc_quality: list[int] = field(default_factory=lambda: [85, 95])
    # batch
    mixup_prob: float = 0.0
    mixup_alpha: float = 2.5
    cutmix_prob: float = 0.0
    cutmix_alpha: float = 2.5


@dataclass
class HeadConfig:
    """The classifier over the backbone's features. `dense` (the reference's Dense selu + softmax) trains with
    the backbone; `logistic`, `mlp` and `knn` are fitted in seconds on the cached features of a frozen backbone
    (`voxtrace.training.frozen`, `voxtrace.models.heads`)."""

    kind: str = "dense"  # dense: trained end to end; logistic, mlp, knn: fitted on frozen, cached features
    c: float = 1.0  # logistic: inverse L2 strength (scikit-learn's C) on standardised features
    hidden: int = 256  # mlp: hidden width
    dropout: float = 0.2  # mlp: dropout before the output layer
    epochs: int = 60  # mlp: passes over the cached features
    k: int = 10  # knn: neighbours that vote
    temperature: float = 0.1  # knn: a neighbour's vote is exp(cosine similarity / temperature)
    augment_draws: int = 0  # frozen heads: augmented copies (the `augment` section) of each training clip, beside it
    known_only: bool = False  # fit on the known classes only; `unknown` then comes from open-set rejection
    cache_dir: str | None = None  # where frozen features are cached (default: OUTPUT_DIR/feature_cache)
    jit_compile: bool = True  # frozen heads: the backbone's features computed with XLA (1.4x Whisper on a 2-core CPU; within 1.2e-5)
    save: str = "all"  # frozen heads' checkpoints: all (ckpt/model.keras, fitted on every clip) | folds (ckpt/fold-K.keras: the heads of the OOF scores)


@dataclass
class ModelConfig:
    """The backbone (a name from `voxtrace.models.list_models()`) and the head on top of it."""

    name: str = "EfficientNetB0"
    pretrain: str | None = None  # null (scratch), a tag of voxtrace.vocabulary.PRETRAIN_TAGS (imagenet, imagenet21k, whisper) or a weights file
    num_features: int = 64  # Dense(num_features, selu) before the classifier, as the reference
    dropout: float = 0.0
    freeze_bn: bool = False
    disable_bn: bool = False
    bn_momentum: float | None = None  # BatchNorm moving-average momentum (null: the backbone's; 0.9 suits short runs from scratch)
    options: dict = field(default_factory=dict)  # backbone keyword arguments, e.g. {trainable_blocks: 0}
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class ShiftConfig:
    """The shifted view of the validation clips (`voxtrace.data.shift`): each held-out clip re-finished by other
    habits than the training data's, drawn per clip. Out-of-fold scores on it sit beside the clean ones in
    `csv/oof.csv`, and the ensemble weights and thresholds are fitted on both."""

    enabled: bool = False
    rate_prob: float = 0.5  # share of clips played at another speed (tempo and pitch together)
    rate: list[float] = field(default_factory=lambda: [0.85, 1.2])  # speed factor range
    crop_prob: float = 0.5  # share of clips cut to a random shorter span
    min_s: float = 1.5  # the shortest span kept, in seconds
    edge_s: list[float] = field(default_factory=lambda: [0.0, 0.6])  # silence added before and after, seconds
    floor_dbfs: list[float] = field(default_factory=lambda: [-80.0, -55.0])  # that silence's noise floor (RMS)
    peak_dbfs: list[float] = field(default_factory=lambda: [-30.0, -1.0])  # the clip's peak level


@dataclass
class TrainConfig:
    """Optimisation, schedule and the distribution strategy."""

    epochs: int = 25
    batch_size: int = 64  # global batch size
    steps_per_epoch: int | None = None  # default: one pass over the training files
    loss: str = "CCE"
    label_smoothing: float = 0.05
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    optimizer: str = "Adam"
    weight_decay: float = 1e-4
    agc_clip: float | None = None  # adaptive gradient clipping factor (NFNets use 0.01)
    scheduler: str = "exp"
    lr_max: float = 1.15e-6  # multiplied by batch_size, as the reference
    lr_min: float = 0.95e-6  # multiplied by batch_size
    lr_start: float = 1e-7  # multiplied by batch_size
    lr_ramp_ep: int = 5
    lr_sus_ep: int = 0
    lr_decay: float = 0.8
    strategy: str = "auto"  # tf.distribute strategy; auto: a TPU, several workers (TF_CONFIG), several GPUs or one device
    mixed_precision: bool = True  # used only where the device supports it
    tta: int = 1  # test-time augmentation passes for out-of-fold scores
    oof_shift: ShiftConfig = field(default_factory=ShiftConfig)  # out-of-fold scores on a shifted view as well
    monitor: str = "val_f1"
    epoch_validation: bool = True  # score the validation fold after every epoch (false: only the final OOF scores)
    verbose: int = 1
    wandb: bool = False
    deterministic: bool = False  # deterministic TF ops (tf.config.experimental.enable_op_determinism): repeatable, slower


@dataclass
class OpenSetConfig:
    """Reject low-confidence clips to `unknown_class` (calibrated on out-of-fold scores)."""

    enabled: bool = False
    score: str = "maxprob"  # the confidence score compared with the threshold
    target_tpr: float = 0.95  # keep this fraction of correctly attributed known clips


@dataclass
class DecisionConfig:
    """Detection: how a clip's label follows from its positive-class score (`voxtrace.inference.decision`)."""

    rule: str = "argmax"  # argmax: top class; eer: threshold at the out-of-fold EER point; far: at target_far
    target_far: float = 0.01  # far: share of positive-class (spoof) out-of-fold clips allowed below the threshold
    positive: str = "spoof"  # the class whose probability is the score


@dataclass
class InferConfig:
    """Ensemble prediction and pseudo-labelling."""

    batch_size: int | None = None  # default: picked to fit memory
    tta: int = 1
    agg: str = "mean"  # how folds and models are merged
    open_set: OpenSetConfig = field(default_factory=OpenSetConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    pseudo_threshold: float = 0.6  # keep pseudo-labels whose top probability reaches this
    pseudo_cap_per_class: int | None = None  # at most this many per predicted class of each part (infer path)


@dataclass
class Config:
    """The whole experiment."""

    task: str = "attribute"  # attribute: which generator; detect: bona fide or spoof
    classes: list[str] = field(default_factory=lambda: list(ATTRIBUTION_CLASSES))
    unknown_class: str | None = "unknown"
    seed: int = 42
    debug: bool = False
    output_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    # ---- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict) -> "Config":
        cfg = _build(cls, raw, prefix="")
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, overrides: typing.Iterable[str] = ()) -> "Config":
        """Read a YAML file (following `base:` links) and apply `key.sub=value` overrides."""
        raw = _read_yaml_chain(Path(path)) if path else {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"override {item!r} must look like key.sub=value")
            _set_dotted(raw, key.strip(), yaml.safe_load(value))
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> None:
        """Write the resolved config as YAML, atomically."""
        from voxtrace.io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    def replace(self, **dotted) -> "Config":
        """A validated copy with `section__key=value` changes, e.g. `train__epochs=3`."""
        raw = self.to_dict()
        for key, value in dotted.items():
            _set_dotted(raw, key.replace("__", "."), value)
        return Config.from_dict(raw)

    # ---- derived values -----------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_samples(self) -> int:
        """Samples of one model input window."""
        return int(round(self.audio.duration * self.audio.sample_rate))

    @property
    def run_name(self) -> str:
        """The per-model folder under `output_dir`, named by what the model sees: `{model}-{H}x{W}` for image
        models (as the reference), `{model}-{seconds}s` for waveform models (`features.kind: raw`), and
        `-{head}` after it for a head fitted on frozen features (`model.head.kind` logistic, mlp, knn)."""
        if self.features.kind == "raw":
            name = f"{self.model.name}-{self.audio.duration:g}s"
        else:
            name = f"{self.model.name}-{self.features.img_size[0]}x{self.features.img_size[1]}"
        return name + (f"-{self.model.head.kind}" if self.model.head.kind in FROZEN_HEADS else "")

    # ---- validation -----------------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse values out of range, naming the key and what is allowed."""
        _check_finite(self)
        _range("seed", self.seed, 0, MAX_SEED)
        _choice("task", self.task)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"classes must be at least two distinct names. Received: classes={self.classes}")
        if self.unknown_class is not None and self.unknown_class not in self.classes:
            raise ConfigError(
                f"unknown_class={self.unknown_class!r} is not one of classes={self.classes} (or set it to null)"
            )
        for check in (_check_data, _check_audio, _check_features, _check_augment, _check_model, _check_train,
                      _check_infer):
            check(self)


# ---- validation, one section at a time --------------------------------------------------------------------
def _check_data(cfg: "Config") -> None:
    """The `data` section."""
    d = cfg.data
    _choice("data.dataset", d.dataset)
    _choice("data.attribute_by", d.attribute_by)
    if d.external.max_files is not None:
        _range("data.external.max_files", d.external.max_files, 1, None)
    _range("data.folds", d.folds, 2, None)
    if not d.selected_folds or len(set(d.selected_folds)) != len(d.selected_folds):
        raise ConfigError(f"data.selected_folds must name one or more distinct folds. "
                          f"Received: data.selected_folds={d.selected_folds}")
    for k in d.selected_folds:
        if not 0 <= k < d.folds:
            raise ConfigError(f"data.selected_folds: fold {k} is outside 0..{d.folds - 1} (data.folds={d.folds})")
    _range("data.pseudo_weight", d.pseudo_weight, 0.0, None)
    if not isinstance(d.balance, bool) and d.balance not in BALANCE_MODES:
        raise ConfigError(f"data.balance must be false, weights, resample or undersample (true: undersample). "
                          f"Received: data.balance={d.balance!r}")
    if d.max_files is not None:
        _range("data.max_files", d.max_files, 1, None)
    for k, part in enumerate(d.pseudo_parts):
        _range(f"data.pseudo_parts[{k}]", part, 1, None)


def _check_audio(cfg: "Config") -> None:
    """The `audio` section."""
    a = cfg.audio
    _range("audio.sample_rate", a.sample_rate, 8000, 192000)
    _range("audio.duration", a.duration, 0.1, 600.0)
    _choice("audio.pad_mode", a.pad_mode)
    _choice("audio.crop_mode", a.crop_mode)
    _range("audio.window_hop", a.window_hop, 0.05, 1.0)
    _choice("audio.window_agg", a.window_agg)


def _check_features(cfg: "Config") -> None:
    """The `features` section."""
    a = cfg.audio
    f = cfg.features
    # raw: the waveform passes through unchanged, for raw-waveform backbones (rawnet2*, wav2vec_conv*)
    _choice("features.kind", f.kind)
    if len(f.img_size) != 2:
        raise ConfigError(f"features.img_size must be [H, W]. Received: {f.img_size}")
    _range("features.img_size[0] (H)", f.img_size[0], 32, 4096)
    _range("features.img_size[1] (W)", f.img_size[1], 32, 8192)
    _range("features.n_fft", f.n_fft, 16, 65536)
    _range("features.win_length", f.win_length, 16, f.n_fft)
    _choice("features.window", f.window)
    nyquist = a.sample_rate / 2
    _range("features.fmax", f.fmax, 1.0, nyquist)
    _range("features.fmin", f.fmin, 0.0, f.fmax)
    _range("features.top_db", f.top_db, 1.0, 200.0)
    _range("features.n_coeffs", f.n_coeffs, 2, 512)
    _range("features.wavelet_level", f.wavelet_level, 1, 14)
    # front-end layer constraints (voxtrace.features)
    _choice("features.norm", f.norm)
    _choice("features.wavelet", f.wavelet)
    if f.kind in ("mfcc", "lfcc"):
        _range("features.n_coeffs", f.n_coeffs, 2, f.img_size[0])
    if f.kind == "wavelet" and 2**f.wavelet_level > cfg.num_samples:
        raise ConfigError(
            f"features.wavelet_level={f.wavelet_level} needs 2**level <= audio samples ({cfg.num_samples})"
        )


def _check_augment(cfg: "Config") -> None:
    """The `augment` section."""
    f = cfg.features
    g = cfg.augment
    for name in [x.name for x in dataclasses.fields(g) if x.name.endswith("_prob")]:
        _range(f"augment.{name}", getattr(g, name), 0.0, 1.0)
    if len(g.snr_db) != 2 or g.snr_db[0] > g.snr_db[1]:
        raise ConfigError(f"augment.snr_db must be [low, high] with low <= high. Received: {g.snr_db}")
    if len(g.jc_quality) != 2 or not 0 <= g.jc_quality[0] <= g.jc_quality[1] <= 100:
        raise ConfigError(f"augment.jc_quality must be [low, high] within 0..100. Received: {g.jc_quality}")
    _range("augment.freq_mask", g.freq_mask, 0, f.img_size[0])
    _range("augment.time_mask", g.time_mask, 0, f.img_size[1])
    _range("augment.mixup_alpha", g.mixup_alpha, 0.0, None)
    _range("augment.cutmix_alpha", g.cutmix_alpha, 0.0, None)


def _check_model(cfg: "Config") -> None:
    """The `model` section."""
    m = cfg.model
    _range("model.num_features", m.num_features, 1, None)
    _range("model.dropout", m.dropout, 0.0, 0.99)
    if not isinstance(m.options, dict):
        raise ConfigError(f"model.options must be a mapping of backbone arguments. "
                          f"Received: model.options={m.options!r}")
    if m.bn_momentum is not None:
        _range("model.bn_momentum", m.bn_momentum, 0.0, 0.9999)
    h = m.head
    _choice("model.head.kind", h.kind)
    _range("model.head.c", h.c, 1e-8, None)
    _range("model.head.hidden", h.hidden, 1, None)
    _range("model.head.dropout", h.dropout, 0.0, 0.99)
    _range("model.head.epochs", h.epochs, 1, None)
    _range("model.head.k", h.k, 1, None)
    _range("model.head.temperature", h.temperature, 1e-4, None)
    _range("model.head.augment_draws", h.augment_draws, 0, 64)
    if h.known_only and (h.kind == "dense" or cfg.unknown_class is None):
        raise ConfigError("model.head.known_only needs a frozen head (model.head.kind logistic, mlp or knn) "
                          f"and an unknown_class. Received: model.head.kind={h.kind!r}, "
                          f"unknown_class={cfg.unknown_class!r}")


def _check_train(cfg: "Config") -> None:
    """The `train` section."""
    t = cfg.train
    _range("train.epochs", t.epochs, 1, None)
    _range("train.batch_size", t.batch_size, 1, None)
    _choice("train.loss", t.loss)
    _range("train.label_smoothing", t.label_smoothing, 0.0, 0.5)
    _range("train.focal_gamma", t.focal_gamma, 0.0, None)
    _range("train.focal_alpha", t.focal_alpha, 0.0, 1.0)
    _range("train.weight_decay", t.weight_decay, 0.0, None)
    _choice("train.optimizer", t.optimizer)
    _choice("train.scheduler", t.scheduler)
    for name in ("lr_max", "lr_min", "lr_start"):
        _range(f"train.{name}", getattr(t, name), 0.0, 1.0)
    if t.lr_min > t.lr_max:
        raise ConfigError(f"train.lr_min must not exceed train.lr_max. "
                          f"Received: train.lr_min={t.lr_min!r}, train.lr_max={t.lr_max!r}")
    _range("train.lr_ramp_ep", t.lr_ramp_ep, 0, None)
    _range("train.lr_sus_ep", t.lr_sus_ep, 0, None)
    _range("train.lr_decay", t.lr_decay, 0.0, 1.0)
    _choice("train.strategy", t.strategy)
    _range("train.tta", t.tta, 1, 64)
    # training loop (voxtrace.training)
    if t.agc_clip is not None:
        _range("train.agc_clip", t.agc_clip, 0.0, None)
    if t.steps_per_epoch is not None:
        _range("train.steps_per_epoch", t.steps_per_epoch, 1, None)
    _choice("train.monitor", t.monitor)
    _range("train.verbose", t.verbose, 0, 2)
    _check_shift(t.oof_shift)


def _check_shift(shift: ShiftConfig) -> None:
    """`train.oof_shift`: probabilities, and [low, high] ranges within their bounds."""
    _range("train.oof_shift.rate_prob", shift.rate_prob, 0.0, 1.0)
    _range("train.oof_shift.crop_prob", shift.crop_prob, 0.0, 1.0)
    _range("train.oof_shift.min_s", shift.min_s, 0.1, None)
    for name, low, high in (("rate", 0.25, 4.0), ("edge_s", 0.0, 10.0), ("floor_dbfs", -150.0, 0.0),
                            ("peak_dbfs", -100.0, 0.0)):
        pair = getattr(shift, name)
        if not isinstance(pair, list) or len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
            raise ConfigError(f"train.oof_shift.{name} must be [low, high] with {low} <= low <= high <= {high}. "
                              f"Received: train.oof_shift.{name}={pair!r}")


def _check_infer(cfg: "Config") -> None:
    """The `infer` section."""
    i = cfg.infer
    if i.batch_size is not None:
        _range("infer.batch_size", i.batch_size, 1, None)
    _choice("infer.agg", i.agg)
    _range("infer.tta", i.tta, 1, 64)
    _choice("infer.open_set.score", i.open_set.score)
    _range("infer.open_set.target_tpr", i.open_set.target_tpr, 0.0, 1.0)
    if i.open_set.enabled and cfg.unknown_class is None:
        raise ConfigError("infer.open_set.enabled needs unknown_class to name the class rejected clips get")
    _choice("infer.decision.rule", i.decision.rule)
    _range("infer.decision.target_far", i.decision.target_far, 0.0, 0.99)
    if i.decision.rule != "argmax" and (cfg.num_classes != 2 or i.decision.positive not in cfg.classes):
        raise ConfigError(f"infer.decision.rule={i.decision.rule!r} needs two classes, one of them "
                          f"infer.decision.positive={i.decision.positive!r}. Received: classes={cfg.classes}")
    _range("infer.pseudo_threshold", i.pseudo_threshold, 0.0, 1.0)
    if i.pseudo_cap_per_class is not None:
        _range("infer.pseudo_cap_per_class", i.pseudo_cap_per_class, 1, None)


# ---- helpers ----------------------------------------------------------------------------------------------
MAX_SEED = 2**31 - 1  # seeds (plus a fold index) go to NumPy and TensorFlow, which take 32-bit seeds


def _check_finite(section, prefix: str = "") -> None:
    """Refuse NaN and infinity in every numeric field of a config section (list items included), naming the key."""
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            _check_finite(value, key + ".")
            continue
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if isinstance(item, float) and not math.isfinite(item):
                name = key if index is None else f"{key}[{index}]"
                raise ConfigError(f"{name} must be a finite number, not NaN or infinity. Received: {name}={item!r}")


def _choice(key, value):
    allowed = list(CHOICES[key])
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {allowed}. Received: {key}={value!r}")


def _range(key, value, low, high):
    if value is None or value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{key} must be within {bounds}. Received: {key}={value!r}")


def _read_yaml_chain(path: Path, seen: tuple = ()) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in seen:
        raise ConfigError(f"config {path} extends itself through `base:`")
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys, not {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    merged = _read_yaml_chain(path.parent / base, seen + (path.resolve(),))
    _deep_update(merged, raw)
    return merged


def _deep_update(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def _set_dotted(raw: dict, key: str, value) -> None:
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
    node[leaf] = value


def _build(cls, raw, prefix):
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping. Received: {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys here: {sorted(names)}")
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    return cls(**kwargs)


def _coerce(hint, value, key):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for option in inner[:-1]:  # e.g. bool | str: the first type that takes the value
            try:
                return _coerce(option, value, key)
            except ConfigError:
                pass
        return _coerce(inner[-1], value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list. Received: {key}={value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false. Received: {key}={value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ConfigError(f"{key} must be a whole number. Received: {key}={value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number. Received: {key}={value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key} must be a string. Received: {key}={value!r}")
        return str(value)
    return value


def load_paths(paths_json: str | os.PathLike = "PATHS.json") -> dict[str, str]:
    """Read PATHS.json (data set name -> folder), as the reference; relative paths are relative to the file."""
    path = Path(paths_json)
    if not path.is_file():
        return {}
    with open(path) as fh:
        entries = json.load(fh)
    return {k: str((path.parent / v).resolve()) if not os.path.isabs(v) else v for k, v in entries.items()}
