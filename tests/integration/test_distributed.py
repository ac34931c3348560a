"""Data parallelism on CPUs (gloo): 2 ranks train to the weights of 1 process, score exactly, and only rank 0 writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import only_run_dir, run_cli
from wiseft_lab import distributed
from wiseft_lab.distributed import World, split_batch
from wiseft_lab.training.job import GlobalBatches
from wiseft_lab.weight_space.fisher import diagonal_fisher
from wiseft_lab.weight_space.learned import LearnedSoupConfig, learned_soup

pytestmark = pytest.mark.slow

SMOKE = ("smoke=tiny", "precision=fp32", "logger=none")


def test_a_global_batch_is_split_into_contiguous_shares():
    batch = list(range(10, 17))  # 7 examples over 3 ranks: 3, 2, 2
    shares = [split_batch(batch, World(rank, 3)) for rank in range(3)]
    assert shares == [[10, 11, 12], [13, 14], [15, 16]]


def test_n_ranks_see_the_single_process_batches():
    single = list(GlobalBatches(23, 8, seed=1, epoch=2, world=World()))
    ranks = [list(GlobalBatches(23, 8, seed=1, epoch=2, world=World(r, 2))) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    assert sorted(i for batch in single for i in batch) == list(range(23))
    tail = [list(GlobalBatches(17, 8, seed=1, epoch=0, world=World(r, 2))) for r in range(2)]
    assert len(tail[0]) == 2  # a last batch of 1 example cannot be split over 2 ranks: dropped under 2 ranks


def _score_uneven(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        n = 7  # not divisible by the world size
        rows = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
        local = rows[list(distributed.shard(n))]
        gathered = distributed.gather_shards(local, n)
        if rank == 0:
            torch.save({"gathered": gathered, "rows": rows}, out)
    finally:
        dist.destroy_process_group()


def test_uneven_sets_are_gathered_exactly_once_in_order(tmp_path):
    out = tmp_path / "gathered.pt"
    mp.spawn(_score_uneven, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    result = torch.load(out)
    assert torch.equal(result["gathered"], result["rows"])


def _held_out_passes() -> dict[str, torch.Tensor]:
    """A learned soup and a Fisher estimate on 7 held-out examples (batches of 4 and 3: uneven over 2 ranks)."""
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(5, 3)
    pool = [{k: torch.randn(v.shape, generator=g) for k, v in net.state_dict().items()} for _ in range(3)]
    x, y = torch.randn(7, 5, generator=g), torch.arange(7) % 3
    learned = learned_soup(net, pool, lambda epoch: [(x[:4], y[:4]), (x[4:], y[4:])],
                           LearnedSoupConfig(epochs=2, streaming=True))
    examples = [(i, x[i]) for i in distributed.shard(len(x))]
    fisher = diagonal_fisher(net, pool[0], examples, seed=3)
    return {"coefficients": learned.coefficients, "beta": torch.tensor(learned.beta),
            **{f"fisher.{k}": v for k, v in fisher.items()}}


def _held_out_on_ranks(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        result = _held_out_passes()
        if rank == 1:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


def test_learned_soup_and_fisher_sharded_over_ranks_equal_one_process(tmp_path):
    out = tmp_path / "rank1.pt"
    mp.spawn(_held_out_on_ranks, args=(2, f"file://{tmp_path / 'rendezvous'}", str(out)), nprocs=2)
    parallel, single = torch.load(out), _held_out_passes()
    assert parallel.keys() == single.keys()
    for key, value in single.items():  # the same sums in another order
        torch.testing.assert_close(parallel[key], value, rtol=1e-5, atol=1e-7, msg=key)
    assert not torch.allclose(single["coefficients"], torch.full_like(single["coefficients"], 1 / 3))  # it learned


def _torchrun(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "wiseft_lab",
            *overrides]
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_ranks_reach_the_single_process_weights_and_scores(tmp_path):
    run_cli(*SMOKE, cwd=tmp_path / "one")
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("wiseft-lab-rank1-*"))
    proc = _torchrun(*SMOKE, cwd=tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = only_run_dir(tmp_path / "one"), only_run_dir(tmp_path / "two")  # rank 1 made no run dir

    def epoch_loss(run: Path) -> float:
        return json.loads((run / "checkpoints/epoch_001/trainer_state.json").read_text())["metrics"]["train/epoch_loss"]
    assert epoch_loss(two) == pytest.approx(epoch_loss(one), rel=1e-6)
    single, parallel = (load_file(run / "checkpoints/finetuned/model.safetensors") for run in (one, two))
    start = load_file(one / "checkpoints/zeroshot/model.safetensors")
    for key, value in single.items():
        moved = (value - start[key]).abs().max()
        # the same steps up to the order of the gradient sums (Adam divides by tiny second moments: ~1e-5 here)
        assert (parallel[key] - value).abs().max() <= max(2e-5, 0.2 * moved), key

    def scores(run: Path, counts: bool) -> list[dict]:
        return [{k: v for k, v in row.items() if "/" in k and (k.endswith("/top1") or k.startswith("n/")) == counts}
                for row in map(json.loads, (run / "results.jsonl").open())]
    assert scores(two, True) == scores(one, True)  # evaluation sharded over the ranks and gathered: the same counts
    for parallel_row, single_row in zip(scores(two, False), scores(one, False), strict=True):  # ECE, NLL, Brier:
        assert parallel_row == pytest.approx(single_row, rel=1e-3, abs=1e-4)  # of weights equal up to ~1e-5
    info = json.loads((two / "run_info.json").read_text())
    assert (info["world_size"], info["backend"], info["devices"]) == (2, "gloo", ["cpu", "cpu"])
    assert "rank 1 of 2 started" in proc.stderr + proc.stdout
    assert set(scratch.glob("wiseft-lab-rank1-*")) == before  # rank 1's scratch directory is gone


def test_a_failing_rank_ends_the_job_with_one_error_record(tmp_path):
    """One truncated training image: the rank whose share holds it fails, the other stops after it, one record."""
    for split in ("train", "test"):
        for name, color in (("a", "red"), ("b", "blue")):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (32, 32), color).save(tmp_path / "data" / split / name / f"{i}.jpg")
    bad = tmp_path / "data/train/b/1.jpg"
    bad.write_bytes(bad.read_bytes()[:200])
    proc = _torchrun(*SMOKE, "data=folder", f"data.dataset.root={tmp_path / 'data'}", "stages=[finetune]",
                     cwd=tmp_path / "run")
    assert proc.returncode != 0
    run = only_run_dir(tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").rglob("error*.log")] == ["error.log"]
    first = (run / "error.log").read_text().splitlines()[0]
    assert re.fullmatch(rf"rank [01] of 2: CorruptImageError: {re.escape(str(bad))}: cannot be decoded .*", first)
    assert json.loads((run / "job.json").read_text())["reason"] == first  # not the other rank's closed connection
    assert not (run / "run.lock").exists()


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: the ranks a launcher started)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _lower_priority() -> None:
    """The run yields the CPU to the watching test, which must see a mid-epoch checkpoint before the epoch ends."""
    os.nice(19)


def _kill_mid_training(cwd: Path, overrides: tuple[str, ...], min_step: int) -> Path:
    """Start a run, SIGKILL it once a mid-epoch checkpoint of at least ``min_step`` exists; its run dir."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "wiseft_lab", *overrides], cwd=cwd, env=env,
                            preexec_fn=_lower_priority, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [int(p.parent.name[5:]) for p in cwd.glob("outputs/*/runs/*/checkpoints/step_*/trainer_state.json")]
            if steps and max(steps) >= min_step:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed mid-epoch"
    return only_run_dir(cwd)


LONGER = (*SMOKE, "data.dataset.n_per_class=12", "finetune.epochs=2", "finetune.checkpoint_every_steps=2",
          "stages=[finetune]")  # 15 steps per epoch


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    """The fine-tuned weights of the LONGER run, never interrupted."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    run_cli(*LONGER, cwd=cwd)
    return load_file(only_run_dir(cwd) / "checkpoints/finetuned/model.safetensors")


def test_kill_9_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted):
    killed = _kill_mid_training(tmp_path / "killed", LONGER, min_step=4)
    assert not (killed / "checkpoints/finetuned").exists()
    proc = run_cli(*LONGER, "resume=true", f"hydra.run.dir={killed}", cwd=tmp_path / "killed")
    assert re.search(r"Resumed from \S+/step_\d+ \(epoch 1, batch \d+", proc.stdout + proc.stderr)
    resumed = load_file(killed / "checkpoints/finetuned/model.safetensors")
    assert all(torch.equal(uninterrupted[key], resumed[key]) for key in uninterrupted)


def test_a_preempted_submitit_job_checkpoints_requeues_and_continues(tmp_path, uninterrupted):
    """Submitit's pre-emption signal (USR2) mid-epoch, on its local executor: a checkpoint at the next step, the job
    requeued by submitit into its own dir, and the requeued job continuing there to the uninterrupted weights."""
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}  # the threads of the uninterrupted run
    proc = subprocess.Popen([sys.executable, "-m", "wiseft_lab", "-m", "hydra/launcher=submitit_local", *LONGER],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    signalled = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.parent.name[5:]) for p in tmp_path.glob("outputs/multirun/*/*/0/checkpoints/step_*/"
                                                               "trainer_state.json")]
        if not signalled and steps:  # any step before the last: the job is in training
            tasks = [pid for pid in _descendants(proc.pid)
                     if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
            for pid in tasks:
                os.kill(pid, signal.SIGUSR2)
            signalled = bool(tasks)
        time.sleep(0.01)
    assert proc.wait(timeout=60) == 0 and signalled
    job = next(tmp_path.glob("outputs/multirun/*/*/0"))
    log = (job / "wiseft_lab.log").read_text()
    assert re.search(r"Stopped at step \d+ \(pre-empted\)", log) and "was pre-empted (job.json)" in log
    assert re.search(r"Resumed from \S+/step_\d+ \(epoch 1, batch \d+", log)
    assert json.loads((job / "job.json").read_text())["status"] == "completed"
    assert not (job / "error.log").exists()  # the pre-empted attempt's record went with its success
    resumed = load_file(job / "checkpoints/finetuned/model.safetensors")
    assert all(torch.equal(uninterrupted[key], resumed[key]) for key in uninterrupted)


def test_two_ranks_killed_mid_epoch_resume_to_the_single_process_weights(tmp_path):
    longer = (*SMOKE, "data.dataset.n_per_class=40", "finetune.epochs=2", "finetune.checkpoint_every_steps=2",
              "stages=[finetune]")  # 50 steps per epoch
    run_cli(*longer, cwd=tmp_path / "single")
    cwd = tmp_path / "killed"
    cwd.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                "wiseft_lab"]
    proc = subprocess.Popen([*launcher, *longer], cwd=cwd, env=env, preexec_fn=_lower_priority,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.parent.name[5:]) for p in cwd.glob("outputs/*/runs/*/checkpoints/step_*/trainer_state.json")]
        if steps and max(steps) >= 4:
            for pid in [*_descendants(proc.pid), proc.pid]:  # both ranks (torchrun puts them in sessions of their
                os.kill(pid, signal.SIGKILL)                 # own), then the launcher
            break
        time.sleep(0.01)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the job ended before it could be killed mid-epoch"
    killed = only_run_dir(cwd)
    resumed = _torchrun(*longer, "resume=true", f"hydra.run.dir={killed}", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert re.search(r"Resumed from \S+/step_\d+ \(epoch \d, batch \d+", resumed.stdout + resumed.stderr)
    single = load_file(only_run_dir(tmp_path / "single") / "checkpoints/finetuned/model.safetensors")
    parallel = load_file(killed / "checkpoints/finetuned/model.safetensors")
    start = load_file(killed / "checkpoints/zeroshot/model.safetensors")
    for key, value in single.items():
        assert (parallel[key] - value).abs().max() <= max(2e-5, 0.2 * (value - start[key]).abs().max()), key


def test_slurm_tasks_become_ranks_through_submitit(tmp_path):
    """The Slurm path, run here by submitit's local executor: each task of a job is one rank (submitit's helper)."""
    run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *SMOKE, cwd=tmp_path,
            env={"OMP_NUM_THREADS": "1"})
    jobs = list(tmp_path.glob("outputs/multirun/*/*/0/run_info.json"))
    assert len(jobs) == 1
    info = json.loads(jobs[0].read_text())
    assert (info["world_size"], info["devices"]) == (2, ["cpu", "cpu"])
    assert (jobs[0].parent / "results.jsonl").is_file()
