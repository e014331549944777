"""Loading a frozen open_clip CLIP: model name + pretrained tag, a local checkpoint, or random weights.

Offline, a tag whose weights are not cached fails at once with a message that says which file
is missing and where to put it, instead of open_clip's retries. open_clip checks a tag's
activation only when it loads the tag itself; the project hands it a file, so the check is here:
a model whose activation (GELU or QuickGELU) differs from the one the tag's weights were trained
with is an error naming the right model, never a silently different network.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)



class UnknownModelError(ValueError):
    """The model name is not an open_clip ViT CLIP config."""


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are neither cached nor reachable."""


class CheckpointError(ValueError):
    """A file given as ``pretrained`` that does not hold weights of this model."""


class ActivationMismatchError(ValueError):
    """A pretrained tag whose weights were trained with another activation than the model's."""


@dataclass
class Backbone:
    """A frozen CLIP and what preprocessing and tokenisation need to know about it."""

    clip: open_clip.model.CLIP
    tokenizer: object
    model_name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def device(self) -> torch.device:
        return self.clip.logit_scale.device


def load_backbone(model_name: str, pretrained: str | None = None, device: str = "cpu") -> Backbone:
    """Build `model_name` with weights from a tag, a file, or none (random init), frozen in eval mode."""
    check_backbone(model_name, pretrained)
    checkpoint = resolve_weights(model_name, pretrained)
    try:
        clip = open_clip.create_model(model_name, pretrained=checkpoint, device=device)
    except Exception as err:  # noqa: BLE001 - torch, safetensors and open_clip each raise their own kinds
        if checkpoint is None:
            raise
        raise CheckpointError(f"pretrained={checkpoint}: open_clip cannot load it into {model_name} "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:300]}); pass the "
                              f"checkpoint of {model_name}'s architecture, or the model it was "
                              "trained as") from err
    clip = clip.eval().requires_grad_(False)
    pre = open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}
    size = clip.visual.image_size
    return Backbone(
        clip=clip,
        tokenizer=open_clip.get_tokenizer(model_name),
        model_name=model_name,
        pretrained=pretrained,
        image_size=size[0] if isinstance(size, (tuple, list)) else size,
        mean=tuple(pre.get("mean", OPENAI_DATASET_MEAN)),
        std=tuple(pre.get("std", OPENAI_DATASET_STD)),
    )


def check_backbone(model_name: str, pretrained: str | None) -> None:
    """Everything about (model, pretrained) that can be known without loading the weights: a
    known ViT config; a checkpoint file that looks like one, or a known tag whose activation is
    the model's. Each problem is one error naming the setting and the fix."""
    vit_models = [m for m in open_clip.list_models() if "ViT" in m or m in ("tiny-clip", "demo-clip")]
    if model_name not in open_clip.list_models():
        raise UnknownModelError(
            f"unknown model {model_name!r}; use an open_clip ViT config such as "
            f"'ViT-B-16-quickgelu' (for OpenAI weights) or one of the project's: tiny-clip, demo-clip. "
            f"ViT configs available: {', '.join(sorted(vit_models)[:40])}, ...")
    model_cfg = open_clip.get_model_config(model_name)
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if (not isinstance(vision.get("layers"), int) or "timm_model_name" in vision or "hf_model_name" in text
            or model_cfg.get("custom_text")):
        raise UnknownModelError(f"{model_name!r} is not a ViT CLIP with an open_clip text tower; "
                                "only those can carry prompts here")
    if pretrained is None:
        return
    if os.path.exists(pretrained):
        _check_checkpoint_file(pretrained)
        return
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        hint = f"known tags for {model_name}: {', '.join(tags)}" if tags else f"{model_name} has no known tags"
        raise WeightsNotFoundError(
            f"pretrained={pretrained!r} is neither a checkpoint file nor a known tag ({hint}); "
            "pass an existing checkpoint path or a tag")
    trained_quick = bool(cfg.get("quick_gelu", False))
    if bool(model_cfg.get("quick_gelu", False)) != trained_quick:
        raise ActivationMismatchError(_activation_message(model_name, pretrained, trained_quick))


def _activation_message(model_name: str, pretrained: str, trained_quick: bool) -> str:
    """Which model carries the tag's activation (the name with or without -quickgelu)."""
    trained, model_has = ("QuickGELU", "GELU") if trained_quick else ("GELU", "QuickGELU")
    right = model_name + "-quickgelu" if trained_quick else model_name.removesuffix("-quickgelu")
    use = (f"use model {right!r}" if right != model_name and right in open_clip.list_models()
           else f"use a model config with quick_gelu: {str(trained_quick).lower()}")
    return (f"model {model_name!r} uses {model_has}, but the {pretrained!r} weights were trained with "
            f"{trained} and would compute other features; {use} with pretrained {pretrained!r}")


# First bytes of the files torch.load / safetensors read: a zip archive (torch.save, OpenAI's
# TorchScript files) or a pickle (older torch.save); safetensors starts with its header's length.
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


def _check_checkpoint_file(path: str) -> None:
    if not os.path.isfile(path):
        raise CheckpointError(f"pretrained={path} is a folder; pass the checkpoint file inside it")
    with open(path, "rb") as f:
        head = f.read(10)
    is_safetensors = len(head) == 10 and head[8:10] == b'{"'
    if not is_safetensors and not head.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError(f"pretrained={path} is not a checkpoint (neither a torch.save file nor "
                              "safetensors); pass a .pt, .bin or .safetensors file with the model's "
                              "weights, or a pretrained tag such as openai")
    check_weights_file(path)


def check_weights_file(path: str) -> None:
    """A weights file that is whole, checked without loading it: a safetensors header that parses
    and tensors that end where the file ends; a zip archive (torch.save) whose directory reads.
    A truncated download or copy is one CheckpointError naming the file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if head.startswith(b"PK"):
            problem = _zip_problem(path)
        elif len(head) == 8 and f.read(2) == b'{"':
            f.seek(8)
            problem = _safetensors_problem(f, int.from_bytes(head, "little"), size)
        else:
            problem = None  # a pickle (older torch.save): only loading it tells
    if problem:
        raise CheckpointError(f"weights file {path} is damaged: {problem}; download or copy it again")


def _safetensors_problem(f, header_bytes: int, size: int) -> str | None:
    if 8 + header_bytes > size:
        return f"its header should be {header_bytes} bytes, but the file holds {size} bytes in all (cut short?)"
    try:
        header = json.loads(f.read(header_bytes))
        end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "its header is not a safetensors header"
    if 8 + header_bytes + end != size:
        return f"its tensors need {8 + header_bytes + end} bytes, but the file holds {size} (cut short?)"
    return None


def _zip_problem(path: str) -> str | None:
    try:
        with zipfile.ZipFile(path):
            return None
    except zipfile.BadZipFile as err:
        return f"it is not a complete zip archive ({err}; cut short?)"


def resolve_weights(model_name: str, pretrained: str | None, download: bool = True) -> str | None:
    """The local file holding `pretrained` weights (downloading only when the host is reachable;
    with ``download=False`` only checking that it could be)."""
    if pretrained is None:
        return None
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    cached, where = _cached_file(cfg)
    if cached:
        return cached
    host = "huggingface.co" if cfg.get("hf_hub") else cfg["url"].split("/")[2]
    if not _reachable(host):
        raise WeightsNotFoundError(
            f"weights for {model_name} / {pretrained} are not cached and {host} cannot be reached. "
            f"Download {where} on a machine with internet access and put it in the cache here "
            f"(Hugging Face: HF_HOME, default ~/.cache/huggingface), or pass pretrained=/path/to/checkpoint")
    return open_clip.pretrained.download_pretrained(cfg) if download else None


def _cached_file(cfg: dict) -> tuple[str | None, str]:
    """(cached path or None, a description of the expected file)."""
    if cfg.get("hf_hub"):
        from huggingface_hub import hf_hub_download
        repo, filename = os.path.split(cfg["hf_hub"])
        filename = filename or "open_clip_pytorch_model.bin"
        candidates = [filename[: filename.rfind(".")] + ".safetensors", filename]
        if filename == "open_clip_pytorch_model.bin":
            candidates[0] = "open_clip_model.safetensors"
        for name in candidates:
            try:
                return hf_hub_download(repo, name, local_files_only=True), ""
            except Exception:  # noqa: BLE001 - any miss means "not cached"
                continue
        return None, f"the Hugging Face repo file {repo}/{filename}"
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
    return (str(target) if target.is_file() else None), str(target)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
