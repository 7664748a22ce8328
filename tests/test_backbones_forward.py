"""Every registered backbone builds at its smallest accepted input and runs one forward pass.

Image backbones get `[min_size, min_size, 3]` (the size the registry promises they accept); raw-waveform ones a
quarter second at 16 kHz, `(4000, 1)` (RawNet2 needs 3^7 = 2187 samples, Whisper 320, the wav2vec stack 400).
The large members of a family (same code at other widths and depths) run with `-m slow`; at least one member of
every family runs by default.
"""

import numpy as np
import pytest

from voxtrace.models import create_model, get_entry, list_models

WAVEFORM_SAMPLES = 4000

# The default suite's share, about 35 s on a loaded 2-core CPU: every backbone that took under 5 s there, and the
# smallest member of the families that have none (ECA_NFNetL0, ResNeSt50, ResNetRS50, 10-14 s each). The other
# 58 (5-40 s each, about 15 min in all) run with `-m slow`.
FAST_FORWARD = {
    "ast_tiny", "cnn4", "convnext_tiny", "dilated_cnn", "ECA_NFNetL0", "rawnet2_tiny", "RegNetY002", "ResNeSt50",
    "resnet18", "ResNetRS50", "wav2vec_conv", "wav2vec_conv_tiny", "whisper_base", "whisper_tiny_en",
}


def _params():
    return [n if n in FAST_FORWARD else pytest.param(n, marks=pytest.mark.slow)
            for n in list_models(include_aliases=False)]


def _input_shape(name):
    entry = get_entry(name)
    return (WAVEFORM_SAMPLES, 1) if entry.waveform else (entry.min_size, entry.min_size, 3)


def test_every_family_has_a_backbone_in_the_default_suite():
    names = list_models(include_aliases=False)
    assert FAST_FORWARD <= set(names), sorted(FAST_FORWARD - set(names))
    assert {get_entry(n).family for n in FAST_FORWARD} == {get_entry(n).family for n in names}


@pytest.mark.parametrize("name", _params())
def test_backbone_forward_pass_at_its_smallest_input(name):
    shape = _input_shape(name)
    backbone = create_model(name, shape)
    x = np.random.default_rng(0).normal(scale=0.3, size=(2, *shape)).astype("float32")
    features = np.asarray(backbone(x, training=False))

    assert features.shape[0] == 2 and features.ndim in (2, 4), features.shape
    assert tuple(features.shape[1:]) == tuple(backbone.output_shape[1:])  # the declared shape is the real one
    assert np.isfinite(features).all()
    # Two different inputs give different features, relative to their scale (an untrained MobileNetV3's are ~1e-10)
    scale = np.abs(features).max()
    assert scale > 0 and np.abs(features[0] - features[1]).max() > 1e-3 * scale, "the features ignore the input"
