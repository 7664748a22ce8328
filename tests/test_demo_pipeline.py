"""`voxtrace demo` end to end on a tiny corpus, as `make demo` runs it: every stage's output checked by value
(labels against the corpus metadata, pseudo-labels against the supervised ensemble, predictions against the eval
folders, the results table against metrics recomputed with scikit-learn), then a rerun that must skip them all.

The eval parts and the stages are read from what the run declares (the corpus metadata's splits and label
files, `OUT/stages/*.done`, the results table's columns), not listed here. Five clips per class: the classical
baseline's calibration needs five of a class; fewer make `voxtrace demo` fail at that last stage.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score, roc_curve

from voxtrace import cli
from voxtrace.config import Config
from voxtrace.data.corpus.build import LABEL_FILES
from voxtrace.data.corpus.engines import missing_programs
from voxtrace.pipeline import load_results

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 5
MODEL = "cnn4"
BASELINE = "MFCC/LFCC + SVM (classical)"

pytestmark = pytest.mark.skipif(bool(missing_programs()), reason="speech engines not installed")


def tiny_config(root: Path) -> Path:
    """`configs/demo.yaml` shrunk to seconds: 1 s windows, 32x64 images, one epoch; every file pseudo-labelled."""
    cfg = {
        "base": str(REPO / "configs" / "demo.yaml"),
        "output_dir": str(root / "run"),
        "data": {"root": str(root / "data")},
        "audio": {"duration": 1.0},
        "features": {"img_size": [32, 64]},
        "model": {"num_features": 16},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"pseudo_threshold": 0.0},  # an untrained model is never confident: keep every clip
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_demo(cfg_path: Path, out: Path) -> str:
    """`voxtrace demo` in this process; returns what it printed (the stage log)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = cli.main(["demo", "--cfg", str(cfg_path), "--models", MODEL, "--out", str(out),
                         "--per-class", str(PER_CLASS)])
    assert code == 0, log.getvalue()[-3000:]
    return log.getvalue()


def products(out: Path, data: Path, parts: list[str]) -> dict[str, int]:
    """Modification times of what the stages produce: the corpus, stage markers, checkpoints, pseudo-labels and
    prediction CSVs (the evaluation reports beside the predictions, OUT/predictions/.../PART/, are rewritten)."""
    files = [*data.rglob("*.*"), *out.glob("stages/*.done"), *out.rglob("ckpt/*.keras"), out / "pseudo.csv",
             *(p for p in out.glob("predictions/**/*.csv") if p.parent.name not in parts)]
    return {str(f): f.stat().st_mtime_ns for f in files}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cfg_path = tiny_config(root)
    out = root / "run"
    first = run_demo(cfg_path, out)
    meta = pd.read_csv(root / "data" / "metadata.csv")
    parts = sorted(set(meta["split"]) - {"train"})
    before = products(out, root / "data", parts)
    results_before = (out / "results.csv").read_text()
    second = run_demo(cfg_path, out)
    return {
        "cfg": Config.load(cfg_path), "out": out, "data": root / "data", "meta": meta, "parts": parts,
        "first": first, "second": second, "before": before, "after": products(out, root / "data", parts),
        "results_before": results_before, "results": pd.read_csv(out / "results.csv"),
    }


def wav_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.wav"))


def test_corpus_labels_match_metadata(demo):
    data, meta, classes = demo["data"], demo["meta"], demo["cfg"].classes
    assert demo["parts"], "the corpus has no evaluation part"
    assert set(meta["split"]) == set(LABEL_FILES)
    for split, labels_file in LABEL_FILES.items():
        labels = pd.read_csv(data / labels_file)
        part = meta[meta["split"] == split].set_index("track")
        assert sorted(labels["track"]) == sorted(part.index) == wav_names(data / split), split
        assert labels["track"].is_unique
        assert labels.set_index("track")["algorithm"].equals(part.loc[labels["track"], "class_id"]), split
        assert (part["class_name"] == part["class_id"].map(dict(enumerate(classes)))).all()
        counts = part["class_id"].value_counts()
        assert sorted(counts.index) == list(range(len(classes))), split  # every class in every split
    train_counts = meta[meta["split"] == "train"]["class_id"].value_counts()
    assert (train_counts == PER_CLASS).all()


def test_training_stages_leave_a_checkpoint_of_the_config(demo):
    import keras

    out, cfg = demo["out"], demo["cfg"]
    for stage in ("supervised", "semi"):
        runs = [d for d in (out / stage).iterdir() if (d / "ckpt").is_dir()]
        assert [d.name for d in runs] == [f"{MODEL}-32x64"]
        saved = Config.load(runs[0] / "cfg" / "config.yaml")
        assert saved.model.name == MODEL and saved.train.epochs == 1 and list(saved.features.img_size) == [32, 64]
        model = keras.saving.load_model(runs[0] / "ckpt" / "model.keras", safe_mode=True)
        probs = model.predict(np.zeros((2, cfg.num_samples), np.float32), verbose=0)
        assert probs.shape == (2, len(cfg.classes))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        history = pd.read_csv(runs[0] / "csv" / "history_all.csv")
        assert len(history) == 1 and np.isfinite(history["loss"]).all()


def test_pseudo_labels_are_the_supervised_ensemble_on_every_eval_file(demo):
    out, data, cfg, parts = demo["out"], demo["data"], demo["cfg"], demo["parts"]
    pseudo = pd.read_csv(out / "pseudo.csv")
    pseudo["folder"] = pseudo["path"].map(lambda p: Path(p).parent.name)
    assert sorted(pseudo["folder"].unique()) == parts  # threshold 0: every clip of every part
    for part in parts:
        rows = pseudo[pseudo["folder"] == part].set_index("track")
        assert sorted(rows.index) == wav_names(data / part)
        assert rows["part"].nunique() == 1  # one part number per folder
        ensemble = pd.read_csv(out / "predictions" / "supervised" / "ensemble" / f"{part}.csv").set_index("track")
        np.testing.assert_allclose(rows[cfg.classes].to_numpy(), ensemble.loc[rows.index, cfg.classes].to_numpy(),
                                   atol=2e-6)
        np.testing.assert_allclose(rows["confidence"], rows[cfg.classes].max(axis=1), atol=2e-6)
    assert pseudo["part"].nunique() == len(parts)
    # the semi-supervised stage trains on the training clips plus the pseudo-labels of data.pseudo_parts
    used = pseudo[pseudo["part"].isin(cfg.data.pseudo_parts)] if cfg.data.pseudo_parts else pseudo
    n_train = int((demo["meta"]["split"] == "train").sum())
    assert f"{n_train} labelled files + {len(used)} pseudo-labelled" in demo["first"]


def prediction_csv(out: Path, row, part: str) -> Path:
    if row["model"] == BASELINE:
        return out / "predictions" / "baseline" / f"{part}.csv"
    return out / "predictions" / row["stage"] / row["model"] / f"{part}.csv"


def test_predictions_cover_every_eval_file_with_a_valid_class(demo):
    out, data, classes, results = demo["out"], demo["data"], demo["cfg"].classes, demo["results"]
    for _, row in results.iterrows():
        for part in demo["parts"]:
            pred = pd.read_csv(prediction_csv(out, row, part))
            assert sorted(pred["track"]) == wav_names(data / part), (row["model"], part)
            assert pred["track"].is_unique
            assert pred["algorithm"].isin(range(len(classes))).all()
            probs = pred[classes].to_numpy()
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
            np.testing.assert_array_equal(pred["algorithm"], probs.argmax(axis=1))
    for stage in ("supervised", "semi"):  # an ensemble of one model is that model
        for part in demo["parts"]:
            ensemble = pd.read_csv(out / "predictions" / stage / "ensemble" / f"{part}.csv")
            single = pd.read_csv(out / "predictions" / stage / f"{MODEL}-32x64" / f"{part}.csv")
            pd.testing.assert_frame_equal(ensemble, single)


def recomputed_scores(y_true, y_pred, probs, origin, unknown) -> dict:
    """Every figure of a results row for one part, by scikit-learn from the labels and one prediction CSV.

    `origin` is the corpus' detect_id of each clip (0 human, 1 synthetic); `probs` the class probabilities.
    """
    is_unknown = y_true == unknown

    def unknown_recall(mask):
        return recall_score(is_unknown[mask], y_pred[mask] == unknown, zero_division=0) if mask.any() else np.nan

    def fpr_at_95_tpr():
        fpr, tpr, _ = roc_curve(is_unknown, probs[:, unknown], drop_intermediate=False)
        return fpr[np.argmax(tpr >= 0.95)]

    both = is_unknown.any() and not is_unknown.all()
    return {
        "acc": accuracy_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "unknown_f1": f1_score(y_true, y_pred, labels=[unknown], average=None, zero_division=0)[0],
        "unknown_recall_human": unknown_recall(is_unknown & (origin == 0)),
        "unknown_recall_synthetic": unknown_recall(is_unknown & (origin == 1)),
        "auroc": roc_auc_score(is_unknown, probs[:, unknown]) if both else np.nan,
        "fpr95": fpr_at_95_tpr() if both else np.nan,
    }


def test_results_table_equals_metrics_recomputed_from_the_predictions(demo):
    out, data, classes, results = demo["out"], demo["data"], demo["cfg"].classes, demo["results"]
    expected_rows = {(name, stage) for stage in ("supervised", "semi") for name in ("ensemble", f"{MODEL}-32x64")}
    assert set(zip(results["model"], results["stage"])) == expected_rows | {(BASELINE, "supervised")}
    assert len(results) == len(expected_rows) + 1
    figures = [c for c in results.columns if c not in ("model", "stage")]
    assert {f"{part}_{m}" for part in demo["parts"] for m in ("acc", "f1")} <= set(figures)  # every part is scored
    meta = demo["meta"].set_index("track")
    unknown = classes.index(demo["cfg"].unknown_class)
    checked = set()
    for _, row in results.iterrows():
        for part in demo["parts"]:
            labels = pd.read_csv(data / LABEL_FILES[part]).set_index("track")["algorithm"]
            pred = pd.read_csv(prediction_csv(out, row, part))
            scores = recomputed_scores(labels.loc[pred["track"]].to_numpy(), pred["algorithm"].to_numpy(),
                                       pred[classes].to_numpy(), meta.loc[pred["track"], "detect_id"].to_numpy(),
                                       unknown)
            for name, value in scores.items():
                column = f"{part}_{name}"
                if column in results.columns:
                    assert row[column] == pytest.approx(value, abs=1e-9, nan_ok=True), (row["model"], column)
                    checked.add(column)
    assert checked == set(figures), f"figures without a recomputation here: {sorted(set(figures) - checked)}"


def markdown_rows(text: str) -> list[list[str]]:
    """The body rows of every Markdown table in `text`, as lists of stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines
            if not line.startswith("| model |") and not line.startswith("|---")]


def test_results_files_show_the_table(demo):
    out, results = demo["out"], demo["results"]
    shown = {(r["model"], r["stage"]): r for _, r in results.iterrows()}
    text = (out / "results.md").read_text()
    rows = markdown_rows(text)
    assert {(cells[0], cells[1]) for cells in rows} == set(shown)
    for cells in rows:  # every number shown is one of that row's figures, to three decimals
        values = [v for k, v in shown[(cells[0], cells[1])].items() if k not in ("model", "stage")]
        for cell in cells[2:]:
            assert cell == "" or any(abs(float(cell) - v) <= 5e-4 + 1e-9 for v in values if pd.notna(v)), cells
    main = rows[: len(results)]  # the first table: macro-F1 and accuracy of every part, for every row
    assert all(len(cells) - 2 >= 2 * len(demo["parts"]) for cells in main)
    saved = load_results(out)
    pd.testing.assert_frame_equal(pd.DataFrame(saved["rows"]), results, check_dtype=False)
    final = results[(results["model"] == "ensemble") & (results["stage"] == "semi")].iloc[0]
    baseline = results[results["model"] == BASELINE].iloc[0]
    for check in saved.get("targets", []):  # targets: the final ensemble's figures against their bounds
        key, minus_baseline, bound = re.fullmatch(r"(\w+)( - baseline)? >= ([\d.]+)", check["target"]).groups()
        value = final[key] - (baseline[key] if minus_baseline else 0.0)
        assert check["value"] == pytest.approx(value, abs=1e-9) and check["met"] == (value >= float(bound))
        assert check["target"] in text
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_every_finished_stage(demo):
    out = demo["out"]
    done = sorted(p.stem for p in (out / "stages").glob("*.done"))
    ran = re.findall(r"^\[run\] (\S+):", demo["first"], flags=re.M)
    assert sorted(ran) == sorted(set(done) - {"baseline"})  # every stage that ran left its marker
    assert {"corpus", "pseudo", f"supervised-{MODEL}", f"semi-{MODEL}", "baseline"} <= set(done)
    assert not re.findall(r"^\[run\]", demo["second"], flags=re.M)
    skipped = re.findall(r"^\[skip\] (\S+):", demo["second"], flags=re.M)
    assert sorted(skipped) == sorted(set(ran) - {"corpus"})  # the corpus is found, not rebuilt
    assert demo["after"] == demo["before"]  # no checkpoint, prediction, label or clip rewritten
    assert (out / "results.csv").read_text() == demo["results_before"]


def test_each_model_of_the_ensemble_may_have_its_own_config(tmp_path):
    from voxtrace.commands.demo import DEFAULT_MODELS
    from voxtrace.pipeline import DemoPlan

    main = REPO / "configs" / "demo.yaml"
    plan = DemoPlan(cfg_path=main, models=["cnn4", f"whisper_tiny_en={REPO / 'configs' / 'demo-whisper.yaml'}"],
                    out=tmp_path)
    assert plan.model_configs == [("cnn4", main), ("whisper_tiny_en", REPO / "configs" / "demo-whisper.yaml")]
    whisper = Config.load(plan.model_configs[1][1])
    assert (whisper.model.name, whisper.features.kind, whisper.data.root) == ("whisper_tiny_en", "raw", "data/demo")
    for item in DEFAULT_MODELS:  # the defaults name configs that exist (relative to the repository root)
        name, _, cfg = item.partition("=")
        assert not cfg or (REPO / cfg).is_file(), item
    with pytest.raises(FileNotFoundError, match="NAME=CONFIG"):
        _ = DemoPlan(cfg_path=main, models=["cnn4=missing.yaml"], out=tmp_path).model_configs
