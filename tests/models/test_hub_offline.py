"""Offline machines are detected at once: no minute of hub retries before the clear message; cached files still load."""

from __future__ import annotations

import re
import threading
import time

import huggingface_hub.constants
import open_clip.pretrained
import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import TINY_ARCH
from tests.hf_fakes import fill_hf_cache
from wiseft_lab.errors import UserFacingError
from wiseft_lab.models import hub, tokenizers
from wiseft_lab.models.factory import WeightsUnavailableError, create_clip
from wiseft_lab.models.tokenizers import HF_EXTRA, MissingExtraError

PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY",
                   "no_proxy", "NO_PROXY")


@pytest.fixture()
def online_flags(monkeypatch):
    """Neither HF_HUB_OFFLINE nor TRANSFORMERS_OFFLINE: whether the hub is reachable is up to the probe."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", *PROXY_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture()
def blackholed_network(monkeypatch, online_flags):
    """Connections hang (packets dropped) until their timeout, as on a firewalled machine (for every client)."""
    release = threading.Event()

    def hang(address, timeout=None, *args, **kwargs):
        release.wait(timeout or 60)
        raise TimeoutError("timed out")

    monkeypatch.setattr(hub.socket, "create_connection", hang)
    yield
    release.set()


def test_hf_hub_offline_fails_at_once_with_the_local_file_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by huggingface_hub at import; the factory reads it too
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"HF_HUB_OFFLINE is set and they are not in the local cache"
                                                      r".*model\.pretrained=/path/to/open_clip_model\.safetensors"):
        create_clip("ViT-B-32", "openai", cache_dir=str(tmp_path))
    assert time.monotonic() - started < 5


def test_an_unreachable_network_is_detected_by_a_short_probe(blackholed_network, tmp_path):
    started = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"no network: huggingface\.co:443 cannot be reached"):
        create_clip("ViT-B-32", "openai", cache_dir=str(tmp_path))
    assert time.monotonic() - started < hub.PROBE_TIMEOUT_S + 2


def test_cached_weights_of_a_tag_load_without_network(blackholed_network, monkeypatch, tmp_path, tiny_bundle):
    """No network, no HF_HUB_OFFLINE: the cached file is used through the hub's offline mode (huggingface_hub's HEAD
    request would first wait for its 10 s connect timeout, and retry)."""
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, TINY_ARCH, {"cached": {"hf_hub": "wiseft-lab-test/tiny/"}})
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_bundle.model.state_dict().items()}, weights)
    fill_hf_cache(tmp_path / "cache", "wiseft-lab-test/tiny", [weights])
    started = time.monotonic()
    loaded = create_clip(TINY_ARCH, "cached", cache_dir=str(tmp_path / "cache")).model
    assert time.monotonic() - started < hub.PROBE_TIMEOUT_S + 3
    for name, value in tiny_bundle.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # offline only while the model was built


def test_the_probe_goes_to_the_configured_proxy(online_flags, monkeypatch):
    assert hub.probe_address("https://huggingface.co") == ("huggingface.co", 443)
    assert hub.probe_address("http://example.org:8080/x") == ("example.org", 8080)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.probe_address("https://huggingface.co") == ("proxy.internal", 3128)


def test_architectures_needing_transformers_name_the_extra(monkeypatch):
    monkeypatch.setattr(tokenizers, "transformers_installed", lambda: False)
    with pytest.raises(MissingExtraError, match=rf"tokenizer from Hugging Face transformers.*{re.escape(HF_EXTRA)}"):
        create_clip("ViT-B-16-SigLIP")
    with pytest.raises(MissingExtraError, match=rf"text tower from Hugging Face transformers.*{re.escape(HF_EXTRA)}"):
        create_clip("nllb-clip-base")


def test_a_tokenizer_directory_is_refused_for_the_builtin_tokenizer(tmp_path):
    with pytest.raises(UserFacingError, match="uses open_clip's built-in BPE tokenizer"):
        create_clip(TINY_ARCH, tokenizer=str(tmp_path))
