"""Read the records of a W&B ``.wandb`` file (its LevelDB-style log of protobuf ``Record``s) for tests.

wandb >= 0.19 no longer ships a Python reader; the format is stable: a 7-byte file header, then 32 KiB
blocks of chunks, each ``<crc32:4><length:2><type:1>`` + payload (FULL=1, FIRST=2, MIDDLE=3, LAST=4).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7


def records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a .wandb file"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def history_rows(path: str | Path) -> list[dict]:
    """Every ``run.log`` call as a dict of decoded values."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows


def run_info(path: str | Path) -> dict:
    """The run record: id, group, project, job type, name, tags and the config (decoded)."""
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"id": run.run_id, "group": run.run_group, "project": run.project, "job_type": run.job_type,
                    "name": run.display_name, "tags": list(run.tags),
                    "config": {item.key: json.loads(item.value_json) for item in run.config.update}}
    raise AssertionError(f"no run record in {path}")


def artifacts(path: str | Path) -> list[dict]:
    """Every logged artifact: name, type, aliases."""
    return [{"name": r.artifact.name, "type": r.artifact.type, "aliases": list(r.artifact.aliases)}
            for r in records(path) if r.WhichOneof("record_type") == "artifact"]


def step_metrics(path: str | Path) -> dict[str, str]:
    """``define_metric`` globs and names with their step metric."""
    return {r.metric.glob_name or r.metric.name: r.metric.step_metric
            for r in records(path) if r.WhichOneof("record_type") == "metric" and r.metric.step_metric}


def exit_code(path: str | Path) -> int | None:
    """The exit code the run was finished with (``run.finish(exit_code=...)``), None if it never finished."""
    for record in records(path):
        if record.WhichOneof("record_type") == "exit":
            return record.exit.exit_code
    return None
