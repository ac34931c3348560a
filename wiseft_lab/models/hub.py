"""Reaching the Hugging Face hub (and open_clip's download URLs) without waiting on a dead network.

Offline, huggingface_hub retries each failed request five times with exponential back-off (1 + 2 + 4 + 8 + 8 s in
huggingface_hub 2.x, ``utils/_http.py``), and open_clip asks for two file names per tag (``open_clip_model.safetensors``
then ``open_clip_pytorch_model.bin``, ``open_clip/pretrained.py: download_pretrained_from_hf``): an offline
``model.pretrained=openai`` took about 46 s to fail. So before open_clip or transformers touch the network we decide
once whether it can be reached: ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) says no at once; otherwise a TCP
connection to the host (or to the configured HTTPS proxy) is tried for at most :data:`PROBE_TIMEOUT_S` seconds. When
it cannot be reached, files that are in the local cache are used through huggingface_hub's offline mode (no HEAD
requests, no retries) and missing ones fail immediately.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import huggingface_hub.constants as hub_constants
import open_clip
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from wiseft_lab.errors import UserFacingError

PROBE_TIMEOUT_S = 1.5
OPEN_CLIP_URL_CACHE = "~/.cache/clip"  # open_clip/pretrained.py: download_pretrained_from_url's default cache_dir


class HubFilesUnavailableError(UserFacingError, RuntimeError):
    """Files from the HF hub (a tokenizer, an HF text tower's config) are neither reachable nor cached."""


def offline_requested() -> bool:
    """``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` in the environment, or huggingface_hub's offline flag."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return bool(hub_constants.HF_HUB_OFFLINE) or any(
        str(v).strip().upper() in {"1", "ON", "YES", "TRUE"} for v in flags if v)


def probe_address(url: str) -> tuple[str, int]:
    """Where a connection to ``url`` goes first: the HTTPS proxy when one is configured, else the host itself."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname or "", proxy_parts.port or 80
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def can_connect(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection opens within ``timeout`` s (name resolution included: it runs in a thread)."""
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    worker = threading.Thread(target=attempt, daemon=True, name=f"probe-{host}")
    worker.start()
    worker.join(timeout)
    return bool(outcome and outcome[0])


@dataclass
class HubAccess:
    """Whether downloads can happen, decided once per host for one model creation."""

    timeout: float = PROBE_TIMEOUT_S
    _reachable: dict[tuple[str, int], bool] = field(default_factory=dict)

    def reachable(self, url: str | None = None) -> bool:
        if offline_requested():
            return False
        address = probe_address(url or hub_constants.ENDPOINT)
        if address not in self._reachable:
            self._reachable[address] = can_connect(*address, timeout=self.timeout)
        return self._reachable[address]

    def unreachable_reason(self, url: str | None = None) -> str:
        if offline_requested():
            return "HF_HUB_OFFLINE is set"
        host, port = probe_address(url or hub_constants.ENDPOINT)
        return f"no network: {host}:{port} cannot be reached"


@contextmanager
def hub_offline_mode() -> Iterator[None]:
    """huggingface_hub (and transformers, which asks it) serve cached files only: no request, no retry."""
    previous = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = previous


@dataclass(frozen=True)
class PretrainedDownload:
    """Where open_clip would fetch a tag's weights from, and whether they are already in the cache."""

    url: str
    cached: bool


def _hf_file_names(filename: str | None) -> list[str]:
    """The files open_clip asks the hub for, in order (``download_pretrained_from_hf``: a .safetensors twin first)."""
    filename = filename or HF_WEIGHTS_NAME
    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME, filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def _hf_cached(model_id: str, filename: str | None, cache_dir: str | None) -> bool:
    return any(isinstance(huggingface_hub.try_to_load_from_cache(model_id, name, cache_dir=cache_dir), str)
               for name in _hf_file_names(filename))


def pretrained_download(arch: str, tag: str, cache_dir: str | None = None) -> PretrainedDownload | None:
    """The download open_clip would make for ``(arch, tag)``, mirroring ``open_clip/pretrained.py:
    download_pretrained`` (the HF hub when ``hf_hub`` is set, else the URL); None for unknown tags and local files."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg or "file" in cfg:
        return None
    if cfg.get("hf_hub"):
        model_id, filename = os.path.split(cfg["hf_hub"])
        return PretrainedDownload(f"{hub_constants.ENDPOINT}/{model_id}", _hf_cached(model_id, filename, cache_dir))
    if cfg.get("url"):
        target = Path(cache_dir or OPEN_CLIP_URL_CACHE).expanduser() / os.path.basename(cfg["url"])
        return PretrainedDownload(cfg["url"], target.is_file())
    return None
