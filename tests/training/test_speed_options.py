"""Speed options change how training runs, not what it computes: channels_last, torch.compile, fused optimisers,
and SyncBatchNorm for the BatchNorm layers that train under several ranks."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf
from open_clip.modified_resnet import ModifiedResNet
from torch import nn
from torch.utils.data import TensorDataset

from wiseft_lab.cli import config_dir
from wiseft_lab.distributed import World
from wiseft_lab.pipeline.finetune import optimizer_factory
from wiseft_lab.training.job import epoch_loader, synchronise_batch_norms
from wiseft_lab.training.loop import LoopConfig, Trainer
from wiseft_lab.training.losses import cross_entropy_loss
from wiseft_lab.training.schedules import WarmupCosine

IMAGES = TensorDataset(torch.randn(24, 3, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(24) % 3)


def _train(tmp: Path, **options) -> tuple[nn.Module, Trainer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    trainer = Trainer(model, model.parameters(), functools.partial(torch.optim.AdamW, lr=0.01),
                      functools.partial(WarmupCosine, warmup_steps=1), cross_entropy_loss(0.0),
                      LoopConfig(epochs=2, seed=3, **options), tmp, lambda directory, meta: None)
    loader = epoch_loader(IMAGES, batch_size=8, num_workers=0, seed=3)
    trainer.fit(loader, len(loader(0)))
    return model, trainer


def test_channels_last_and_compile_train_to_the_same_weights(tmp_path):
    plain, _ = _train(tmp_path / "plain")
    fast, trainer = _train(tmp_path / "fast", channels_last=True, compile=True, compile_options={"backend": "eager"})
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(trainer.forward_model, torch._dynamo.eval_frame.OptimizedModule)
    assert fast.state_dict().keys() == plain.state_dict().keys()  # the model itself is not the compiled wrapper
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_fused_auto_is_the_fused_kernel_on_cuda_and_the_default_elsewhere():
    cfg = OmegaConf.load(Path(config_dir()) / "optimizer" / "adamw.yaml")
    params = [nn.Parameter(torch.zeros(3))]
    assert optimizer_factory(cfg, torch.device("cpu"))(params).defaults["fused"] is None
    assert optimizer_factory(cfg, torch.device("cuda"))(params).defaults["fused"] is True
    assert optimizer_factory(OmegaConf.merge(cfg, {"fused": False}), torch.device("cuda"))(params).defaults["fused"] \
        is False


def _resnet_with_a_frozen_stem() -> ModifiedResNet:
    torch.manual_seed(0)
    tower = ModifiedResNet(layers=[1, 1, 1, 1], output_dim=8, heads=2, image_size=32, width=8)
    for p in tower.bn1.parameters():
        p.requires_grad_(False)
    return tower


def test_batch_norms_that_train_are_synchronised_across_gpu_ranks():
    tower = _resnet_with_a_frozen_stem()
    norms = [name for name, m in tower.named_modules() if isinstance(m, nn.BatchNorm2d)]
    before = tower.state_dict(keep_vars=True)
    replaced = synchronise_batch_norms(tower, torch.device("cuda"), World(rank=0, size=2, backend="nccl"))
    synced = {name for name, m in tower.named_modules() if isinstance(m, nn.SyncBatchNorm)}
    assert replaced == len(norms) - 1 and synced == set(norms) - {"bn1"}  # the frozen stem keeps its statistics
    after = tower.state_dict(keep_vars=True)
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)  # the very tensors
    tower.eval()
    with torch.no_grad():  # in eval mode a SyncBatchNorm is the BatchNorm it replaced
        reference = _resnet_with_a_frozen_stem().eval()
        images = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(tower(images), reference(images))


def test_batch_norms_stay_per_rank_on_cpus_and_in_one_process(caplog):
    tower = _resnet_with_a_frozen_stem()
    assert synchronise_batch_norms(tower, torch.device("cuda"), World()) == 0
    with caplog.at_level(logging.WARNING):
        assert synchronise_batch_norms(tower, torch.device("cpu"), World(rank=0, size=2, backend="gloo")) == 0
    assert "SyncBatchNorm needs GPUs" in caplog.text
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in tower.modules())
