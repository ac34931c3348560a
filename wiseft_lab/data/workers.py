"""The start method of DataLoader worker processes, wherever the job runs.

joblib's loky workers (``hydra/launcher=joblib``) make ``loky`` the process's default start method; torch's
DataLoader workers cannot start from it (``'Process' object has no attribute 'env'``), and ``spawn`` /
``forkserver`` children fail too, since they inherit ``loky`` as their start method. ``fork`` works, and is what
the workers use in an ordinary Linux process anyway.
"""

from __future__ import annotations

import multiprocessing


def worker_context(num_workers: int) -> str | None:
    """``multiprocessing_context`` for a DataLoader: None (the process's own) unless the process runs under a start
    method of a library (loky); then ``fork`` where the platform has it, else ``spawn``."""
    if num_workers <= 0:
        return None
    method = multiprocessing.get_start_method(allow_none=True)
    if method is None or method in multiprocessing.get_all_start_methods():
        return None
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
