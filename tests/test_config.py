"""The config object: YAML + overrides, validation naming the key, round trip, generated reference up to date."""

import dataclasses
import functools
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from voxtrace.config import Config, ConfigError

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = Config.load(path)
    assert cfg.num_classes == len(cfg.classes) >= 2


def test_overrides_and_round_trip(tmp_path):
    cfg = Config.load(ROOT / "configs" / "sp22-part2.yaml", ["train.epochs=3", "features.img_size=[64, 128]"])
    assert cfg.train.epochs == 3 and cfg.run_name == "EfficientNetB0-64x128"
    assert cfg.audio.duration == 8.0 and cfg.augment.cutmix_prob == 0.0  # from the file
    assert cfg.augment.mixup_prob == 0.65  # inherited through `base:` from sp22-part1.yaml
    cfg.save(tmp_path / "c.yaml")
    assert Config.load(tmp_path / "c.yaml") == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "override, key",
    [
        ("augment.gn_prob=-0.1", "augment.gn_prob"),
        ("features.fmax=9000", "features.fmax"),
        ("features.img_size=[16, 64]", "features.img_size[0]"),
        ("train.optimizer=Adamax", "train.optimizer"),
        ("model.nme=x", "model.nme"),
        ("data.selected_folds=[7]", "data.selected_folds"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.wandb=maybe", "train.wandb"),
        ("train.lr_max=.nan", "train.lr_max"),
        ("train.epochs=.inf", "train.epochs"),
        ("seed=-1", "seed"),
        ("infer.batch_size=0", "infer.batch_size"),
        ("train.lr_min=1e-3", "train.lr_min"),
        ("data.selected_folds=[]", "data.selected_folds"),
        ("data.selected_folds=[1, 2, 1]", "data.selected_folds"),
        ("train.lr_ramp_ep=-1", "train.lr_ramp_ep"),
        ("infer.pseudo_cap_per_class=0", "infer.pseudo_cap_per_class"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.load(None, [override])


def _numeric_keys(cls=Config, prefix=""):
    """(dotted key, element type, is a list) of every int / float field of the config, optional ones included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            yield from _numeric_keys(hint, key + ".")
            continue
        is_list = typing.get_origin(hint) is list
        inner = typing.get_args(hint) or (hint,)  # list[int] -> int; float | None -> float, None
        kind = next((t for t in inner if t in (int, float)), None)
        if kind is not None and hint is not bool:
            yield key, kind, is_list


def test_nan_and_infinity_are_refused_in_every_numeric_key():
    keys = list(_numeric_keys())
    assert len(keys) >= 50 and ("augment.snr_db", float, True) in keys and ("infer.batch_size", int, False) in keys
    defaults = Config()
    for key, kind, is_list in keys:
        for bad in (math.nan, math.inf, -math.inf):
            value, named = bad, key
            if is_list:
                current = functools.reduce(getattr, key.split("."), defaults)
                value, named = [bad, *current[1:]], f"{key}[0]"
            with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
                defaults.replace(**{key.replace(".", "__"): value})


def test_range_edges_that_are_allowed():
    cfg = Config.load(None, ["seed=0", "train.lr_min=1e-5", "train.lr_max=1e-5", "infer.batch_size=1",
                             "data.selected_folds=[4, 0]"])
    assert cfg.seed == 0 and cfg.train.lr_min == cfg.train.lr_max and cfg.data.selected_folds == [4, 0]


def test_missing_and_self_extending_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "absent.yaml")
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        Config.load(loop)


def test_generated_reference_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_docs.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
