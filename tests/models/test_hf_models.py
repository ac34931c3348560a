"""Architectures whose tokenizer comes from the HF hub (SigLIP-style), with a tiny random model and a local tokenizer.

Needs the optional extra wiseft-lab[hf] (transformers); skipped without it. Nothing is downloaded: the tokenizer is
built here with the ``tokenizers`` library and saved like ``save_pretrained`` does.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import open_clip
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.hf_fakes import fill_hf_cache
from wiseft_lab import CheckpointMeta, ImageClassifier, build_zeroshot_head, create_clip, save_checkpoint
from wiseft_lab.io import read_json
from wiseft_lab.models.hub import HubFilesUnavailableError
from wiseft_lab.models.interop import export_open_clip
from wiseft_lab.models.text_head import build_text_head
from wiseft_lab.models.tokenizers import TokenizerUnavailableError

pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

ARCH = "wiseft-test-siglip"
HUB_NAME = "wiseft-lab-test/tiny-siglip"  # never on the hub: only the local directory or the cache can serve it
WORDS = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "the", "cat", "dog", "bird"]
CLASSES = ["cat", "dog", "bird"]
TEMPLATE = "a photo of the {}."
# SigLIP's shape (open_clip model_configs/ViT-B-16-SigLIP.json) at toy size: a custom text tower without causal mask,
# last-token pooling, a projection bias, an HF tokenizer and init_logit_bias -10 (log(10) logit scale).
TINY_SIGLIP = {
    "embed_dim": 32,
    "init_logit_bias": -10,
    "init_logit_scale": 2.302585092994046,
    "custom_text": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": len(WORDS), "hf_tokenizer_name": HUB_NAME,
                 "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32, "heads": 2, "layers": 2,
                 "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A word-level tokenizer that appends ``</s>`` (as SigLIP's T5 tokenizer does), saved with save_pretrained."""
    from transformers import PreTrainedTokenizerFast

    model = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    model.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    directory = tmp_path_factory.mktemp("tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def arch(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("arch") / f"{ARCH}.json"
    path.write_text(json.dumps(TINY_SIGLIP))
    open_clip.add_model_config(path)
    return ARCH


def test_siglip_head_starts_from_logit_bias_and_gives_the_models_logits(arch, tokenizer_dir):
    torch.manual_seed(0)
    bundle = create_clip(arch, None, tokenizer=str(tokenizer_dir))
    model = bundle.model.eval()
    assert isinstance(model, open_clip.CustomTextCLIP)
    # canonicalize (the arch's tokenizer_kwargs) lower-cases and drops punctuation; ids by hand from WORDS
    assert bundle.tokenizer(["A Photo of the CAT."])[0].tolist() == [3, 4, 5, 6, 7, 1] + [0] * 10

    head = build_zeroshot_head(model, bundle.tokenizer, CLASSES, [TEMPLATE])
    assert torch.equal(head.bias, torch.full((3,), -10.0))  # init_logit_bias, for every class
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # open_clip's own SigLIP logits: logit_scale.exp() * cos(image, text) + logit_bias
        expected, _ = model.get_logits(images, bundle.tokenizer([TEMPLATE.format(c) for c in CLASSES]))
        logits = head(model.encode_image(images))
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert torch.equal(build_text_head(model, bundle.tokenizer, CLASSES, [TEMPLATE]).bias, head.bias)


def test_offline_the_tokenizer_comes_from_the_hf_cache_or_fails_at_once(arch, tokenizer_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(TokenizerUnavailableError, match=r"HF_HUB_OFFLINE is set.*model\.tokenizer=/path/to"):
        create_clip(arch, cache_dir=str(tmp_path / "empty"))
    assert time.monotonic() - started < 5

    # SigLIP hub repos hold open_clip_config.json but no config.json, which transformers looks for
    fill_hf_cache(tmp_path / "cache", HUB_NAME, sorted(tokenizer_dir.iterdir()), absent=("config.json",))
    cached = create_clip(arch, cache_dir=str(tmp_path / "cache")).tokenizer
    local = create_clip(arch, tokenizer=str(tokenizer_dir)).tokenizer
    prompts = [TEMPLATE.format(c) for c in CLASSES]
    assert torch.equal(cached(prompts), local(prompts))


def test_a_siglip_export_carries_its_tokenizer_and_logit_bias(arch, tokenizer_dir, tmp_path):
    bundle = create_clip(arch, None, tokenizer=str(tokenizer_dir))
    clip = copy.deepcopy(bundle.model)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "zeroshot.safetensors")
    model = ImageClassifier(clip, build_zeroshot_head(clip, bundle.tokenizer, CLASSES, [TEMPLATE])).eval()
    save_checkpoint(tmp_path / "ckpt", model, CheckpointMeta(
        arch=arch, pretrained=str(tmp_path / "zeroshot.safetensors"), keep_text=False, classnames=CLASSES,
        templates=[TEMPLATE], preprocess=dict(clip.visual.preprocess_cfg)))
    files = export_open_clip(tmp_path / "ckpt", tmp_path / "out", tokenizer=str(tokenizer_dir))
    info = read_json(files["head_meta"])
    assert info["logit_bias"] == -10.0 and info["tokenizer_included"] is True

    loaded, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'out'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'out'}")
    prompts = [TEMPLATE.format(c) for c in CLASSES]
    assert torch.equal(tokenizer(prompts), bundle.tokenizer(prompts))
    head = load_file(files["head"])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = loaded.eval().encode_image(images)
        logits = torch.nn.functional.linear(features / features.norm(dim=-1, keepdim=True), head["weight"],
                                            head["bias"])
        assert torch.equal(logits, model(images))
        open_clip_logits, _ = loaded.get_logits(images, tokenizer(prompts))  # plain open_clip, text tower restored
    torch.testing.assert_close(logits, open_clip_logits, rtol=0, atol=1e-5)


def test_an_hf_text_tower_offline_fails_at_once_naming_the_cache(monkeypatch):
    if isinstance(huggingface_hub.try_to_load_from_cache("roberta-base", "config.json"), str):
        pytest.skip("roberta-base is in this machine's HF cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(TokenizerUnavailableError, match=r"tokenizer 'roberta-base'.*model\.tokenizer="):
        create_clip("roberta-ViT-B-32")  # the tokenizer is resolved first: it is cheap
    with pytest.raises(HubFilesUnavailableError, match=r"text tower from the Hugging Face model 'roberta-base'"):
        create_clip("roberta-ViT-B-32", load_tokenizer=False)
    assert time.monotonic() - started < 5
