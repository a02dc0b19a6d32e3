"""The ImageNet weights ``--pretrained imagenet`` starts from: which timm ``name.tag``, where its file is cached, and
whether it can be downloaded now.

timm's own pretrained machinery keeps the weights in the Hugging Face hub cache: they download once and are reused
offline. The tags are those of the weights the official code started from: torchvision's ImageNet ResNet-50/101
(``resnet50.tv_in1k``, ``resnet101.tv_in1k``) and ASL's TResNets (``tresnet_m/l.miil_in1k``, ``..._448`` for
inputs nearer 448 px than 224 px); any other name gets timm's default tag, and a tagged name
(``resnet50.a1_in1k``) picks its own.

When the weights are neither cached nor downloadable, ``locate_imagenet_weights`` says so within seconds
(``PretrainedUnavailable``, its message the paragraph to show): one HEAD request to the download URL through the
environment's proxy, under a deadline, instead of the downloader's minute of retries. src/models.py builds the
model with them.
"""
from __future__ import annotations

import http.client
import os
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies

import torch
from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name
from timm.models import get_arch_pretrained_cfgs, get_pretrained_cfg, split_model_name_tag

__all__ = ["PAPER_TAGS", "PretrainedUnavailable", "imagenet_weights", "HubWeights", "locate_imagenet_weights",
           "unavailable_message"]

# timm tag of the ImageNet weights the official code (or ASL, for TResNet) started from.
PAPER_TAGS = {"resnet50": "tv_in1k", "resnet101": "tv_in1k", "tresnet_m": "miil_in1k", "tresnet_l": "miil_in1k"}
_PROBE_TIMEOUT_S = 3.0  # per connect / read of the download probe
_PROBE_DEADLINE_S = 5.0  # the whole probe


class PretrainedUnavailable(RuntimeError):
    """The requested ImageNet weights cannot be had here; the message is the paragraph to show the user."""


def imagenet_weights(name: str, image_size: int = 448) -> str:
    """The timm ``name.tag`` whose weights ``--pretrained imagenet`` loads for model ``name``."""
    arch, tag = split_model_name_tag(name.lower())
    if tag:
        return f"{arch}.{tag}"
    paper = PAPER_TAGS.get(arch)
    if paper is not None:
        high_res = f"{arch}.{paper}_448"
        if high_res in get_arch_pretrained_cfgs(arch) and abs(image_size - 448) < abs(image_size - 224):
            return high_res
        return f"{arch}.{paper}"
    cfg = get_pretrained_cfg(arch)
    if cfg is None or not cfg.tag or not (cfg.hf_hub_id or cfg.url):
        raise PretrainedUnavailable(f"error: timm has no pretrained weights for {arch}: pass --pretrained none "
                                    f"to train it from scratch, or --pretrained PATH with a weights file.")
    return f"{arch}.{cfg.tag}"


@dataclass(frozen=True)
class HubWeights:
    """Where timm gets the weights ``name`` (timm ``name.tag``) from."""
    name: str
    repo_id: str | None  # Hugging Face hub repo, e.g. 'timm/resnet50.tv_in1k'
    filenames: tuple[str, ...]  # in the order timm tries them
    url: str | None  # timm's legacy download URL, if any

    @staticmethod
    def of(name: str) -> "HubWeights":
        cfg = get_pretrained_cfg(name)
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
        return HubWeights(name, cfg.hf_hub_id or None, files, cfg.url or None)

    def cached_file(self) -> Path | None:
        """The weights file already on this machine: the hub cache, else torch.hub's checkpoint folder."""
        if self.repo_id:
            repo, _, revision = self.repo_id.partition("@")
            for filename in self.filenames:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str):
                    return Path(found)
        if self.url:
            legacy = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(self.url).path)
            if legacy.is_file():
                return legacy
        return None

    def download_url(self) -> str:
        if self.repo_id:
            repo, _, revision = self.repo_id.partition("@")
            return f"{constants.ENDPOINT}/{repo}/resolve/{revision or 'main'}/{self.filenames[0]}"
        return self.url or "?"


def _download_blocker(weights: HubWeights) -> str | None:
    """Why the weights cannot be downloaded now (offline mode, no HTTP answer from the server), or None.

    Takes at most ``_PROBE_DEADLINE_S`` seconds in all: one HEAD request to the download URL, through the
    proxy the environment names, no retries and no redirect followed. Any HTTP status counts as an answer; a
    refused connection, a failed TLS handshake or silence does not (a proxy that accepts the connection but
    never completes TLS would otherwise cost the downloader's minute of retries)."""
    if weights.repo_id and constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    url = weights.download_url() if weights.repo_id else weights.url or ""
    parts = urlparse(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"no server to download from ({url!r})"
    proxy = getproxies().get(parts.scheme)
    target = urlparse(proxy) if proxy else parts
    port = target.port or (443 if target.scheme == "https" else 80)
    where = f"{target.hostname}:{port}" + (" (proxy)" if proxy else "")
    answer: list[str | None] = []
    probe = threading.Thread(target=lambda: answer.append(_head_request_problem(url)), daemon=True)
    probe.start()
    probe.join(_PROBE_DEADLINE_S)
    if not answer:
        return f"cannot reach {where}: no answer within {_PROBE_DEADLINE_S:g} s"
    return f"cannot reach {where}: {answer[0]}" if answer[0] else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a 3xx is an answer: do not follow it to the CDN
        return None


def _head_request_problem(url: str) -> str | None:
    """Why a HEAD request to ``url`` gets no HTTP answer, or None (any status, redirects included)."""
    context = ssl.create_default_context()
    try:
        import certifi  # lazy: optional; the bundle the downloader verifies with, where installed

        context.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=context))
    try:
        opener.open(urllib.request.Request(url, method="HEAD"), timeout=_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # the server answered
    except urllib.error.URLError as e:
        reason = e.reason
        return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    except (OSError, http.client.HTTPException) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__
    return None


def unavailable_message(weights: HubWeights, reason: str) -> str:
    if weights.repo_id:
        repo = weights.repo_id.partition("@")[0]
        folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
        what = f"{weights.name} (Hugging Face hub repo {repo}, file {weights.filenames[0]})"
        copy = f"then copy the folder {folder.name} of its hub cache (~/.cache/huggingface/hub) to {folder.parent}"
    else:
        what = f"{weights.name} ({weights.url})"
        copy = f"then copy its file to {Path(torch.hub.get_dir()) / 'checkpoints'}"
    return "\n".join([
        f"error: --pretrained imagenet (the default) loads the ImageNet weights {what};",
        f"they are not in this machine's cache and cannot be downloaded ({reason}).",
        f"On a machine with internet, run",
        f"    python -c \"import timm; timm.create_model('{weights.name}', pretrained=True)\"",
        f"{copy};",
        f"or download {weights.download_url()} and pass --pretrained PATH_TO_THAT_FILE.",
        "To train from random weights instead, pass --pretrained none (the paper starts from ImageNet weights).",
    ])


def locate_imagenet_weights(name: str, image_size: int = 448) -> tuple[HubWeights, Path | None]:
    """(the weights, their cached file or None when they will be downloaded); PretrainedUnavailable, within
    seconds, when they are neither cached nor downloadable."""
    weights = HubWeights.of(imagenet_weights(name, image_size))
    cached = weights.cached_file()
    if cached is None:
        reason = _download_blocker(weights)
        if reason is not None:
            raise PretrainedUnavailable(unavailable_message(weights, reason))
    return weights, cached
