"""Backbones and classifiers: a timm-style registry of backbones and the waveform -> probabilities model.

    >>> from voxtrace.models import list_models, create_model
    >>> list_models("EfficientNetV2*")[:2]
    ['EfficientNetV2B0', 'EfficientNetV2B1']
    >>> backbone = create_model("ResNetRS50", (128, 256, 3))   # image -> 4-D feature map

Backbones return 4-D feature maps `[B, h, w, C]`, except sequence models (`mobilenetv3_bilstm`), which
return pooled vectors `[B, D]`; the head handles both.
"""

from voxtrace.models import applications, ast, nfnet, raw, resnest, resnet_rs, small, whisper  # noqa: F401  (register models)
from voxtrace.models.classifier import build_classifier, classification_head, fix_batchnorm
from voxtrace.models.nfnet import AGC_EXEMPT, adaptive_clip_gradients, is_agc_exempt
from voxtrace.models.registry import PretrainError, create_model, get_entry, list_models, register_model
from voxtrace.models.weights import load_weights_file

__all__ = [
    "AGC_EXEMPT",
    "PretrainError",
    "adaptive_clip_gradients",
    "build_classifier",
    "classification_head",
    "create_model",
    "fix_batchnorm",
    "get_entry",
    "is_agc_exempt",
    "list_models",
    "load_weights_file",
    "register_model",
]
