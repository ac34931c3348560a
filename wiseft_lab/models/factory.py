"""Create open_clip models by name: registered custom architectures, pretrained tags or local checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import zipfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME as OPEN_CLIP_WEIGHTS

from wiseft_lab.errors import UserFacingError
from wiseft_lab.models.hub import HubAccess, HubFilesUnavailableError, hub_offline_mode, pretrained_download
from wiseft_lab.models.tokenizers import create_tokenizer, require_transformers, text_config

log = logging.getLogger(__name__)

ARCH_DIR = Path(__file__).parent / "arch"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
DEMO_CHECKPOINT = ASSETS_DIR / "demo_clip.safetensors"


class WeightsUnavailableError(UserFacingError, RuntimeError):
    """Pretrained weights could not be fetched (offline, or an unknown tag); the message shows the local-file way."""


def weights_unavailable(weights: str, arch: str, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"Could not fetch pretrained weights {weights!r} for {arch!r} ({reason}). Download them where you have a "
        f"connection and pass the local file, e.g. model.pretrained=/path/to/open_clip_model.safetensors; tags "
        f"known for this architecture: {open_clip.list_pretrained_tags_by_model(arch)}")


@dataclass
class ClipBundle:
    """An open_clip model together with what is needed to feed it."""

    model: torch.nn.Module
    preprocess_train: Callable
    preprocess_val: Callable
    tokenizer: Callable | None  # None when created with load_tokenizer=False
    arch: str
    pretrained: str | None


class _QuietRandomInit(logging.Filter):
    """Drop open_clip's "initialized randomly" warning when random weights are what was asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@cache
def register_architectures() -> None:
    """Make the architecture JSONs shipped with the package known to open_clip (idempotent)."""
    open_clip.add_model_config(ARCH_DIR)


def resolve_pretrained(pretrained: str | None) -> str | None:
    """Map the config value to what open_clip expects: None, a tag, or an existing local path.

    `demo` names the embedded demo checkpoint; `none`/`random`/empty mean random weights. A directory holding
    ``open_clip_model.safetensors`` (a ``wiseft-lab-export`` directory, an open_clip HF snapshot) means that file.
    """
    if pretrained is None or str(pretrained).lower() in {"", "none", "null", "random"}:
        return None
    if pretrained == "demo":
        return str(DEMO_CHECKPOINT)
    path = Path(str(pretrained)).expanduser()
    if path.is_dir():
        if (path / OPEN_CLIP_WEIGHTS).is_file():
            return str(path / OPEN_CLIP_WEIGHTS)
        raise FileNotFoundError(
            f"model.pretrained={pretrained!r} is a directory without {OPEN_CLIP_WEIGHTS}: pass a weights file or an "
            f"open_clip tag (a wiseft-lab checkpoint directory goes to checkpoints.zeroshot / checkpoints.finetuned).")
    if path.exists():
        return str(path)
    looks_like_path = any(sep in str(pretrained) for sep in ("/", "\\")) or path.suffix in {
        ".pt", ".pth", ".bin", ".safetensors"}
    if looks_like_path:
        raise FileNotFoundError(f"model.pretrained={pretrained!r} looks like a file path but does not exist.")
    return str(pretrained)


def is_torchscript(path: str) -> bool:
    """OpenAI's own ``ViT-B-32.pt``-style downloads are TorchScript archives (a zip holding ``constants.pkl``)."""
    if not Path(path).is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def load_torchscript_weights(model: torch.nn.Module, path: str, arch: str) -> None:
    """Load a TorchScript CLIP (OpenAI's release format, which ``torch.load(weights_only=True)`` refuses) strictly."""
    state = torch.jit.load(path, map_location="cpu").state_dict()
    non_persistent = {name for name, _ in model.named_buffers()} - set(model.state_dict())  # e.g. attn_mask
    for extra in ("input_resolution", "context_length", "vocab_size", *non_persistent):  # not weights
        state.pop(extra, None)
    model.load_state_dict(state)
    if "quickgelu" not in arch.lower() and not open_clip.get_model_config(arch).get("quick_gelu", False):
        log.warning("%s is a TorchScript (OpenAI) checkpoint: OpenAI trained CLIP with QuickGELU, but %s uses GELU; "
                    "use the architecture %s-quickgelu for the published behaviour.", path, arch, arch)


def hub_must_be_offline(arch: str, weights: str | None, cache_dir: str | None, hub: HubAccess) -> bool:
    """Whether open_clip must run with the HF hub offline (it cannot be reached, but what it needs is cached).

    Weights of a tag that are neither reachable nor cached fail here at once, instead of after huggingface_hub's
    retries (see :mod:`wiseft_lab.models.hub`).
    """
    if weights is not None and not Path(weights).exists():
        download = pretrained_download(arch, weights, cache_dir)
        if download is not None and not hub.reachable(download.url):
            if not download.cached:
                raise weights_unavailable(
                    weights, arch, f"{hub.unreachable_reason(download.url)} and they are not in the local cache")
            return True
    return bool(text_config(arch).get("hf_model_name")) and not hub.reachable()  # its config comes from the hub


def create_clip(
    arch: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    cache_dir: str | None = None,
    tokenizer: str | None = None,
    load_tokenizer: bool = True,
) -> ClipBundle:
    """Build an open_clip model and its train/val transforms and tokenizer.

    ``tokenizer``: a local directory holding the HF tokenizer of architectures whose tokenizer comes from the
    hub (SigLIP, NLLB-CLIP, ...); ``load_tokenizer=False`` builds the model only (e.g. to read its weights).
    Unknown architectures, a missing optional extra and unreachable weights fail here, before any data is
    touched, with a message that says how to fix the call.
    """
    register_architectures()
    if arch not in open_clip.list_models():
        raise ValueError(
            f"Unknown open_clip architecture {arch!r}. Known: {', '.join(open_clip.list_models())}. "
            f"Custom architecture JSONs can be added to {ARCH_DIR}."
        )
    require_transformers(arch, tokenizer=load_tokenizer)
    weights = resolve_pretrained(pretrained)
    if weights is not None and not Path(weights).exists() and not open_clip.get_pretrained_cfg(arch, weights):
        # open_clip would log an ERROR line of its own before raising: one message instead
        raise weights_unavailable(weights, arch, "not a file, and not a tag open_clip knows for this architecture")
    torchscript = weights is not None and is_torchscript(weights)
    hub = HubAccess()
    offline = hub_must_be_offline(arch, None if torchscript else weights, cache_dir, hub)
    # the tokenizer first: it is cheap, and a missing one must not wait for large weights to load
    text_tokenizer = create_tokenizer(arch, tokenizer, cache_dir=cache_dir, hub=hub) if load_tokenizer else None
    quiet = _QuietRandomInit()
    if weights is None or torchscript:
        logging.getLogger().addFilter(quiet)
    try:
        with hub_offline_mode() if offline else nullcontext():
            model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
                arch, pretrained=None if torchscript else weights, device=device, cache_dir=cache_dir)
        if torchscript:
            load_torchscript_weights(model, weights, arch)
    except RuntimeError as err:
        if weights is not None and not Path(weights).exists():
            raise weights_unavailable(weights, arch, f"no network, or the tag is unknown: {err}") from err
        raise
    except OSError as err:
        hf_model = text_config(arch).get("hf_model_name")
        if offline and hf_model:  # transformers: the text tower's config is not in the HF cache
            raise HubFilesUnavailableError(
                f"{arch!r} builds its text tower from the Hugging Face model {hf_model!r}, whose files are not in "
                f"the local HF cache ({hub.unreachable_reason()}). Create the model once with a connection (they "
                f"are cached under HF_HOME), then run offline.") from err
        raise
    finally:
        logging.getLogger().removeFilter(quiet)
    log.info("Created %s (weights: %s)", arch, weights or "random init")
    return ClipBundle(model, preprocess_train, preprocess_val, text_tokenizer, arch, weights)


def with_eval_preprocess(bundle: ClipBundle, preprocess: dict[str, Any] | None) -> ClipBundle:
    """``bundle`` with the eval transform a checkpoint recorded (open_clip's ``preprocess_cfg`` of its weights).

    A skeleton built from the architecture name alone gets the architecture's default preprocessing, which some
    pretrained tags override (e.g. ``resize_mode: squash``); evaluating the checkpoint must use the recorded one.
    """
    if not preprocess:
        return bundle
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**{k: tuple(v) if isinstance(v, list) else v for k, v in preprocess.items()})
    return dataclasses.replace(bundle, preprocess_val=image_transform_v2(cfg, is_train=False))
