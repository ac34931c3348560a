"""Moving models between wiseft-lab and open_clip: export a checkpoint as an open_clip model, import open_clip files.

An open_clip state dict is ``CLIP.state_dict()`` (``open_clip/model.py``): ``visual.*``, the text tower
(``token_embedding.weight``, ``positional_embedding``, ``transformer.*``, ``ln_final.*``, ``text_projection``; under
``text.*`` for ``CustomTextCLIP``) and ``logit_scale`` (+ ``logit_bias`` for SigLIP). A wiseft-lab checkpoint
holds the same names under ``clip.`` plus ``head.weight`` / ``head.bias``; image-only methods drop the text tower
(``keep_text: false``), which the export restores from the zero-shot weights the head was built from
(``meta.pretrained``).

An export directory is loadable by plain open_clip in two ways::

    open_clip.create_model_and_transforms(arch, pretrained="<out>/open_clip_model.safetensors")
    open_clip.create_model_and_transforms("local-dir:<out>")   # uses open_clip_config.json: no custom arch needed

and holds the classification head beside it: ``head.safetensors`` (``weight [classes, dim]``, ``bias [classes]``)
and ``head.json`` (class names, templates, where the weights came from); the classifier's logits are
``normalize(model.encode_image(x)) @ weight.T + bias``.

Imports read open_clip training checkpoints (``epoch_N.pt``: ``{"epoch", "name", "state_dict", "optimizer",
["scaler"]}``, the state dict with ``module.`` prefixes when trained with DDP; ``open_clip_train/main.py``) with
``torch.load(weights_only=True)``, plain state dicts (``.pt``/``.bin``/``.safetensors``) and export directories.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
from safetensors import safe_open
from safetensors.torch import load_file

from wiseft_lab.errors import UserFacingError
from wiseft_lab.io import read_json, write_json, write_safetensors
from wiseft_lab.models.checkpoint import (
    WEIGHTS_FILE,
    CheckpointMeta,
    StateDict,
    is_checkpoint,
    load_state_dict,
    read_meta,
    save_checkpoint,
)
from wiseft_lab.models.classifier import ImageClassifier
from wiseft_lab.models.factory import create_clip, is_torchscript
from wiseft_lab.models.templates import Template, resolve_templates, template_text
from wiseft_lab.models.text_head import build_text_head
from wiseft_lab.models.tokenizers import MissingExtraError, TokenizerUnavailableError, create_tokenizer
from wiseft_lab.models.zeroshot import ClassificationHead, build_zeroshot_head

log = logging.getLogger(__name__)

OPEN_CLIP_WEIGHTS = HF_SAFE_WEIGHTS_NAME  # "open_clip_model.safetensors": the name open_clip's local-dir: prefers
OPEN_CLIP_CONFIG = HF_CONFIG_NAME  # "open_clip_config.json": {"model_cfg", "preprocess_cfg"} (push_to_hf_hub.py)
HEAD_WEIGHTS = "head.safetensors"
HEAD_META = "head.json"
CLIP_PREFIX = "clip."
HEAD_PREFIX = "head."
DDP_PREFIX = "module."
OPEN_CLIP_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class InteropError(UserFacingError, ValueError):
    """A checkpoint cannot be exported or imported as asked; the message says what is missing."""


# --------------------------------------------------------------------------------------------------- export
def split_classifier_state(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict]:
    """An ImageClassifier state as (open_clip state under open_clip's names, head state ``weight``/``bias``)."""
    clip = {k[len(CLIP_PREFIX):]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    other = sorted(set(state) - {CLIP_PREFIX + k for k in clip} - {HEAD_PREFIX + k for k in head})
    if other or set(head) != {"weight", "bias"}:
        raise InteropError(f"Not an ImageClassifier state: head entries {sorted(head)}, other entries {other[:5]}")
    return clip, head


def _first(keys: Sequence[str], n: int = 5) -> str:
    return ", ".join(list(keys)[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def complete_clip_state(arch: str, clip_state: Mapping[str, torch.Tensor], meta: CheckpointMeta, *,
                        text_source: str | None = None, cache_dir: str | None = None) -> tuple[StateDict, str]:
    """The full open_clip state of a checkpoint's model and where its text tower came from.

    A checkpoint that kept its text tower is complete. One that dropped it (``keep_text: false``) takes the
    missing entries (the text tower) from ``text_source`` or else ``meta.pretrained``, the zero-shot weights its
    head was built from; the entries it has (image tower, ``logit_scale``, ``logit_bias``) stay its own. The result
    is loaded strictly into the architecture, so names and shapes are those open_clip expects.
    """
    kept_text = meta.keep_text
    source = None if kept_text else (text_source or meta.pretrained)
    if not kept_text and not source:
        raise InteropError(
            f"The checkpoint has no text tower (keep_text: false) and its zero-shot weights were random "
            f"(pretrained: {meta.pretrained!r}), so the text tower its head came from is unavailable. Pass "
            f"the zero-shot weights (--text-from <file or tag>), or fine-tune with finetune.keep_text=true.")
    try:
        reference = create_clip(arch, source, cache_dir=cache_dir, load_tokenizer=False).model
    except FileNotFoundError as err:
        raise InteropError(f"The checkpoint's text tower comes from its zero-shot weights {source!r}, which are not "
                           f"here ({err}). Pass them with --text-from <file or tag>.") from err
    expected = reference.state_dict()
    unexpected = [k for k in clip_state if k not in expected]
    if unexpected:
        raise InteropError(f"The checkpoint's model has entries {arch!r} does not have: {_first(unexpected)}")
    missing = [k for k in expected if k not in clip_state]
    if missing and kept_text:
        raise InteropError(f"The checkpoint says it kept its text tower but lacks {_first(missing)}")
    full = {k: clip_state.get(k, v) for k, v in expected.items()}
    try:
        reference.load_state_dict(full, strict=True)
    except RuntimeError as err:
        raise InteropError(f"The checkpoint's weights do not fit {arch!r}: {err}") from err
    return full, "checkpoint" if kept_text else str(source)


def _save_tokenizer(arch: str, out: Path, tokenizer: str | None, cache_dir: str | None) -> bool:
    """Put an HF tokenizer's files beside the weights (``local-dir:`` reads them there); False when unavailable."""
    if not open_clip.get_model_config(arch)["text_cfg"].get("hf_tokenizer_name"):
        return False
    try:
        create_tokenizer(arch, tokenizer, cache_dir=cache_dir).save_pretrained(str(out))
    except (MissingExtraError, TokenizerUnavailableError, FileNotFoundError) as err:
        log.warning("The tokenizer files are not included in %s (open_clip's local-dir: needs them): %s", out, err)
        return False
    return True


def export_open_clip(checkpoint: str | Path, out: str | Path, *, text_source: str | None = None,
                     cache_dir: str | None = None, tokenizer: str | None = None) -> dict[str, Path]:
    """Write a wiseft-lab checkpoint as an open_clip model plus its classification head; returns the files.

    ``text_source``: the zero-shot weights (file or tag) to take a dropped text tower from, when
    ``meta.pretrained`` is not available here. ``tokenizer``: a local HF tokenizer directory (architectures
    whose tokenizer comes from the hub), copied beside the weights.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    meta = read_meta(checkpoint)
    arch = meta.arch
    clip_state, head_state = split_classifier_state(load_state_dict(checkpoint))
    state, text_from = complete_clip_state(arch, clip_state, meta, text_source=text_source, cache_dir=cache_dir)
    preprocess = dict(meta.preprocess)
    logit_bias = state.get("logit_bias")
    files = {
        "weights": write_safetensors(out / OPEN_CLIP_WEIGHTS, state),
        "config": write_json(out / OPEN_CLIP_CONFIG, {"model_cfg": open_clip.get_model_config(arch),
                                                      "preprocess_cfg": preprocess}),
        "head": write_safetensors(out / HEAD_WEIGHTS, head_state),
    }
    has_tokenizer = _save_tokenizer(arch, out, tokenizer, cache_dir)
    files["head_meta"] = write_json(out / HEAD_META, {
        "arch": arch,
        "classnames": meta.classnames,
        "templates": meta.templates,
        "head": meta.head,
        "logits": "normalize(model.encode_image(x)) @ head.weight.T + head.bias",
        "logit_bias": None if logit_bias is None else float(logit_bias),
        "pretrained": meta.pretrained,
        "text_tower": text_from,
        "keep_text": meta.keep_text,
        "preprocess": preprocess,
        "method": meta.method,
        "source_checkpoint": str(checkpoint.resolve()),
        "tokenizer_included": has_tokenizer,
    })
    log.info("Exported %s to %s (text tower: %s)", checkpoint, out, text_from)
    return files


# --------------------------------------------------------------------------------------------------- import
def is_open_clip_file(path: str | Path) -> bool:
    """A file (not a wiseft-lab checkpoint directory) that :func:`load_open_clip_state` reads."""
    path = Path(path)
    return path.is_file() and path.suffix in OPEN_CLIP_SUFFIXES


def is_open_clip_source(path: str | Path) -> bool:
    """An open_clip file or export directory (what :func:`load_open_clip_state` reads), not a wiseft-lab checkpoint."""
    path = Path(path)
    return is_open_clip_file(path) or (path.is_dir() and not is_checkpoint(path)
                                       and (path / OPEN_CLIP_WEIGHTS).is_file())


def _strip_ddp_prefix(state: Mapping[str, torch.Tensor]) -> StateDict:
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        return {k[len(DDP_PREFIX):]: v for k, v in state.items()}
    return dict(state)


def load_open_clip_state(path: str | Path) -> StateDict:
    """The open_clip state dict in an ``epoch_N.pt`` training checkpoint, a plain state dict file or an export dir.

    Never unpickles arbitrary objects (``weights_only=True``); DDP's ``module.`` prefix is removed.
    """
    path = Path(path)
    if path.is_dir():
        if is_checkpoint(path):
            raise InteropError(f"{path} is a wiseft-lab checkpoint directory: use it as is, it needs no import.")
        if not (path / OPEN_CLIP_WEIGHTS).is_file():
            raise InteropError(f"{path} holds no {OPEN_CLIP_WEIGHTS}: pass an open_clip weights file.")
        path = path / OPEN_CLIP_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"No open_clip checkpoint at {path}")
    if path.suffix == ".safetensors":
        loaded: Any = load_file(path)
    elif is_torchscript(str(path)):
        raise InteropError(f"{path} is a TorchScript archive (OpenAI's release format): pass it as "
                           f"model.pretrained={path}, which loads it as the zero-shot weights.")
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError, depending on the damage
            raise InteropError(f"{path} is not a weights-only torch checkpoint ({type(err).__name__}: {err})") from err
    state = loaded["state_dict"] if isinstance(loaded, Mapping) and "state_dict" in loaded else loaded
    if not isinstance(state, Mapping) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise InteropError(f"{path} holds no state dict (expected name -> tensor, or a training checkpoint whose "
                           f"'state_dict' is one).")
    state = _strip_ddp_prefix(state)
    if any(k.startswith(HEAD_PREFIX) for k in state) and all(k.startswith((CLIP_PREFIX, HEAD_PREFIX)) for k in state):
        raise InteropError(f"{path} holds a wiseft-lab classifier: pass the checkpoint directory that holds it.")
    return state


def read_head(directory: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """The head (``weight``, ``bias``) and metadata of a wiseft-lab checkpoint or of an export directory."""
    directory = Path(directory)
    if is_checkpoint(directory):
        with safe_open(directory / WEIGHTS_FILE, framework="pt") as handle:
            head = {k[len(HEAD_PREFIX):]: handle.get_tensor(k) for k in handle.keys() if k.startswith(HEAD_PREFIX)}
        return head, read_meta(directory).to_dict()
    if (directory / HEAD_WEIGHTS).is_file() and (directory / HEAD_META).is_file():
        return load_file(directory / HEAD_WEIGHTS), read_json(directory / HEAD_META)
    raise FileNotFoundError(f"No head at {directory}: expected a wiseft-lab checkpoint ({WEIGHTS_FILE} + meta.json) "
                            f"or an export directory ({HEAD_WEIGHTS} + {HEAD_META}).")


def classifier_state_from_open_clip(
    state: Mapping[str, torch.Tensor],
    arch: str | None = None,
    *,
    head_from: str | Path | None = None,
    classnames: Sequence[str] | None = None,
    templates: str | Sequence[Template] | None = None,
    head: str = "linear",
    keep_text: bool | None = None,
    tokenizer: str | None = None,
    preprocess: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
) -> tuple[StateDict, CheckpointMeta]:
    """An ImageClassifier state and checkpoint metadata from an open_clip state dict.

    The head is copied from ``head_from`` (a wiseft-lab checkpoint, e.g. the zero-shot one, or an export directory;
    its class names, templates, head kind, ``keep_text`` and preprocessing are taken too), or else it is the
    zero-shot head of ``classnames`` x ``templates`` built from the imported model's own text tower (``head="text"``
    makes it a text-derived head, rebuilt from the text tower after every load). A text-derived head is always
    rebuilt from the imported text tower. ``source`` (the imported file) is recorded; it is also
    ``meta.pretrained`` when the head comes from the imported text tower.
    """
    head_state, head_meta = read_head(head_from) if head_from is not None else ({}, {})
    arch = arch or head_meta.get("arch")
    if not arch:
        raise InteropError("Name the open_clip architecture of the imported weights (e.g. ViT-B-32-quickgelu).")
    if head_meta.get("arch") not in (None, arch):
        log.warning("The head of %s was built for %s; the imported weights are %s", head_from, head_meta["arch"], arch)
    kind = head_meta.get("head", "linear") if head_from is not None else head
    if kind not in ("linear", "text"):
        raise InteropError(f"head must be 'linear' or 'text', not {kind!r}")
    from_text = head_from is None or kind == "text"
    classnames = list(classnames if classnames is not None else head_meta.get("classnames") or [])
    templates = templates if templates is not None else head_meta.get("templates") or ()
    if from_text and not (classnames and templates):
        raise InteropError("Building the head from the imported text tower needs class names and templates.")
    templates = resolve_templates(templates) if templates else ()
    keep_text = bool(head_meta.get("keep_text", kind == "text")) if keep_text is None else keep_text
    if kind == "text" and not keep_text:
        raise InteropError("A text-derived head needs the text tower: keep_text must be true.")

    bundle = create_clip(arch, None, tokenizer=tokenizer, load_tokenizer=from_text)
    clip = bundle.model
    missing, unexpected = (sorted(set(clip.state_dict()) - set(state)), sorted(set(state) - set(clip.state_dict())))
    if missing or unexpected:
        raise InteropError(f"The imported weights are not a full {arch!r} model: missing {_first(missing) or '-'}; "
                           f"unexpected {_first(unexpected) or '-'}. Is {arch!r} the architecture they were "
                           f"trained as?")
    try:
        clip.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise InteropError(f"The imported weights do not fit {arch!r}: {err}") from err
    if kind == "text":
        classifier_head = build_text_head(clip, bundle.tokenizer, classnames, templates)
    elif from_text:
        classifier_head = build_zeroshot_head(clip, bundle.tokenizer, classnames, templates)
    else:
        classifier_head = ClassificationHead(head_state["weight"].float(), head_state["bias"].float())
    model = ImageClassifier(clip, classifier_head, keep_text=keep_text)
    meta = CheckpointMeta(
        arch=arch, classnames=classnames, templates=[template_text(t) for t in templates],
        pretrained=str(source) if from_text and source is not None else head_meta.get("pretrained"),
        preprocess=dict(preprocess or head_meta.get("preprocess") or getattr(clip.visual, "preprocess_cfg", {}) or {}),
        keep_text=keep_text, head=kind, method="imported",
        extra={"imported_from": None if source is None else str(source),
               "head_from": None if head_from is None else str(head_from)})
    return model.state_dict(), meta


def import_open_clip_checkpoint(path: str | Path, out_dir: str | Path, arch: str | None = None,
                                **options: Any) -> Path:
    """Write the open_clip checkpoint ``path`` as a wiseft-lab checkpoint directory (see
    :func:`classifier_state_from_open_clip` for ``options``); every pipeline stage then reads it like its own."""
    state, meta = classifier_state_from_open_clip(load_open_clip_state(path), arch, source=path, **options)
    return save_checkpoint(out_dir, state, meta)
