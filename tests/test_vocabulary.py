"""Each closed set of names is written once (`voxtrace.vocabulary`), and what implements it provides exactly it."""

import re

import pytest

from voxtrace import vocabulary as vocab
from voxtrace.config import CHOICES, Config, ConfigError


def test_each_implementation_provides_exactly_its_vocabulary():
    from voxtrace.features.frontends import FRONTENDS
    from voxtrace.models import list_models
    from voxtrace.models.registry import get_entry
    from voxtrace.training.losses import get_loss
    from voxtrace.training.optimizers import build_optimizer
    from voxtrace.training.schedules import build_schedule

    assert set(FRONTENDS) | {"raw"} == set(vocab.FEATURE_KINDS)  # raw: no front-end
    tags = {s for name in list_models() for s in get_entry(name).pretrain_sources if not s.startswith(".")}
    assert tags | {"imagenet", "imagenet21k"} == set(vocab.PRETRAIN_TAGS)
    base = Config.load(None, ["train.epochs=1"])
    for loss in vocab.LOSSES:
        assert callable(get_loss(base.replace(train__loss=loss)))
    for name in vocab.OPTIMIZERS:
        assert build_optimizer(base.replace(train__optimizer=name), 1e-3) is not None
    for name in vocab.SCHEDULERS:
        assert build_schedule(base.replace(train__scheduler=name), 10) is not None


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_config_accepts_every_name_of_a_vocabulary_and_refuses_others_by_key(key):
    for value in CHOICES[key]:
        extra = ["model.name=whisper_tiny_en", "features.kind=raw"] if (key, value) == ("features.kind", "raw") else []
        if key == "infer.decision.rule":  # a threshold rule is for two classes
            extra = ["task=detect", "classes=[bonafide, spoof]", "unknown_class=null"]
        Config.load(None, extra + [f"{key}={value}"])
    with pytest.raises(ConfigError, match=re.escape(key) + " must be one of"):
        Config.load(None, [f"{key}=no_such_name"])


def test_the_config_reference_lists_each_vocabulary():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    for values in CHOICES.values():
        assert "one of " + ", ".join(f"`{v}`" for v in values) in text
