"""`voxtrace evaluate`: score a prediction CSV against labels (accuracy, macro P/R/F1, ROC AUC, EER for the
detect task, open-set figures for the unknown class, per-class, per-channel-family and per-voice tables,
confusion matrix PNG, report.json and report.md)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--pred", required=True, help="prediction CSV from `voxtrace predict` (--probs for AUC/EER)")
    parser.add_argument("--labels", required=True,
                        help="CSV with `track` and one of algorithm, label, class_id, class, class_name")
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


def run(args) -> int:
    from voxtrace.config import Config
    from voxtrace.evaluation.reports import evaluate_files, format_report

    cfg = Config.load(args.cfg) if args.cfg else None
    report = evaluate_files(args.pred, args.labels, metadata=args.metadata, out_dir=args.out,
                            classes=cfg.classes if cfg else None,
                            unknown_class=cfg.unknown_class if cfg else "unknown",
                            unknown_score=args.unknown_score)
    print(format_report(report))
    print(f"evaluate: wrote {', '.join(report['outputs'])}")
    return 0
