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
import json
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
from voxtrace.recipes.demo import load_results

REPO = Path(__file__).resolve().parents[1]
PER_CLASS = 5
MODEL = "ResNet18"  # the demo's CNN, trained end to end in the demo config's two voice-disjoint folds
FROZEN = "whisper_tiny_en"  # the demo's frozen member, with its own config (configs/demo-whisper.yaml)
CNN_RUN, FROZEN_RUN = f"{MODEL}-32x64", f"{FROZEN}-1s-logistic"  # run names: image size, or window and head
RUNS = {f"supervised/{CNN_RUN}", f"supervised/{FROZEN_RUN}", f"semi/{FROZEN_RUN}"}
BASELINE = "MFCC/LFCC + SVM (classical)"
REJECTION = "ensemble+rejection"

pytestmark = pytest.mark.skipif(bool(missing_programs()), reason="speech engines not installed")


def tiny_config(root: Path) -> Path:
    """`configs/demo.yaml` and `configs/demo-whisper.yaml` (the demo's two members, as they are) shrunk to seconds:
    1 s windows, 32x64 images, one epoch; every file pseudo-labelled."""
    shrink = {
        "output_dir": str(root / "run"),
        "data": {"root": str(root / "data")},
        "audio": {"duration": 1.0},
        "features": {"img_size": [32, 64]},
        "model": {"num_features": 16},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"pseudo_threshold": 0.0},  # an untrained model is never confident: keep every clip
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({"base": str(REPO / "configs" / "demo.yaml"), **shrink}))
    frozen = {"base": str(REPO / "configs" / "demo-whisper.yaml"), **shrink}
    (root / "tiny-frozen.yaml").write_text(yaml.safe_dump(frozen))
    return path


def run_demo(cfg_path: Path, out: Path) -> str:
    """`voxtrace demo` in this process; returns what it printed (the stage log)."""
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = cli.main(["demo", "--cfg", str(cfg_path), "--models", MODEL,
                         f"{FROZEN}={cfg_path.parent / 'tiny-frozen.yaml'}", "--semi-models", FROZEN,
                         "--out", str(out), "--per-class", str(PER_CLASS)])
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
        "choice": json.loads((out / "ensemble.json").read_text()),
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


def oof_frames(out: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(out / name / "csv" / "oof.csv") for name in RUNS}


def test_training_stages_leave_checkpoints_and_voice_disjoint_out_of_fold_scores(demo):
    import keras

    out, cfg, meta = demo["out"], demo["cfg"], demo["meta"].set_index("track")
    found = {f"{stage}/{d.name}" for stage in ("supervised", "semi") for d in (out / stage).iterdir()
             if (d / "ckpt").is_dir()}
    assert found == RUNS  # the trained member is not retrained with pseudo-labels: --semi-models names the other
    expected_ckpts = {MODEL: ["fold-0.keras", "fold-1.keras"], FROZEN: ["model.keras"]}
    for name in RUNS:
        run = out / name
        saved = Config.load(run / "cfg" / "config.yaml")
        assert list(saved.features.img_size) == [32, 64] and saved.train.epochs == 1
        ckpts = sorted(p.name for p in (run / "ckpt").glob("*.keras"))
        assert ckpts == expected_ckpts[saved.model.name], name
        model = keras.saving.load_model(run / "ckpt" / ckpts[0], safe_mode=True)
        probs = model.predict(np.zeros((2, cfg.num_samples), np.float32), verbose=0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        both = pd.read_csv(run / "csv" / "oof.csv")
        oof = both[both["view"] == "clean"].reset_index(drop=True)
        train = meta[meta["split"] == "train"]
        assert sorted(oof["track"]) == sorted(train.index), name  # every training clip scored once, out of fold
        shifted = both[both["view"] == "shifted"]  # and once more in the shifted view, by the same fold
        assert shifted[["track", "fold"]].sort_values("track").values.tolist() == \
            oof[["track", "fold"]].sort_values("track").values.tolist(), name
        groups = train.loc[oof["track"], "speaker"].to_numpy()
        for group in set(groups):  # a voice with more than one clip never spans two folds ... unless its class
            folds = set(oof["fold"][groups == group])  # has that voice alone (then it is split, with a warning)
            single_voice = train.loc[oof["track"][groups == group], "class_name"].map(
                train.groupby("class_name")["speaker"].nunique()).eq(1).all()
            assert len(folds) == 1 or single_voice, (name, group)


def test_pseudo_labels_are_the_weighted_supervised_ensemble_on_the_pseudo_parts(demo):
    out, data, cfg, choice = demo["out"], demo["data"], demo["cfg"], demo["choice"]
    pseudo = pd.read_csv(out / "pseudo.csv")
    parts = [f"eval_part{k}" for k in cfg.data.pseudo_parts]
    assert sorted(pseudo["path"].map(lambda p: Path(p).parent.name).unique()) == parts
    assert sorted(pseudo["track"]) == sorted(t for part in parts for t in wav_names(data / part))
    members = {name: pd.read_csv(out / "predictions" / "all_parts.per_model" / f"{name.replace('/', '__')}.csv")
               .set_index("track").loc[pseudo["track"], cfg.classes].to_numpy()
               for name in choice["pseudo_weights"]}
    weights = choice["pseudo_weights"]
    expected = sum(weights[n] * members[n] for n in members) / sum(weights.values())
    np.testing.assert_allclose(pseudo[cfg.classes].to_numpy(), expected, atol=2e-5)
    n_train = int((demo["meta"]["split"] == "train").sum())
    assert f"{n_train} labelled files + {len(pseudo)} pseudo-labelled" in demo["first"]


def test_ensemble_choices_are_fitted_on_out_of_fold_scores(demo):
    """Members kept, weights and rejection: recomputed by brute force with scikit-learn from oof.csv, whose rows
    hold the clean view and the shifted view (train.oof_shift) of every clip; the choices use both."""
    cfg, choice = demo["cfg"], demo["choice"]
    oof = oof_frames(demo["out"])
    classes = cfg.classes

    def f1(y, pred):
        return f1_score(y, pred, average="macro", labels=range(len(classes)), zero_division=0)

    for name in RUNS:
        frame = oof[name]
        assert sorted(frame["view"].unique()) == ["clean", "shifted"], name
        for view, key in (("clean", "lvo_f1"), ("shifted", "lvo_shifted_f1")):
            rows = frame[frame["view"] == view]
            assert choice[key][name] == pytest.approx(
                f1(rows["label"].map(classes.index), rows[classes].to_numpy().argmax(1)), abs=1e-9)
    semi, kept = f"semi/{FROZEN_RUN}", f"supervised/{FROZEN_RUN}"
    assert sorted(choice["kept"]) == sorted([kept, f"supervised/{CNN_RUN}"])
    assert choice["weights"][semi] == 0.0  # trained with pseudo-labels: its OOF scores are not voice-disjoint
    order = oof[kept].set_index(["path", "view"]).index
    a = oof[f"supervised/{CNN_RUN}"].set_index(["path", "view"]).loc[order, classes].to_numpy()
    b = oof[kept].set_index(["path", "view"]).loc[order, classes].to_numpy()
    y = oof[kept]["label"].map(classes.index).to_numpy()
    clean = order.get_level_values("view") == "clean"
    grid = {w: f1(y, (w * a + (1 - w) * b).argmax(1)) for w in np.round(np.arange(11) / 10, 1)}
    assert choice["both_views_f1"]["ensemble"] == pytest.approx(max(grid.values()), abs=1e-9)
    w = choice["weights"][f"supervised/{CNN_RUN}"]
    assert grid[round(w, 1)] == pytest.approx(max(grid.values()), abs=1e-9)
    assert w + choice["weights"][kept] == pytest.approx(1.0)
    mixed = (w * a + (1 - w) * b).astype(np.float32)  # as the ensemble aggregates: float32 probabilities
    assert choice["lvo_f1"]["ensemble"] == pytest.approx(f1(y[clean], mixed[clean].argmax(1)), abs=1e-9)
    threshold = choice["rejection"]["threshold"]
    pred = np.where(mixed.max(1) < threshold, classes.index(cfg.unknown_class), mixed.argmax(1))
    rejected_f1 = f1(y, pred)
    assert choice["both_views_f1"]["ensemble + rejection"] == pytest.approx(rejected_f1, abs=1e-9)
    assert choice["lvo_f1"]["ensemble + rejection"] == pytest.approx(f1(y[clean], pred[clean]), abs=1e-9)
    assert choice["rejection"]["used"] == (rejected_f1 > choice["both_views_f1"]["ensemble"])
    correct_known = (mixed.argmax(1) == y) & (y != classes.index(cfg.unknown_class))
    kept_share = np.mean(mixed.max(1)[correct_known] >= threshold)
    assert kept_share >= cfg.infer.open_set.target_tpr - 1e-9  # the calibration keeps the target share


def prediction_csv(out: Path, row, part: str) -> Path:
    if row["model"] == BASELINE:
        return out / "predictions" / "baseline" / f"{part}.csv"
    return out / "predictions" / row["stage"] / row["model"] / f"{part}.csv"


def test_predictions_cover_every_eval_file_and_the_ensemble_is_the_weighted_mean(demo):
    out, data, classes, results, choice = demo["out"], demo["data"], demo["cfg"].classes, demo["results"], demo["choice"]
    unknown = classes.index(demo["cfg"].unknown_class)
    for _, row in results.iterrows():
        for part in demo["parts"]:
            pred = pd.read_csv(prediction_csv(out, row, part))
            assert sorted(pred["track"]) == wav_names(data / part), (row["model"], part)
            assert pred["track"].is_unique
            assert pred["algorithm"].isin(range(len(classes))).all()
            probs = pred[classes].to_numpy()
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
            if row["model"] == REJECTION:
                expected = np.where(probs.max(1) < choice["rejection"]["threshold"], unknown, probs.argmax(1))
                np.testing.assert_array_equal(pred["algorithm"], expected)
            else:
                np.testing.assert_array_equal(pred["algorithm"], probs.argmax(axis=1))
    for part in demo["parts"]:
        ensemble = pd.read_csv(out / "predictions" / "final" / "ensemble" / f"{part}.csv").set_index("track")
        total = sum(w * pd.read_csv(out / "predictions" / name.split("/")[0] / name.split("/")[1] / f"{part}.csv")
                    .set_index("track").loc[ensemble.index, classes].to_numpy()
                    for name, w in choice["weights"].items())
        np.testing.assert_allclose(ensemble[classes].to_numpy(), total / sum(choice["weights"].values()), atol=2e-5)


def recomputed_scores(y_true, y_pred, probs, meta, unknown) -> dict:
    """Every figure of a results row for one part, by scikit-learn from the labels, one prediction CSV and the
    clips' metadata rows (`detect_id`: 0 human, 1 synthetic; `engine`; `voice_in_train` where present)."""
    from voxtrace.data.corpus.vocoders import VOCODERS

    is_unknown = y_true == unknown
    origin = meta["detect_id"].to_numpy()
    engine = meta["engine"].to_numpy()

    def unknown_recall(mask):
        return recall_score(is_unknown[mask], y_pred[mask] == unknown, zero_division=0) if mask.any() else np.nan

    def called_unknown(mask):
        return float(np.mean(y_pred[mask] == unknown)) if mask.any() else np.nan

    def fpr_at_95_tpr():
        fpr, tpr, _ = roc_curve(is_unknown, probs[:, unknown], drop_intermediate=False)
        return fpr[np.argmax(tpr >= 0.95)]

    both = is_unknown.any() and not is_unknown.all()
    vocoded = np.isin(engine, list(VOCODERS))
    scores = {
        "acc": accuracy_score(y_true, y_pred),
        "f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "unknown_f1": f1_score(y_true, y_pred, labels=[unknown], average=None, zero_division=0)[0],
        "unknown_recall_human": unknown_recall(is_unknown & (origin == 0)),
        "unknown_recall_synthetic": unknown_recall(is_unknown & (origin == 1)),
        "unknown_recall_vocoded": unknown_recall(is_unknown & vocoded),
        "unknown_recall_engine": unknown_recall(is_unknown & (engine != "human") & ~vocoded),
        "known_as_unknown": called_unknown(~is_unknown),
        "auroc": roc_auc_score(is_unknown, probs[:, unknown]) if both else np.nan,
        "fpr95": fpr_at_95_tpr() if both else np.nan,
    }
    if "voice_in_train" in meta:
        seen = meta["voice_in_train"].astype(str).str.lower().eq("true").to_numpy()
        scores["known_as_unknown_train_voice"] = called_unknown(~is_unknown & seen)
        scores["known_as_unknown_new_voice"] = called_unknown(~is_unknown & ~seen)
    return scores


def test_results_table_equals_metrics_recomputed_from_the_predictions(demo):
    out, data, classes, results, choice = demo["out"], demo["data"], demo["cfg"].classes, demo["results"], demo["choice"]
    expected_rows = {("ensemble", "final"), (REJECTION, "final"), (BASELINE, "supervised")}
    expected_rows |= {(name.split("/")[1], name.split("/")[0]) for name in RUNS}
    assert set(zip(results["model"], results["stage"])) == expected_rows and len(results) == len(expected_rows)
    figures = [c for c in results.columns if c not in ("model", "stage", "weight", "lvo_f1", "lvo_shifted_f1")]
    assert {f"{part}_{m}" for part in demo["parts"] for m in ("acc", "f1")} <= set(figures)  # every part is scored
    meta = demo["meta"].set_index("track")
    unknown = classes.index(demo["cfg"].unknown_class)
    checked = set()
    for _, row in results.iterrows():
        key = "ensemble" if row["model"] == "ensemble" else f"{row['stage']}/{row['model']}"
        if row["model"] == REJECTION:
            key = "ensemble + rejection"
        if row["model"] != BASELINE:
            assert row["lvo_f1"] == pytest.approx(choice["lvo_f1"][key], abs=1e-9)
            assert row["lvo_shifted_f1"] == pytest.approx(choice["lvo_shifted_f1"][key], abs=1e-9)
        if key in choice["weights"]:
            assert row["weight"] == choice["weights"][key]
        for part in demo["parts"]:
            labels = pd.read_csv(data / LABEL_FILES[part]).set_index("track")["algorithm"]
            pred = pd.read_csv(prediction_csv(out, row, part))
            scores = recomputed_scores(labels.loc[pred["track"]].to_numpy(), pred["algorithm"].to_numpy(),
                                       pred[classes].to_numpy(), meta.loc[pred["track"]], unknown)
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
    out, results, choice = demo["out"], demo["results"], demo["choice"]
    shown = {(r["model"], r["stage"]): r for _, r in results.iterrows()}
    text = (out / "results.md").read_text()
    rows = markdown_rows(text)
    assert {(cells[0], cells[1]) for cells in rows if len(cells) > 2} == set(shown)
    for cells in rows:  # every number shown is one of that row's figures, to three decimals
        if (cells[0], cells[1]) not in shown:
            continue  # the stage timings table
        values = [v for k, v in shown[(cells[0], cells[1])].items() if k not in ("model", "stage")]
        for cell in cells[2:]:
            assert cell == "" or any(abs(float(cell) - v) <= 5e-4 + 1e-9 for v in values if pd.notna(v)), cells
    first_table = text.split("\n\n")[1]
    header = first_table.splitlines()[0]
    assert header.index("part4") < header.index("part1") if "part4" in header else True  # cross-corpus first
    saved = load_results(out)
    pd.testing.assert_frame_equal(pd.DataFrame(saved["rows"]), results, check_dtype=False)
    final = results[(results["model"] == (REJECTION if choice["rejection"]["used"] else "ensemble"))
                    & (results["stage"] == "final")].iloc[0]
    baseline = results[results["model"] == BASELINE].iloc[0]
    members = results[~results["model"].isin(["ensemble", REJECTION, BASELINE])]
    assert saved["targets"]
    for check in saved["targets"]:  # targets: the final ensemble's figures against their bounds
        key, other, op, bound = re.fullmatch(r"(\w+)(?: - (baseline|best member))? (>=|<=) ([\d.]+)",
                                             check["target"]).groups()
        reference = {"baseline": baseline[key], "best member": members[key].max(), None: 0.0}[other]
        value = final[key] - reference
        met = value >= float(bound) - (1e-9 if other == "best member" else 0) if op == ">=" else value <= float(bound)
        assert check["value"] == pytest.approx(value, abs=1e-9) and check["met"] == met
        assert check["target"] in text
    assert set(saved["stage_seconds"]) == {p.stem for p in (out / "stages").glob("*.done")}
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_every_finished_stage(demo):
    out = demo["out"]
    done = sorted(p.stem for p in (out / "stages").glob("*.done"))
    ran = re.findall(r"^\[run\] (\S+):", demo["first"], flags=re.M)
    assert sorted(ran) == sorted(set(done) - {"baseline"})  # every stage that ran left its marker
    assert {"corpus", "pseudo", f"supervised-{MODEL}", f"supervised-{FROZEN}", f"semi-{FROZEN}", "predict",
            "baseline"} == set(done)
    assert not re.findall(r"^\[run\]", demo["second"], flags=re.M)
    skipped = re.findall(r"^\[skip\] (\S+):", demo["second"], flags=re.M)
    assert sorted(skipped) == sorted(set(ran) - {"corpus"})  # the corpus is found, not rebuilt
    assert demo["after"] == demo["before"]  # no checkpoint, prediction, label or clip rewritten
    assert (out / "results.csv").read_text() == demo["results_before"]


def test_each_model_of_the_ensemble_may_have_its_own_config(tmp_path):
    from voxtrace.commands.demo import DEFAULT_MODELS
    from voxtrace.recipes.demo import DemoPlan

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
