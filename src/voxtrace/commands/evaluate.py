"""`voxtrace evaluate`: score a prediction CSV against labels (accuracy, macro P/R/F1, ROC AUC; for the detect
task EER, minDCF, actDCF and CLLR; open-set figures for the unknown class; per-class, per-channel-family,
per-voice and per-condition (attack, system, codec, ...) tables; confusion matrix and DET curve PNGs,
report.json and report.md). Labels come from a CSV (`--labels`) or from the config's data set (`--cfg` and
`--split`: the protocol's labels and conditions)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--pred", required=True, help="prediction CSV from `voxtrace predict` (--probs for AUC/EER)")
    parser.add_argument("--labels", default=None,
                        help="CSV with `track` and one of algorithm, label, class_id, class, class_name "
                             "(default: the labels of --cfg's data set for --split)")
    parser.add_argument("--split", default="eval",
                        help="without --labels: the split of --cfg's data.dataset to score against (default eval)")
    parser.add_argument("--metadata", default=None,
                        help="CSV with `track` and any of perturbations (per channel family), detect_id and engine "
                             "(unknown recall by origin and generator), split and speaker (seen vs held-out voices)")
    parser.add_argument("--out", default=None, help="report folder (default: beside the prediction CSV)")
    parser.add_argument("--cfg", default=None,
                        help="YAML naming the class list and unknown_class (default: the prediction's probability "
                             "columns and `unknown`)")
    parser.add_argument("--unknown-score", default="unknown_prob", metavar="{unknown_prob,maxprob}",
                        help="score of the known-vs-unknown AUROC and FPR@95TPR: the unknown class' probability "
                             "(default) or maxprob, one minus the top known-class probability")
    parser.add_argument("--decision", default=None, metavar="PATH",
                        help="detection: a saved decision (MODEL_DIR/decision.json, or the model dir): adds EER, "
                             "minDCF and accuracy at its threshold and at the EER threshold (detection.json)")


def run(args) -> int:
    from voxtrace.config import Config, ConfigError
    from voxtrace.evaluation.reports import evaluate_files, evaluate_split, format_report

    cfg = Config.load(args.cfg) if args.cfg else None
    if args.labels is None:
        if cfg is None:
            raise ConfigError("evaluate needs --labels, or --cfg (and --split) to read the labels of its data set")
        if args.metadata:
            raise ConfigError("--metadata goes with --labels; with --cfg the data set's own conditions are used")
        report = evaluate_split(args.pred, cfg, args.split, out_dir=args.out, unknown_score=args.unknown_score)
    else:
        report = evaluate_files(args.pred, args.labels, metadata=args.metadata, out_dir=args.out,
                                classes=cfg.classes if cfg else None,
                                unknown_class=cfg.unknown_class if cfg else "unknown",
                                unknown_score=args.unknown_score)
    print(format_report(report))
    print(f"evaluate: wrote {', '.join(report['outputs'])}")
    if args.decision:
        from pathlib import Path

        from voxtrace.inference.decision import evaluate_scores, read_decision
        from voxtrace.io import atomic_write_json

        decision = read_decision(args.decision)
        figures = evaluate_scores(args.pred, args.labels, decision["classes"], decision["positive"],
                                  decision["threshold"])
        out = Path(args.out) if args.out else Path(args.pred).parent
        atomic_write_json(out / "detection.json", figures)
        print("detection: " + ", ".join(f"{k} {figures[k]:.4f}" for k in
                                         ("eer", "min_dcf", "threshold", "acc", "acc_at_eer_threshold")))
        print(f"evaluate: wrote {out / 'detection.json'}")
    return 0
