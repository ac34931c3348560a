"""Every ``wiseft-lab`` command of the README's shell blocks runs, at smoke size, so the README never holds a command
that fails.

The commands run in the order the README gives them, in one process (``python -m
tests.integration.test_readme_commands <dir>``: imports and decoded eval sets are shared), each changed only so that
it runs here in seconds:

- ``smoke=tiny`` is appended (the shrink group: tiny random model, generated images, one epoch), and the command's own
  ``model=`` / ``model.pretrained=`` are dropped (the smoke model replaces the real weights of ``/models/...``);
  a command that brings its own data (``data=folder``) keeps it and gets the tiny model and one epoch instead
  (``smoke=tiny`` sizes the synthetic data: ``data.dataset.n_per_class`` is no option of a folder), and a command
  on the synthetic data loses its own ``data.dataset.n_per_class=`` (the demo-size analyses: smoke size here);
- a multirun's grid is cut to one seed on the synthetic data (``seed=0 data=synthetic`` appended);
- a Slurm launch runs on submitit's local executor, as two tasks (two ranks) on this machine;
- placeholders take the outputs of the commands before: ``<time>`` the newest directory of that path holding the
  rest of the path, ``<run>`` the newest run with both checkpoints; ``/data/...`` generated image folders (the
  synthetic classes), ``/logs/my_run/checkpoints/epoch_10.pt`` and ``/models/...safetensors`` open_clip files
  of the smoke model (a training checkpoint with ``module.`` prefixes, a plain state dict).

``wiseft-lab-report`` commands are not run: they need the paper's data sets to fill a paper's table.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
PROGRAM = "wiseft-lab"
SMOKE = ["smoke=tiny"]
OWN_DATA = ["model=tiny_random", "finetune.epochs=1", "finetune.batch_size=4", "data.num_workers=0",
            "eval.num_workers=0"]
GRID = ["seed=0", "data=synthetic"]
REAL_MODEL = ("model=", "model.pretrained=")
DEMO_SIZE = "data.dataset.n_per_class="
SLURM = "hydra/launcher=submitit_slurm"
LOCAL_TASKS = ["hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2"]


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``wiseft-lab`` commands in the text's ```bash blocks (continuations joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == PROGRAM:
                commands.append(words[1:])
    return commands


def _newest(cwd: Path, pattern: str, need: tuple[str, ...] = ()) -> str:
    found = sorted(p for p in cwd.glob(pattern) if p.is_dir() and all((p / n).exists() for n in need))
    if not found:
        raise AssertionError(f"no {pattern} (with {need}) under {cwd} for a README placeholder")
    return str(found[-1].relative_to(cwd))


def _newest_holding(cwd: Path, prefix: str, rest: str) -> str:
    """``<prefix><time><rest>`` with the newest time whose directory holds ``rest``."""
    need = (rest.lstrip("/"),) if rest.strip("/") else ()
    return _newest(cwd, prefix + "*", need) + rest


def smoke_arguments(words: list[str], cwd: Path, my_task: Path, files: dict[str, Path] | None = None) -> list[str]:
    """A README command's arguments as this test runs them (see the module docstring)."""
    out = []
    slurm = SLURM in words
    own_data = any(w.startswith("data=") and w != "data=synthetic" for w in words)
    for word in words:
        if word.startswith(REAL_MODEL) or (slurm and (word == SLURM or word.startswith("hydra.launcher."))) \
                or (not own_data and word.startswith(DEMO_SIZE)):
            continue
        word = re.sub(r"([\w./-]*)<time>([\w./-]*)", lambda m: _newest_holding(cwd, m.group(1), m.group(2)), word)
        for placeholder, path in (files or {}).items():
            word = word.replace(placeholder, str(path))
        if "<run>" in word:
            word = word.replace("<run>", _newest(cwd, "outputs/*/runs/*", ("checkpoints/zeroshot",
                                                                              "checkpoints/finetuned")))
        out.append(word.replace("/data/my_task", str(my_task)))
    return [*out, *(LOCAL_TASKS if slurm else []), *(OWN_DATA if own_data else SMOKE),
            *(GRID if "-m" in words else [])]


def image_folder(root: Path) -> Path:
    from PIL import Image

    for split, count in (("train", 4), ("test", 2)):
        for colour in ("red", "blue"):
            folder = root / split / f"{colour}_thing"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.new("RGB", (32, 32), colour).save(folder / f"{i}.png")
    return root


def shift_folder(root: Path) -> Path:
    """One image per synthetic class, in class folders named as the classes: a shift set for ``eval.shifts``."""
    from PIL import Image

    from wiseft_lab.data.synthetic import CLASSNAMES

    for index, name in enumerate(CLASSNAMES):
        folder = root / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (25 * index, 100, 200)).save(folder / "0.png")
    return root


def open_clip_files(root: Path) -> dict[str, Path]:
    """The smoke model as open_clip writes it: a training checkpoint (``module.`` prefixes) and a state dict."""
    import torch
    from safetensors.torch import save_file

    from wiseft_lab.models.factory import create_clip

    state = create_clip("wiseft-tiny-vit", pretrained=None).model.state_dict()
    training = root / "logs/my_run/checkpoints/epoch_10.pt"
    training.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in state.items()}}, training)
    plain = root / "models/ViT-B-32-openai.safetensors"
    plain.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, plain)
    return {"/logs/my_run": root / "logs/my_run", "/models/ViT-B-32-openai.safetensors": plain,
            "/data/sketch": shift_folder(root / "sketch"), "/data/night": shift_folder(root / "night")}


def drive(cwd: Path) -> list[dict]:
    """Run every README command in this process (as ``wiseft-lab`` would); one record per command."""
    import os

    from wiseft_lab import cli

    os.chdir(cwd)
    my_task = image_folder(cwd / "my_task")
    files = open_clip_files(cwd / "files")
    records = []
    for words in readme_commands(README.read_text()):
        args = smoke_arguments(words, cwd, my_task, files)
        sys.argv = [PROGRAM, *args]
        start = time.time()
        try:
            cli.main()
            code = 0
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except Exception as err:  # noqa: BLE001 - reported per command
            code = f"{type(err).__name__}: {err}"
        records.append({"readme": f"{PROGRAM} {shlex.join(words)}", "ran": shlex.join(args), "exit": code,
                        "seconds": round(time.time() - start, 1)})
        print("README-COMMAND " + json.dumps(records[-1]), flush=True)
    return records


def test_readme_commands_are_found():
    commands = readme_commands(README.read_text())
    assert ["-m", "experiment=soups", "stages=[finetune]", "hydra/launcher=joblib"] in commands
    assert len(commands) >= 10


def test_smoke_arguments_resolve_placeholders(tmp_path):
    for name in ("2026-01-01_00-00-00", "2026-01-02_00-00-00"):
        (tmp_path / "outputs/multirun/soups" / name).mkdir(parents=True)
    args = smoke_arguments(["-m", "model=vit_b_32", "model.pretrained=/models/x.pt", "merge.pool=outputs/multirun/"
                            "soups/<time>", "data.dataset.root=/data/my_task", "data.dataset.n_per_class=100"],
                           tmp_path, Path("/tmp/folder"))
    assert args == ["-m", "merge.pool=outputs/multirun/soups/2026-01-02_00-00-00", "data.dataset.root=/tmp/folder",
                    "smoke=tiny", "seed=0", "data=synthetic"]


@pytest.mark.slow
def test_every_readme_command_runs_at_smoke_size(tmp_path):
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    import os

    proc = subprocess.run([sys.executable, "-m", "tests.integration.test_readme_commands", str(tmp_path)],
                          cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=900)
    records = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
               if line.startswith("README-COMMAND ")]
    assert len(records) == len(readme_commands(README.read_text())), proc.stderr[-4000:]
    failed = [r for r in records if r["exit"] != 0]
    assert not failed, "README commands that fail:\n" + "\n".join(
        f"{r['readme']}\n  ran as: wiseft-lab {r['ran']}\n  exit: {r['exit']}" for r in failed) + proc.stderr[-4000:]


if __name__ == "__main__":
    drive(Path(sys.argv[1]).resolve())
