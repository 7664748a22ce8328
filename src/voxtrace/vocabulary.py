"""Every closed set of names voxtrace accepts, written once.

The config's validation (`voxtrace.config.CHOICES`), the commands' `choices=`, the generated `docs/config.md`
and the module that implements each set all read these tuples; a test checks that each implementation
provides exactly its set. This module imports nothing, so the lowest floor can read it.
"""

TASKS = ("attribute", "detect")
DATASETS = ("demo", "spcup22", "asvspoof19", "folder", "csv", "mlaad", "inthewild", "asvspoof21la", "asvspoof21df",
            "asvspoof5")  # voxtrace.data.manifest readers
ATTRIBUTE_BY = ("model_name", "architecture")  # MLAAD: a clip's class (voxtrace.data.datasets.mlaad)
BALANCE_MODES = ("weights", "resample", "undersample")  # voxtrace.training.balance (false: none; true: undersample)

PAD_MODES = ("constant", "reflect", "random")  # short clips (voxtrace.data.pipeline, voxtrace.inference.windows)
CROP_MODES = ("random", "center", "start")  # long clips in training (voxtrace.data.pipeline)
AGGREGATIONS = ("mean", "geometric", "max")  # windows, folds and models (voxtrace.inference.ensemble)

FEATURE_KINDS = ("logmel", "stft", "mfcc", "lfcc", "wavelet", "raw")  # voxtrace.features.FRONTENDS
STFT_WINDOWS = ("hann", "hamming")
FEATURE_NORMS = ("standard", "minmax")
WAVELETS = ("haar", "db1", "db2", "db3", "db4")  # PyWavelets names

HEAD_KINDS = ("dense", "logistic", "mlp", "knn")  # dense: trained end to end; the others on frozen features
FROZEN_HEADS = HEAD_KINDS[1:]
PRETRAIN_TAGS = ("imagenet", "imagenet21k", "whisper")  # model.pretrain besides null and a weights file

LOSSES = ("CCE", "BCE", "Focal")  # voxtrace.training.losses
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RectifiedAdam")  # voxtrace.training.optimizers
SCHEDULERS = ("exp", "cosine", "step", "constant")  # voxtrace.training.schedules
STRATEGIES = ("auto", "cpu", "gpu", "mirrored", "multiworker", "tpu")  # voxtrace.training.strategy
MONITORS = ("val_f1", "val_acc", "val_loss")

OPEN_SET_SCORES = ("maxprob", "energy")  # voxtrace.evaluation.metrics.confidence_scores
DECISION_RULES = ("argmax", "eer", "far")  # voxtrace.inference.decision
EXPORT_FORMATS = ("savedmodel", "tflite", "onnx")  # voxtrace.inference.export
