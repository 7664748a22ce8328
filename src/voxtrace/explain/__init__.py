"""Why a clip was attributed to a generator: saliency on the spectrogram and per-class fingerprints."""

from voxtrace.explain.fingerprints import Fingerprints, class_fingerprints, labelled_files, mean_log_spectrum
from voxtrace.explain.saliency import (
    METHODS,
    SaliencyModel,
    attribution_heatmap,
    black_baseline,
    grad_cam,
    integrated_gradients,
    loudest_window,
    saliency_maps,
)

__all__ = [
    "METHODS",
    "Fingerprints",
    "SaliencyModel",
    "attribution_heatmap",
    "black_baseline",
    "class_fingerprints",
    "grad_cam",
    "integrated_gradients",
    "labelled_files",
    "loudest_window",
    "mean_log_spectrum",
    "saliency_maps",
]
