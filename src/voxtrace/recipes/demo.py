"""The competition pipeline end to end, as the reference's README runs it, on one config.

corpus (if absent or missing a part) -> supervised training of each member -> pseudo-labels on the eval parts
named by `data.pseudo_parts` -> semi-supervised retraining of the members named by `--semi-models` -> the
ensemble's choices -> one prediction run over every eval part (the ensemble and each member) -> evaluation
against the held-back labels, with the classical baseline beside it.

Every choice is made on leave-voice-out out-of-fold scores of train (each member's `csv/oof.csv`, folds that
never split a voice or speaker), never on an evaluation part: member weights (`choose_ensemble`; a member that
does not help gets weight 0) and open-set rejection. Each eval part holds one axis out of training
(`voxtrace.data.corpus.build.HELD_OUT_AXES`); parts 4 and 5 are built apart from training (cross-corpus) and
lead the results table. The targets the demo is held to are checked and printed last, with each stage's
timing. Every stage runs a voxtrace command as a function call (`voxtrace.recipes.stages.Stages`) and is
skipped when done with the same arguments, so a rerun after an interruption finishes only the rest (training
itself resumes from its last epoch).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import Config
from voxtrace.data.corpus.build import CROSS_PARTS, EVAL_PARTS, HELD_OUT_AXES, LABEL_FILES
from voxtrace.data.shift import in_view
from voxtrace.inference.ensemble import fit_member_weights
from voxtrace.io import atomic_savefig, atomic_write_csv, atomic_write_json, atomic_write_text
from voxtrace.recipes.stages import Stages

log = logging.getLogger(__name__)

# What the final ensemble is held to; printed by every run. Parts 4 and 5 (CROSS_PARTS) are built apart from
# training (cross-corpus), part 5 through the channel families train never uses.
TARGETS = {"eval_part4_f1": 0.95, "eval_part5_f1": 0.90, "eval_part4_unknown_recall_human": 0.90,
           "eval_part4_unknown_recall_vocoded": 0.90}
MAX_KNOWN_AS_UNKNOWN = 0.03  # share of known-generator clips called `unknown` on clean parts (1 and 4)
BASELINE_MARGIN = 0.05  # the ensemble's macro-F1 over the classical baseline's on the cross-corpus and channel parts
CHANNEL_PARTS = ("eval_part2", "eval_part5")
BASELINE = "MFCC/LFCC + SVM (classical)"
REJECTION = "ensemble+rejection"  # the ensemble with the open-set rule calibrated on its OOF predictions
REJECTION_KEY = "ensemble + rejection"


@dataclass
class DemoPlan:
    """What the pipeline runs: a config, the backbones of the ensemble, and where everything goes.

    A model is `NAME` (trained with `cfg_path`) or `NAME=CONFIG` (trained with its own config, e.g. a waveform
    backbone beside log-mel CNNs); every checkpoint carries its config, so the ensemble mixes them freely.
    """

    cfg_path: Path
    models: list[str]
    out: Path
    per_class: int | None = None
    semi_models: tuple[str, ...] = ()  # members retrained with the pseudo-labels (NAME as in `models`)

    @functools.cached_property
    def cfg(self) -> Config:
        return Config.load(self.cfg_path)

    @property
    def model_configs(self) -> list[tuple[str, Path]]:
        """(backbone name, config path) of each model of the ensemble; a missing config is named up front."""
        pairs = []
        for item in self.models:
            name, _, cfg_path = item.partition("=")
            path = Path(cfg_path) if cfg_path else self.cfg_path
            if not name or not path.is_file():
                raise FileNotFoundError(f"--models {item}: expected NAME or NAME=CONFIG with an existing config file")
            pairs.append((name, path))
        return pairs

    @property
    def data_dir(self) -> Path:
        return Path(self.cfg.data.root)


def run_demo(plan: DemoPlan) -> dict:
    """Run every stage of the plan and return the results table (also saved under `plan.out`)."""
    cfg = plan.cfg
    stages = Stages(plan.out)
    complete = all((plan.data_dir / f).is_file() for f in ["metadata.csv", *LABEL_FILES.values()])
    if not complete:  # absent, unfinished, or without a part this version has: the build renders what is missing
        sizes = {"per_class": plan.per_class, "cross_per_class": plan.per_class} if plan.per_class else {}
        stages.marker("corpus").unlink(missing_ok=True)
        stages.run("corpus", "corpus", out=str(plan.data_dir), seed=cfg.seed, **sizes)
    models = plan.model_configs

    cache = [f"model.head.cache_dir={plan.out / 'feature_cache'}"]
    for model, cfg_path in models:
        stages.run(f"supervised-{model}", "train", cfg=str(cfg_path), resume=True, model_name=model,
                   output_dir=str(plan.out / "supervised"), overrides=cache)
    supervised = {f"supervised/{run.name}": run for run in _runs(plan.out / "supervised")}
    pseudo_weights, _ = fit_member_weights(_oof(supervised), cfg.classes)
    pseudo_csv = plan.out / "pseudo.csv"
    pseudo_parts = [str(plan.data_dir / f"eval_part{k}") for k in (cfg.data.pseudo_parts or [1])]
    stages.run("pseudo", "pseudo", model_dir=str(plan.out / "supervised"), infer_path=pseudo_parts,
               output=str(pseudo_csv),
               weights=[f"{name.split('/', 1)[1]}={w}" for name, w in pseudo_weights.items()])
    for model, cfg_path in models:
        if model in plan.semi_models:
            stages.run(f"semi-{model}", "train", cfg=str(cfg_path), resume=True, model_name=model,
                       output_dir=str(plan.out / "semi"), pseudo_csv=str(pseudo_csv), overrides=cache)
    runs = {**supervised, **{f"semi/{run.name}": run for run in _runs(plan.out / "semi")}}
    choice = {**choose_ensemble(runs, cfg), "pseudo_weights": pseudo_weights}
    atomic_write_json(plan.out / "ensemble.json", choice)

    eval_dirs = [str(plan.data_dir / part) for part in EVAL_PARTS]
    combined = plan.out / "predictions" / "all_parts.csv"
    predict_args = {"model_dir": str(plan.out), "infer_path": eval_dirs, "output": str(combined), "probs": True,
                    "per_model": True, "no_zip": True,
                    "weights": [f"{name}={w}" for name, w in choice["weights"].items()]}
    if not stages.done("predict", "predict", predict_args):  # every member's scores come from one uninterrupted run
        Path(f"{combined}.partial").unlink(missing_ok=True)
    stages.run("predict", "predict", **predict_args)
    from voxtrace.commands.predict import per_model_path

    sources = {("ensemble", "final"): combined}
    sources.update({(name.split("/", 1)[1], name.split("/", 1)[0]): per_model_path(combined, name) for name in runs})
    rows = []
    for (model, stage), csv in sources.items():
        key = "ensemble" if model == "ensemble" else f"{stage}/{model}"
        frame = pd.read_csv(csv)
        variants = {model: frame}
        if model == "ensemble":
            variants[REJECTION] = _with_rejection(frame, choice, cfg)
        for name, rows_of in variants.items():
            row = {"model": name, "stage": stage, "weight": choice["weights"].get(key, float("nan")),
                   "lvo_f1": choice["lvo_f1"][REJECTION_KEY if name == REJECTION else key],
                   "lvo_shifted_f1": choice["lvo_shifted_f1"][REJECTION_KEY if name == REJECTION else key]}
            for part in EVAL_PARTS:
                pred = plan.out / "predictions" / stage / name / f"{part}.csv"
                _write_part(rows_of, plan.data_dir, part, pred)
                row.update(_score(pred, plan.data_dir, part, prefix=part))
            rows.append(row)
    rows.append(_classical_baseline(plan, stages))
    return _save_results(plan, rows, choice)


def _runs(model_dir: Path) -> list:
    from voxtrace.inference.checkpoints import discover_runs

    return discover_runs(model_dir) if model_dir.is_dir() and any(model_dir.rglob("*.keras")) else []


def _oof(runs: dict) -> dict:
    """Each run's leave-voice-out out-of-fold frame (`RUN/csv/oof.csv`)."""
    missing = [name for name, run in runs.items() if not run.files.oof.is_file()]
    if missing:
        raise FileNotFoundError(f"ensemble weights need leave-voice-out out-of-fold predictions; {missing} have "
                                f"none (train with data.all_data: false, or a frozen head)")
    return {name: pd.read_csv(run.files.oof) for name, run in runs.items()}


def choose_ensemble(runs: dict, cfg) -> dict:
    """Every choice of the final ensemble, made on leave-voice-out out-of-fold scores of `data/train` only.

    Member weights are fitted on the OOF scores of the runs trained without pseudo-labels
    (`fit_member_weights`): a run trained with them has OOF scores that are not voice-disjoint (a pseudo-
    labelled clip may share its voice with the held-out fold), so nothing shows whether it helps, and it gets
    weight 0 (its figures on every part are still reported). The open-set rejection threshold
    (`infer.open_set`) is calibrated on the weighted OOF probabilities, and rejection is used when it raises
    the OOF macro-F1.
    """
    from voxtrace.evaluation.metrics import label_indices, label_scores
    from voxtrace.inference.open_set import apply_open_set, calibrate_threshold

    def f1(labels, pred, rows=slice(None)) -> float:
        return float(label_scores(labels[rows], pred[rows], cfg.classes)["f1"])

    def per_view(labels, pred, views) -> tuple[float, float]:
        """Macro-F1 of the clean rows and of the shifted rows (`views`: one mask each; NaN for a view without rows)."""
        return f1(labels, pred, views[0]), f1(labels, pred, views[1])

    oof = _oof(runs)
    lvo, shifted = {}, {}
    for name, frame in oof.items():
        labels, pred = label_indices(frame["label"], cfg.classes), frame[cfg.classes].to_numpy().argmax(1)
        lvo[name], shifted[name] = per_view(labels, pred, [in_view(frame, view) for view in ("clean", "shifted")])
    kept = sorted(name for name, run in runs.items() if not run.cfg.data.pseudo_csv)
    weights, table = fit_member_weights({name: oof[name] for name in kept}, cfg.classes)
    weights = {name: weights.get(name, 0.0) for name in runs}
    probs, labels, views = _weighted_oof(oof, weights, cfg.classes)
    views = [views == "clean", views == "shifted"]
    lvo["ensemble"], shifted["ensemble"] = per_view(labels, probs.argmax(1), views)
    score = cfg.infer.open_set.score
    threshold = calibrate_threshold(probs, labels, cfg.classes, cfg.unknown_class, score, cfg.infer.open_set.target_tpr)
    pred, _ = apply_open_set(probs, threshold, cfg.classes, cfg.unknown_class, score)
    lvo[REJECTION_KEY], shifted[REJECTION_KEY] = per_view(labels, pred, views)
    both = {"ensemble": float(table.iloc[0]["f1"]), REJECTION_KEY: f1(labels, pred)}  # what the choices maximise
    return {"weights": weights, "kept": kept, "lvo_f1": lvo, "lvo_shifted_f1": shifted, "both_views_f1": both,
            "rejection": {"score": score, "target_tpr": cfg.infer.open_set.target_tpr, "threshold": threshold,
                          "used": both[REJECTION_KEY] > both["ensemble"]},
            "weight_search": table.head(10).to_dict("records")}


def _weighted_oof(oof: dict, weights: dict, classes):
    """The weighted mean of the members' OOF probabilities, as `predict --weights` averages them, the labels,
    and each row's view."""
    from voxtrace.evaluation.metrics import label_indices
    from voxtrace.inference.ensemble import aggregate, join_on_path

    used = [name for name, w in weights.items() if w > 0]
    frames = join_on_path([oof[name] for name in used], used)
    probs = aggregate([f[classes].to_numpy() for f in frames], "mean", [weights[n] for n in used])
    views = frames[0].index.get_level_values("view").to_numpy() if "view" in frames[0].index.names else \
        np.full(len(frames[0]), "clean")
    return probs, label_indices(frames[0]["label"], classes), views


def _with_rejection(frame: pd.DataFrame, choice: dict, cfg) -> pd.DataFrame:
    """The ensemble's rows with the calibrated open-set rule applied."""
    from voxtrace.inference.open_set import apply_open_set

    probs = frame[cfg.classes].to_numpy(dtype=np.float64)
    pred, _ = apply_open_set(probs, choice["rejection"]["threshold"], cfg.classes, cfg.unknown_class,
                             choice["rejection"]["score"])
    out = frame.copy()
    out["algorithm"] = pd.array(np.where(pred >= 0, pred, -1), dtype="Int64")
    out.loc[out["algorithm"] < 0, "algorithm"] = pd.NA
    return out


def _write_part(frame: pd.DataFrame, data_dir: Path, part: str, path: Path) -> None:
    """The rows of `frame` whose track is in `part` (track names are unique across the corpus); a file that
    already holds them is left as it is."""
    tracks = set(pd.read_csv(data_dir / f"labels_{part}.csv")["track"])
    text = frame[frame["track"].isin(tracks)].to_csv(index=False, float_format="%.6f")
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)


def _score(pred_csv: Path, data_dir: Path, part: str, prefix: str) -> dict:
    """Accuracy, macro-F1 and the open-set figures of a prediction CSV against the part's held-back labels (via
    `voxtrace evaluate`, whose full report lands beside the CSV)."""
    from voxtrace.evaluation.reports import evaluate_files

    report = evaluate_files(
        pred_csv, data_dir / f"labels_{part}.csv", metadata=data_dir / "metadata.csv", out_dir=pred_csv.parent / part
    )
    scores = {f"{prefix}_acc": report["acc"], f"{prefix}_f1": report["f1"]}
    shares = unknown_shares(pd.read_csv(pred_csv), pd.read_csv(data_dir / "metadata.csv"), part)
    scores.update({f"{prefix}_{k}": v for k, v in shares.items()})
    open_set = report.get("open_set")
    if open_set:
        origin = open_set.get("unknown_recall_by_origin", {})
        scores.update({
            f"{prefix}_unknown_f1": open_set["unknown_f1"],
            f"{prefix}_unknown_recall_human": origin.get("human", {}).get("recall", float("nan")),
            f"{prefix}_unknown_recall_synthetic": origin.get("synthetic", {}).get("recall", float("nan")),
            f"{prefix}_auroc": open_set.get("auroc", float("nan")),
            f"{prefix}_fpr95": open_set.get("fpr_at_95_tpr", float("nan")),
        })
    return scores


def unknown_shares(pred: pd.DataFrame, meta: pd.DataFrame, part: str, unknown: str = "unknown") -> dict:
    """How `unknown` is used on a part: the share of known-generator clips called `unknown` (all, on voices that
    speak in train, on voices that do not) and the recall of `unknown` on human, vocoded and other-engine speech.

    `pred` has `track, algorithm` (class ids), `meta` is the corpus metadata."""
    from voxtrace.config import ATTRIBUTION_CLASSES
    from voxtrace.data.corpus.vocoders import VOCODERS

    rows = meta[meta["split"] == part].merge(pred[["track", "algorithm"]], on="track")
    called = rows["algorithm"] == ATTRIBUTION_CLASSES.index(unknown)
    known = rows["class_name"] != unknown
    shares = {"known_as_unknown": float(called[known].mean()) if known.any() else float("nan")}
    if "voice_in_train" in rows:
        seen = rows["voice_in_train"].astype(str).str.lower() == "true"
        shares["known_as_unknown_train_voice"] = float(called[known & seen].mean()) if (known & seen).any() else float("nan")
        shares["known_as_unknown_new_voice"] = float(called[known & ~seen].mean()) if (known & ~seen).any() else float("nan")
    kinds = np.where(rows["engine"] == "human", "human", np.where(rows["engine"].isin(VOCODERS), "vocoded", "engine"))
    for kind in ("human", "vocoded", "engine"):
        mask = ~known & (kinds == kind)
        shares[f"unknown_recall_{kind}"] = float(called[mask].mean()) if mask.any() else float("nan")
    return shares


def _classical_baseline(plan: DemoPlan, stages: Stages) -> dict:
    """MFCC/LFCC statistics + SVM trained on the same split, predicted and scored like the CNNs."""
    from voxtrace.baselines import classical
    from voxtrace.data.audio import find_audio_files
    from voxtrace.data.manifest import read_manifest
    from voxtrace.inference.submission import prediction_frame, write_predictions

    cfg = plan.cfg
    row = {"model": BASELINE, "stage": "supervised"}
    preds = {part: plan.out / "predictions" / "baseline" / f"{part}.csv" for part in EVAL_PARTS}
    if not stages.done("baseline") or not all(pred.is_file() for pred in preds.values()):
        start = time.time()
        train = read_manifest(cfg, "train")
        model = classical.fit(train["path"].tolist(), train["label"].map(cfg.classes.index).to_numpy(), seed=cfg.seed)
        for part, pred in preds.items():
            paths = find_audio_files(plan.data_dir / part)
            probs, errors = classical.predict_proba(model, paths, cfg.num_classes)
            pred_idx = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs).argmax(1))
            write_predictions(pred, prediction_frame(paths, probs, pred_idx, errors, cfg.classes, with_probs=True))
        stages.mark("baseline", "classical baseline", time.time() - start)
    for part, pred in preds.items():
        row.update(_score(pred, plan.data_dir, part, prefix=part))
    return row


def _save_results(plan: DemoPlan, rows: list[dict], choice: dict) -> dict:
    table = pd.DataFrame(rows)
    atomic_write_csv(plan.out / "results.csv", table)
    targets = check_targets(table, choice)
    results = {"config": str(plan.cfg_path), "models": plan.models, "held_out_axes": HELD_OUT_AXES, "rows": rows,
               "ensemble": choice, "targets": targets, "stage_seconds": Stages(plan.out).seconds()}
    atomic_write_json(plan.out / "results.json", results)
    text = "\n\n".join([format_table(table), format_unknown(table), format_choice(choice),
                         format_targets(targets), format_stage_seconds(results["stage_seconds"])])
    atomic_write_text(plan.out / "results.md", text + "\n")
    _plot_results(table, plan.out / "results.png")
    log.info("\n" + text)
    return results


def _cell(value) -> str:
    return "" if pd.isna(value) else f"{value:.3f}"


def _parts(table: pd.DataFrame) -> list[str]:
    """Evaluation parts in the table, the ones built apart from training first."""
    parts = [p for p in CROSS_PARTS if p in EVAL_PARTS] + [p for p in EVAL_PARTS if p not in CROSS_PARTS]
    return [p for p in parts if f"{p}_f1" in table]


def _markdown(table: pd.DataFrame, cols: list[tuple[str, str]]) -> str:
    lines = ["| model | stage | " + " | ".join(title for _, title in cols) + " |", "|" + "---|" * (len(cols) + 2)]
    for _, r in table.iterrows():
        lines.append(f"| {r['model']} | {r['stage']} | " + " | ".join(_cell(r.get(c)) for c, _ in cols) + " |")
    return "\n".join(lines)


def format_table(table: pd.DataFrame) -> str:
    """Macro-F1 per held-out part (cross-corpus first), the leave-voice-out OOF macro-F1 and the ensemble weight."""
    parts = _parts(table)
    cols = [(f"{p}_f1", f"{p.replace('eval_', '')} {HELD_OUT_AXES[p].split(':')[0]}") for p in parts]
    cols += [("lvo_f1", "leave-voice-out OOF"), ("lvo_shifted_f1", "leave-voice-out OOF, shifted view"),
             ("weight", "weight")]
    return "Macro-F1 over the 6 classes per evaluation part (what each holds out: data/demo/README.md):\n\n" + \
        _markdown(table, cols)


def format_unknown(table: pd.DataFrame) -> str:
    """Known-generator clips called `unknown` (new / training voices) and `unknown` recall per kind of speech."""
    cols = []
    for part in _parts(table):
        short = part.replace("eval_", "")
        keys = [("known_as_unknown", "known->unknown"), ("known_as_unknown_new_voice", "known->unknown, new voice"),
                ("unknown_recall_human", "recall human"), ("unknown_recall_vocoded", "recall vocoded"),
                ("unknown_recall_engine", "recall other engines")]
        cols += [(f"{part}_{k}", f"{short} {t}") for k, t in keys if f"{part}_{k}" in table and
                 table[f"{part}_{k}"].notna().any()]
    return "How `unknown` is used:\n\n" + _markdown(table, cols)


def format_choice(choice: dict) -> str:
    """What the ensemble was built from, chosen on leave-voice-out OOF scores of train only."""
    lines = ["Ensemble, chosen on leave-voice-out out-of-fold predictions of train (no evaluation part), the clean "
             "view and the shifted view together (train.oof_shift; OOF macro-F1 clean / shifted):", ""]
    lines += [f"- {name}: weight {w:.2f}, OOF macro-F1 {choice['lvo_f1'][name]:.3f} / "
              f"{choice['lvo_shifted_f1'][name]:.3f}"
              + ("" if name in choice["kept"] else " (trained with pseudo-labels: its OOF scores are not "
                 "voice-disjoint, so they cannot show that it helps)")
              for name, w in choice["weights"].items()]
    rej, both = choice["rejection"], choice["both_views_f1"]
    lines.append(f"- open-set rejection ({rej['score']} < {rej['threshold']:.3f}, calibrated to keep "
                 f"{rej['target_tpr']:.0%} of the correct known OOF clips): OOF macro-F1 over both views "
                 f"{both[REJECTION_KEY]:.3f} vs {both['ensemble']:.3f} without: "
                 + ("used" if rej["used"] else "not used"))
    return "\n".join(lines)


def final_model(choice: dict) -> str:
    """The results row of what `make demo` delivers: the ensemble, with rejection if it was chosen."""
    return REJECTION if choice["rejection"]["used"] else "ensemble"


def check_targets(table: pd.DataFrame, choice: dict) -> list[dict]:
    """The final ensemble (with rejection where the leave-voice-out scores chose it) against TARGETS,
    MAX_KNOWN_AS_UNKNOWN, its best member and the classical baseline."""
    final = table[(table["model"] == final_model(choice)) & (table["stage"] == "final")]
    if final.empty:
        return []
    final = final.iloc[0]
    checks = [{"target": f"{key} >= {bound}", "value": float(final[key]), "met": bool(final[key] >= bound)}
              for key, bound in TARGETS.items() if key in final and pd.notna(final[key])]
    for part in ("eval_part1", "eval_part4"):
        key = f"{part}_known_as_unknown"
        if key in final and pd.notna(final[key]):
            checks.append({"target": f"{key} <= {MAX_KNOWN_AS_UNKNOWN}", "value": float(final[key]),
                           "met": bool(final[key] <= MAX_KNOWN_AS_UNKNOWN)})
    members = table[~table["model"].isin(["ensemble", REJECTION, BASELINE])]
    baseline = table[table["model"] == BASELINE]
    for part in _parts(table):
        key = f"{part}_f1"
        if not members.empty:
            margin = float(final[key] - members[key].max())
            checks.append({"target": f"{key} - best member >= 0", "value": margin, "met": bool(margin >= -1e-9)})
        if not baseline.empty:
            bound = BASELINE_MARGIN if part in CROSS_PARTS + CHANNEL_PARTS else 0.0
            margin = float(final[key] - baseline.iloc[0][key])
            checks.append({"target": f"{key} - baseline >= {bound}", "value": margin, "met": bool(margin >= bound)})
    return checks


def format_targets(checks: list[dict]) -> str:
    lines = ["Targets (the final ensemble):", ""]
    lines += [f"- [{'x' if c['met'] else ' '}] {c['target']}: {c['value']:.3f}" for c in checks]
    return "\n".join(lines)


def format_stage_seconds(seconds: dict) -> str:
    lines = ["Stage timings:", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {value:.0f} |" for name, value in seconds.items()]
    lines.append(f"| total | {sum(seconds.values()):.0f} |")
    return "\n".join(lines)


def _plot_results(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{m}\n({s})" for m, s in zip(table["model"], table["stage"])]
    x = np.arange(len(table))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(table)), 4))
    parts = _parts(table)
    width = 0.8 / len(parts)
    for k, part in enumerate(parts):
        label = f"{part} ({HELD_OUT_AXES[part].split(':')[0]}) macro-F1"
        ax.bar(x + (k - (len(parts) - 1) / 2) * width, table[f"{part}_f1"], width=width, label=label)
    ax.set_xticks(x, labels, fontsize=7, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("macro-F1")
    ax.legend(loc="lower left")
    ax.set_title("voxtrace demo: macro-F1 per held-out part (cross-corpus first)")
    atomic_savefig(fig, path)


def load_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())
