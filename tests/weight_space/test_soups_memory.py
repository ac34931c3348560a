"""Soups over many ingredients hold a few models in memory, not the pool (peak RSS in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from tests.conftest import ROOT
from wiseft_lab.io import write_safetensors

N_INGREDIENTS = 24
WIDTH = 256  # twelve 256x256 linear layers: 3.2 MB per ingredient, 76 MB for the pool

CHILD = textwrap.dedent("""
    import json, sys, torch
    from pathlib import Path
    from torch import nn
    from wiseft_lab.weight_space.learned import LearnedSoupConfig, learned_soup
    from wiseft_lab.weight_space.ingredients import load_all
    from wiseft_lab.weight_space.soups import greedy_soup, uniform_soup

    def rss_kb(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1])

    def peak_growth(fn):
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
        before = rss_kb("VmRSS:")
        out = fn()
        return (rss_kb("VmHWM:") - before) * 1024, out

    def make_net(width):
        return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(12)],
                             nn.Linear(width, 4))

    torch.set_num_threads(1)
    paths = sorted(Path(sys.argv[1]).glob("*.safetensors"))
    width = int(sys.argv[2])
    net = make_net(width).eval()
    x, y = torch.randn(8, width), torch.randint(0, 4, (8,))
    score = lambda state: float(state["0.0.bias"].mean())  # costs no memory: measures the soup itself
    held = [0.5 + 0.01 * i for i in range(len(paths))]
    config = lambda streaming: LearnedSoupConfig(epochs=1, per_layer=True, streaming=streaming)
    uniform_soup(paths[:2]); greedy_soup(paths[:2], held[:2], score)  # warm up allocator and imports
    learned_soup(net, paths[:2], lambda e: [(x, y)], config(True))
    result = {}
    result["uniform"] = peak_growth(lambda: uniform_soup(paths))[0]
    result["uniform_fp64"] = peak_growth(lambda: uniform_soup(paths, accumulate="fp64"))[0]
    result["greedy"] = peak_growth(lambda: greedy_soup(paths, held, score))[0]
    result["learned_streaming"] = peak_growth(lambda: learned_soup(net, paths, lambda e: [(x, y)], config(True)))[0]
    result["load_all"] = peak_growth(lambda: [load_all(p) for p in paths])[0]
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def peaks(tmp_path_factory) -> dict[str, float]:
    root = tmp_path_factory.mktemp("pool")
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.ReLU()) for _ in range(12)], nn.Linear(WIDTH, 4))
    model_bytes = 0
    for i in range(N_INGREDIENTS):
        state = {k: v + 0.01 * i for k, v in net.state_dict().items()}
        model_bytes = sum(v.numel() * v.element_size() for v in state.values())
        write_safetensors(root / f"ingredient_{i:02d}.safetensors", state)
    # Large allocations straight from mmap, so that freed memory leaves the RSS and peaks measure live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(WIDTH)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: v / model_bytes for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def test_measurement_sees_a_pool_held_in_memory(peaks):
    assert peaks["load_all"] > 0.8 * N_INGREDIENTS, peaks


@pytest.mark.parametrize(("soup", "models"), [("uniform", 2), ("uniform_fp64", 3), ("greedy", 3),
                                              ("learned_streaming", 3.5)])
def test_peak_memory_is_a_few_models_whatever_the_pool(peaks, soup, models):
    # uniform: accumulator + the ingredient being read (mapped); fp64: a double-size accumulator; greedy: soup +
    # candidate + the ingredient being read; learned: theta + its gradient + the ingredient being read.
    assert peaks[soup] <= models, (soup, peaks)
