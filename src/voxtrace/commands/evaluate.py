"""`voxtrace evaluate`: score a prediction CSV against labels (accuracy, macro P/R/F1, ROC AUC, EER for the
detect task, per-class and per-perturbation tables, confusion matrix PNG)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("--pred", required=True, help="prediction CSV from `voxtrace predict` (--probs for AUC/EER)")
    parser.add_argument("--labels", required=True,
                        help="CSV with `track` and one of algorithm, label, class_id, class, class_name")
    parser.add_argument("--metadata", default=None,
                        help="CSV with `track` and `perturbations` for a per-perturbation breakdown")
    parser.add_argument("--out", default=None, help="report folder (default: beside the prediction CSV)")
    parser.add_argument("--cfg", default=None,
                        help="YAML naming the class list (default: the prediction's probability columns)")


def run(args) -> int:
    from voxtrace.config import Config
    from voxtrace.evaluation.reports import evaluate_files, format_report

    classes = Config.load(args.cfg).classes if args.cfg else None
    report = evaluate_files(args.pred, args.labels, metadata=args.metadata, out_dir=args.out, classes=classes)
    print(format_report(report))
    print(f"evaluate: wrote {', '.join(report['outputs'])}")
    return 0
