"""Pretrained weights through timm's own loader: `--pretrained timm` (timm's default pretrained tag for --model,
e.g. resnet18.a1_in1k) and `--pretrained hf-hub:org/name` (a Hugging Face hub model, architecture and weights).

The files come from the Hugging Face cache (HF_HOME, HF_HUB_OFFLINE=1: Kaggle's offline notebooks) or a
download, exactly as for any timm user. Without either, one line says how to get them; the check runs before
anything is written. timm re-initialises the classifier for our classes and adapts the first conv to grey
input, as load_pretrained does for local files.
"""
from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from src.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

HUB_PREFIX = "hf-hub:"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's hub loader reads, preferred first


def is_hub(pretrained: str) -> bool:
    """Whether --pretrained names hub weights (rather than nothing or a local file)."""
    return pretrained == "timm" or pretrained.startswith(HUB_PREFIX)


@dataclass
class HubWeights:
    """Where a model's pretrained weights live on the hub and the input they were trained with."""

    model_name: str  # as the config records it: a timm name, or hf-hub:org/name
    repo_id: str
    input_size_px: int
    mean: list[float]
    std: list[float]
    snapshot: str = ""  # hf-hub: the cached folder holding its config.json, from which timm builds the network

    def timm_name(self) -> str:
        """What timm.create_model gets: the registry name, or the cached hub folder (local-dir:), so that
        building the network never waits on the network."""
        return f"local-dir:{self.snapshot}" if self.snapshot else self.model_name


def _hub_api():
    # huggingface_hub comes with timm; imported here so that a config check (train.py --help) stays light.
    import huggingface_hub
    import huggingface_hub.constants
    import huggingface_hub.errors  # the submodules: the lazy package does not load them by itself
    return huggingface_hub


def missing_weights(repo_id: str, model_name: str) -> str:
    hub = _hub_api()
    offline = " (HF_HUB_OFFLINE is set)" if hub.constants.HF_HUB_OFFLINE else ""
    return (f"--pretrained: weights {repo_id} are not in the Hugging Face cache {hub.constants.HF_HUB_CACHE} and "
            f"could not be downloaded{offline}; on a machine with network run python -c \"import timm; "
            f"timm.create_model('{model_name}', pretrained=True)\" with the same HF_HOME and copy that cache here, "
            f"or pass --pretrained PATH to a weight file")


def fetch(repo_id: str, filename: str, model_name: str) -> str | None:
    """A file of a hub repo from the cache or a download; None when the repo has no such file."""
    hub = _hub_api()
    cached = hub.try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return cached
    if hub.constants.HF_HUB_OFFLINE or not hub_reachable():
        raise UserError(missing_weights(repo_id, model_name))
    try:
        return hub.hf_hub_download(repo_id, filename)
    except hub.errors.LocalEntryNotFoundError:  # a subclass of EntryNotFoundError: the file may well exist
        raise UserError(missing_weights(repo_id, model_name)) from None
    except hub.errors.EntryNotFoundError:
        return None
    except (hub.errors.RepositoryNotFoundError, hub.errors.GatedRepoError):
        raise UserError(f"--pretrained: the hub has no repo {repo_id!r} you may read (a typo, a private or a "
                        f"gated model: accept its terms and set HF_TOKEN)") from None
    except Exception as err:  # a connection dropped mid-download and the like: one line, never a traceback
        raise UserError(f"{missing_weights(repo_id, model_name)} ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:100] if str(err) else ''})") from None


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub's host answers at all: without a network, huggingface_hub retries with back-off for
    about a minute before giving up, so ask once, briefly, first (name lookup included). Behind a proxy the
    raw socket would not be the path huggingface_hub takes, so the download decides."""
    if any(os.environ.get(v) for v in PROXY_VARIABLES):
        return True
    url = urlparse(_hub_api().constants.ENDPOINT)
    address = (url.hostname, url.port or (443 if url.scheme == "https" else 80))
    answered, done = [], threading.Event()

    def probe() -> None:
        try:
            socket.create_connection(address, timeout=timeout_s).close()
            answered.append(True)
        except OSError:  # refused or unresolvable
            pass
        finally:
            done.set()

    # A daemon thread: getaddrinfo has no timeout of its own, and a stuck lookup must not hold the process.
    threading.Thread(target=probe, daemon=True).start()
    done.wait(timeout_s + 0.5)
    return bool(answered)


def resolve_hub(model: str, pretrained: str) -> HubWeights:
    """The hub repo, pretrained input size and normalisation of --pretrained timm / hf-hub:org/name."""
    import timm
    if pretrained.startswith(HUB_PREFIX):
        repo_id = pretrained[len(HUB_PREFIX):]
        path = fetch(repo_id, "config.json", pretrained)
        if path is None:
            raise UserError(f"--pretrained {pretrained}: the repo has no config.json; it is not a timm model")
        cfg = json.loads(Path(path).read_text()).get("pretrained_cfg", {})
        name, snapshot = pretrained, str(Path(path).parent)
    else:
        cfg = timm.models.get_pretrained_cfg(model)
        if cfg is None or not cfg.hf_hub_id:
            tags = timm.list_pretrained(f"{model.split('.')[0]}.*")[:4]
            raise UserError(f"--pretrained timm: timm has no hub weights for {model!r}"
                            + (f"; pretrained tags: {tags}" if tags else "") + " (or pass --pretrained PATH)")
        cfg, repo_id, name, snapshot = cfg.to_dict(), cfg.hf_hub_id, model, ""
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return HubWeights(name, repo_id, int(size), list(cfg.get("mean", (0.485, 0.456, 0.406))),
                      list(cfg.get("std", (0.229, 0.224, 0.225))), snapshot)


def check_hub_weights(weights: HubWeights) -> str:
    """The cached weight file (downloaded first if there is a network), so that a missing file stops the run
    in one line before anything is written."""
    hub = _hub_api()
    for filename in WEIGHT_FILES:
        cached = hub.try_to_load_from_cache(weights.repo_id, filename)
        if isinstance(cached, str):
            return cached
    for filename in WEIGHT_FILES:
        path = fetch(weights.repo_id, filename, weights.model_name)
        if path:
            return path
    raise UserError(f"--pretrained: {weights.repo_id} has none of {WEIGHT_FILES}")


def create_hub_model(weights: HubWeights, num_classes: int, in_chans: int, drop_rate: float,
                     drop_path_rate: float = 0.0) -> nn.Module:
    """timm.create_model(pretrained=True): the cached weights, a fresh classifier, the first conv adapted, and the
    stochastic depth asked for (timm passes drop_path_rate to the architectures that have it)."""
    import timm
    file = check_hub_weights(weights)
    # timm's loader reads the cached file (a hub model: its cached folder) with no network round trip, and
    # handles the head and the first conv as for any pretrained model.
    overlay = None if weights.snapshot else {"file": file}
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    try:
        model = timm.create_model(weights.timm_name(), pretrained=True, pretrained_cfg_overlay=overlay,
                                  num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **extra)
    except UserError:
        raise
    except TypeError as err:  # an architecture without stochastic depth refuses the keyword
        if not extra:
            raise UserError(f"--pretrained: loading {weights.repo_id} failed ({str(err).splitlines()[0][:160]})") \
                from None
        raise UserError(f"model {weights.repo_id} does not support drop_path_rate ({str(err)[:80]}); set it to 0") \
            from None
    except Exception as err:  # timm and the hub raise many kinds; all mean "these weights did not load"
        raise UserError(f"--pretrained: loading {weights.repo_id} failed ({str(err).splitlines()[0][:160]})") from None
    print(f"pretrained: {weights.repo_id} through timm's hub loader, classifier re-initialised for {num_classes} "
          f"classes" + (", first conv adapted to grey input" if in_chans == 1 else ""))
    return model
