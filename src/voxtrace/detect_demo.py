"""`python -m voxtrace.detect_demo` (`make demo-detect`): bona fide vs spoof on the demo corpus, end to end.

corpus (if absent) -> train each member (the CNN of configs/demo-detect.yaml, the frozen Whisper head of
configs/demo-detect-whisper.yaml) -> member weights chosen by leave-voice-out out-of-fold EER (a grid over the
simplex) -> the decision threshold fitted on the weighted out-of-fold scores (`inference.decision`,
MODEL_DIR/decision.json) -> predict the cross-corpus parts (4 clean, 5 through held-out channels) -> evaluate
-> OUT/results.md and results.json: EER, minDCF and accuracy at the saved threshold and at each part's own EER
threshold, for the ensemble and each member. Nothing is chosen on an evaluation part. Stages run the commands a
user would type, as function calls, and are skipped when done with the same arguments (`voxtrace.recipes.stages`)
and the same inputs: a member whose resolved config changed is trained again, and the predictions are redone
when a checkpoint, a weight or the threshold changed. A run under the model dir that is not a member gets weight 0.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from voxtrace.config import Config
from voxtrace.data.corpus.build import CROSS_PARTS, LABEL_FILES
from voxtrace.io import atomic_write_csv, atomic_write_json, atomic_write_text
from voxtrace.recipes.stages import Stages

MEMBERS = {"MobileNetV3Small": "configs/demo-detect.yaml", "whisper_tiny_en": "configs/demo-detect-whisper.yaml"}


def choose_weights(oof: dict[str, pd.DataFrame], classes, positive: str, step: float = 0.1):
    """Member weights whose weighted mean of out-of-fold probabilities has the lowest EER (ties: lower minDCF).

    `oof` maps a run name to its `csv/oof.csv` frame; frames are joined on `path`. Returns `({run: weight},
    table)` with one row per weighting on the grid of `step` over the simplex, best first.
    """
    from voxtrace.evaluation.metrics import label_indices
    from voxtrace.inference.decision import detection_figures
    from voxtrace.inference.ensemble import join_on_path

    names = list(oof)
    frames = join_on_path([oof[n] for n in names], names)
    scores = np.stack([f[positive].to_numpy(np.float64) for f in frames])
    is_positive = label_indices(frames[0]["label"], classes) == list(classes).index(positive)
    steps = int(round(1 / step))
    rows = []
    for combo in itertools.product(range(steps + 1), repeat=len(names)):
        if sum(combo) == steps:
            weights = np.array(combo, np.float64) / steps
            figures = detection_figures(is_positive, weights @ scores)
            rows.append({**dict(zip(names, weights)), "oof_eer": figures["eer"], "oof_min_dcf": figures["min_dcf"]})
    table = pd.DataFrame(rows).sort_values(["oof_eer", "oof_min_dcf"], ignore_index=True)
    return {name: float(table.iloc[0][name]) for name in names}, table


def renew_when_changed(stages: Stages, key: str, inputs, names) -> None:
    """Forget the finished stages `names` when `inputs` differ from those recorded under `key` the last time."""
    file = stages.root / f"{key}.inputs"
    digest = hashlib.sha1(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()
    if file.is_file() and file.read_text().strip() == digest:
        return
    for name in names:
        stages.marker(name).unlink(missing_ok=True)
    atomic_write_text(file, digest + "\n")


def run(out: Path, feature_cache: Path, step: float = 0.1) -> dict:
    """Every stage, then the results (also written to `out/results.{md,json}`)."""
    from voxtrace.commands.predict import per_model_path
    from voxtrace.evaluation.metrics import label_indices
    from voxtrace.inference.decision import (decision_settings, detection_figures, evaluate_scores, fit_threshold,
                                             load_or_fit_decision)
    from voxtrace.inference.ensemble import Ensemble
    from voxtrace.inference.settings import infer_settings

    timings, started = {}, time.time()
    stages = Stages(out)
    cfg_path = next(iter(MEMBERS.values()))
    cfg = Config.load(cfg_path)
    data_dir = Path(cfg.data.root)
    if not all((data_dir / f).is_file() for f in ["metadata.csv", *LABEL_FILES.values()]):
        stages.run("corpus", "corpus", out=str(data_dir), seed=cfg.seed)
    models = out / "models"
    member_runs = []
    for name, member_cfg in MEMBERS.items():
        clock = time.time()
        values = {"cfg": member_cfg, "resume": True, "model_name": name, "output_dir": str(models)}
        if Config.load(member_cfg).model.head.kind != "dense":  # a frozen member: features shared with `make demo`
            values["overrides"] = [f"model.head.cache_dir={feature_cache}"]
        member = Config.load(member_cfg, [f"model.name={name}", *values.get("overrides", [])])
        renew_when_changed(stages, f"train-{name}", member.to_dict(), [f"train-{name}"])
        stages.run(f"train-{name}", "train", **values)
        member_runs.append(member.run_name)
        timings[f"train {name}"] = time.time() - clock

    clock = time.time()
    every_run = Ensemble(models).runs
    runs = {run.run_dir.name: run for run in every_run if run.run_dir.name in member_runs}
    for other in sorted({run.run_dir.name for run in every_run} - set(runs)):
        print(f"{models / other}: not a run of {list(MEMBERS.values())}; weight 0", flush=True)
    oof = {name: pd.read_csv(run.files.oof) for name, run in runs.items()}
    positive = cfg.infer.decision.positive
    weights, table = choose_weights(oof, cfg.classes, positive, step)
    weight_args = [f"{run.run_dir.name}={weights.get(run.run_dir.name, 0.0):g}" for run in every_run]
    settings = infer_settings(next(iter(runs.values())).cfg)
    ensemble = Ensemble(models, agg=settings.agg, weights=weight_args)
    rule = decision_settings(ensemble.cfg)
    decision = load_or_fit_decision(ensemble, rule, refit=True)
    atomic_write_csv(out / "member_weights.csv", table)
    # each member alone, at the threshold its own out-of-fold scores give under the same rule
    oof_figures, member_thresholds = {"ensemble": decision["oof"]}, {}
    for name, frame in oof.items():
        is_positive = label_indices(frame["label"], cfg.classes) == cfg.classes.index(positive)
        member_thresholds[name] = fit_threshold(is_positive, frame[positive], rule.rule, rule.target_far)
        oof_figures[name] = detection_figures(is_positive, frame[positive], member_thresholds[name])
    checkpoints = {str(p): p.stat().st_mtime_ns for r in every_run for p in r.checkpoints}
    renew_when_changed(stages, "predict", [checkpoints, weight_args, decision["threshold"]],
                       [f"{stage}-{part}" for stage in ("predict", "evaluate") for part in CROSS_PARTS])
    timings["weights + calibration"] = time.time() - clock

    parts = {}
    for part in CROSS_PARTS:
        clock = time.time()
        pred = out / "predictions" / f"{part}.csv"
        labels = data_dir / f"labels_{part}_detect.csv"
        stages.run(f"predict-{part}", "predict", model_dir=str(models), infer_path=[str(data_dir / part)],
                   output=str(pred), probs=True, per_model=True, no_zip=True, weights=weight_args)
        stages.run(f"evaluate-{part}", "evaluate", pred=str(pred), labels=str(labels),
                   metadata=str(data_dir / "metadata.csv"), cfg=str(cfg_path), out=str(out / "reports" / part),
                   decision=str(models))
        parts[part] = {"ensemble": json.loads((out / "reports" / part / "detection.json").read_text())}
        for name in runs:
            parts[part][name] = evaluate_scores(per_model_path(pred, runs[name].name), labels, cfg.classes, positive,
                                                member_thresholds[name])
        timings[f"predict + evaluate {part}"] = time.time() - clock
    timings["total"] = time.time() - started
    results = {"weights": weights, "decision": decision, "parts": {"train OOF": oof_figures, **parts},
               "timings_s": timings}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_markdown(results))
    print(results_markdown(results))
    return results


def results_markdown(results: dict) -> str:
    """The results table: per part and model, EER, minDCF and accuracy at the saved and the EER threshold."""
    decision = results["decision"]
    lines = ["# voxtrace: bona fide vs spoof on the demo corpus's cross-corpus parts", "",
             "Every choice is made on leave-voice-out out-of-fold scores of train, never on these parts: the member "
             "weights (lowest out-of-fold EER over a grid) and the decision threshold "
             f"(`{decision['rule']}` rule: spoof when P(spoof) >= {decision['threshold']:.4f}; "
             f"out-of-fold EER {decision['oof']['eer']:.4f}). A member's saved threshold is the one its own "
             "out-of-fold scores give under the same rule. minDCF uses ASVspoof 5's costs. The accuracy at the EER "
             "threshold uses each part's own EER point (an oracle, for comparison). `train OOF`: the leave-voice-out "
             "out-of-fold scores the choices were made on. FA: spoof clips accepted as bona fide, FR: bona fide "
             "clips flagged as spoof, at the saved threshold.", "",
             "| part | model | weight | EER | minDCF | acc at saved threshold | FA / FR at saved threshold | "
             "acc at EER threshold | clips (spoof) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for part, models in results["parts"].items():
        for name, f in models.items():
            weight = "" if name == "ensemble" else f"{results['weights'][name]:.1f}"
            lines.append(f"| {part} | {name} | {weight} | {f['eer']:.4f} | {f['min_dcf']:.4f} | {f['acc']:.4f} | "
                         f"{f['false_acceptance']:.3f} / {f['false_rejection']:.3f} | "
                         f"{f['acc_at_eer_threshold']:.4f} | {f['n']} ({f['n_positive']}) |")
    lines += ["", "Seconds per stage (a stage done before is skipped): "
              + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_s"].items()), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo-detect", help="run folder (default: %(default)s)")
    parser.add_argument("--feature-cache", default="runs/demo/feature_cache",
                        help="frozen-encoder feature cache, shared with `make demo` (default: %(default)s)")
    parser.add_argument("--step", type=float, default=0.1, help="grid step of the member weights (default: %(default)s)")
    args = parser.parse_args(argv)
    run(Path(args.out), Path(args.feature_cache), args.step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
