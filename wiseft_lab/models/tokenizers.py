"""Tokenizers of every open_clip architecture, including those that come from the Hugging Face hub.

open_clip builds an ``HFTokenizer`` (``transformers.AutoTokenizer``) whenever the model config's ``text_cfg`` names
``hf_tokenizer_name`` (``open_clip/factory.py: get_tokenizer``): the SigLIP / SigLIP2 family, NLLB-CLIP, the
MT5/XLM-R/RoBERTa text towers. NLLB-CLIP and the other ``hf_model_name`` towers also need transformers to build the
model itself. transformers is the optional extra ``wiseft-lab[hf]``; without it these architectures stop here with
a message naming it, not with ``No module named 'transformers'``.

The tokenizer is read from (first that applies): ``model.tokenizer=<local dir>`` (a ``save_pretrained`` directory),
a local directory named by the config itself, the hub, or, when the hub cannot be reached (``HF_HUB_OFFLINE`` or no
network), the local HF cache (``model.cache_dir`` when set, else the default cache).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import open_clip

from wiseft_lab.errors import UserFacingError
from wiseft_lab.models.hub import HubAccess, HubFilesUnavailableError, hub_offline_mode

HF_EXTRA = "pip install 'wiseft-lab[hf]'"


class MissingExtraError(UserFacingError, ImportError):
    """An optional dependency that this architecture needs is not installed; the message names the extra."""


class TokenizerUnavailableError(HubFilesUnavailableError):
    """The HF tokenizer is neither reachable nor cached; the message shows the local-directory way."""


def text_config(arch: str) -> dict[str, Any]:
    return (open_clip.get_model_config(arch) or {}).get("text_cfg", {})


def hf_tokenizer_name(arch: str) -> str | None:
    """The HF tokenizer open_clip would load for ``arch`` (None: open_clip's own BPE tokenizer)."""
    return text_config(arch).get("hf_tokenizer_name") or None


def transformers_needed_for(arch: str, *, tokenizer: bool = True) -> str | None:
    """What of ``arch`` needs transformers (``"text tower"``, ``"tokenizer"``), or None."""
    cfg = text_config(arch)
    if cfg.get("hf_model_name"):
        return "text tower"
    if tokenizer and cfg.get("hf_tokenizer_name"):
        return "tokenizer"
    return None


def transformers_installed() -> bool:
    return importlib.util.find_spec("transformers") is not None


def require_transformers(arch: str, *, tokenizer: bool = True) -> None:
    """Fail before any model is built when ``arch`` needs transformers and it is not installed."""
    part = transformers_needed_for(arch, tokenizer=tokenizer)
    if part and not transformers_installed():
        raise MissingExtraError(
            f"The architecture {arch!r} takes its {part} from Hugging Face transformers "
            f"({text_config(arch).get('hf_model_name') or hf_tokenizer_name(arch)}), which is not installed. "
            f"Install the optional extra: {HF_EXTRA}")


def _local_hf_tokenizer(arch: str, directory: Path) -> Callable:
    """open_clip's ``HFTokenizer`` read from a directory, with the arch's context length and tokenizer options."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer

    cfg = text_config(arch)
    return HFTokenizer(str(directory), context_length=cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                       tokenizer_mode=cfg.get("tokenizer_mode"), **cfg.get("tokenizer_kwargs", {}))


def create_tokenizer(arch: str, source: str | None = None, *, cache_dir: str | None = None,
                     hub: HubAccess | None = None) -> Callable:
    """The tokenizer of ``arch``; ``source`` is a local tokenizer directory replacing the config's HF hub name."""
    name = hf_tokenizer_name(arch)
    if source:
        if name is None:
            raise UserFacingError(
                f"model.tokenizer={source!r} replaces a Hugging Face tokenizer, but {arch!r} uses open_clip's "
                f"built-in BPE tokenizer: leave model.tokenizer unset.")
        directory = Path(str(source)).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(
                f"model.tokenizer={source!r}: no such directory. It must hold the tokenizer files written by "
                f"tokenizer.save_pretrained(dir) (tokenizer.json, tokenizer_config.json, ...) of {name!r}.")
        return _local_hf_tokenizer(arch, directory)
    if name is None:
        return open_clip.get_tokenizer(arch)
    hub = hub or HubAccess()
    offline = not Path(name).expanduser().is_dir() and not hub.reachable()
    try:
        with hub_offline_mode() if offline else nullcontext():
            return open_clip.get_tokenizer(arch, cache_dir=cache_dir)
    except OSError as err:  # transformers: neither on the hub (reachable) nor in the cache
        reason = f"{hub.unreachable_reason()} and it is not in the local HF cache" if offline else str(err)
        raise TokenizerUnavailableError(
            f"Could not load the tokenizer {name!r} of {arch!r} ({reason}). Save it where you have a connection "
            f"(transformers.AutoTokenizer.from_pretrained({name!r}).save_pretrained('/path/to/tokenizer')) and "
            f"pass model.tokenizer=/path/to/tokenizer.") from err
