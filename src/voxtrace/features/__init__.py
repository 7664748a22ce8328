"""Front-ends as Keras layers (waveforms -> 3-channel images) and in-model spectrogram augmentation."""

from voxtrace.features.frontends import (
    FRONTENDS,
    LFCC,
    MFCC,
    Frontend,
    LogMelSpectrogram,
    RawWaveform,
    STFTSpectrogram,
    WaveletPacket,
    build_frontend,
)
from voxtrace.features.spec_augment import SpecAugment

__all__ = [
    "FRONTENDS",
    "LFCC",
    "MFCC",
    "Frontend",
    "LogMelSpectrogram",
    "RawWaveform",
    "STFTSpectrogram",
    "SpecAugment",
    "WaveletPacket",
    "build_frontend",
]
