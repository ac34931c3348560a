"""Reporting: result tables, plots, experiment loggers, run metadata."""
