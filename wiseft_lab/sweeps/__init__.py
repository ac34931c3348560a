"""Multiruns: each job's record (jobs.py), the sweep summary (summary.py), the Hydra callback (callback.py)."""
