"""Evaluation: metrics (accuracy, macro P/R/F1, ROC AUC, EER), reports and plots."""
