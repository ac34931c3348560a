"""Evaluation: metrics and suites of reference + shifted test sets."""
