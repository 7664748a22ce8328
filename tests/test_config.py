"""The config object: YAML + overrides, validation naming the key, round trip, generated reference up to date."""

import subprocess
import sys
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
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.load(None, [override])


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
