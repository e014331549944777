"""Named hook points and the objects that receive them.

Every analysable activation has a name, e.g. ``vision.blocks.3.attn.pattern``. A *recorder*
says which names it wants and receives their tensors; ``Cache`` stores them, the statistics
accumulators reduce them on the fly. Asking for nothing costs nothing: the model only takes the
explicit (unfused) attention path when some attention hook of that block is wanted.

Hook points per block (tower = ``vision`` or ``text``; N tokens, H heads, D width, d = D / H):
    resid_pre          [B, N, D]     block input, after prompt insertion
    resid_post         [B, N, D]     block output (the residual stream after attention and MLP)
    attn.pattern       [B, H, N, N]  attention probabilities
    attn.q, attn.k, attn.v  [B, H, N, d]
    attn.lam           [B, H, N]     attention mass on original (non-prompt) keys, λ
    attn.token_part    [B, H, N, d]  Σ_{j∈X} A_ij v_j  (= λ · prompt-free attention)
    attn.prompt_part   [B, H, N, d]  Σ_{p∈P} A_ip v_p  (= (1 − λ) · the bias term)
"""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Protocol

import torch

HOOK_POINTS = ("resid_pre", "resid_post", "attn.pattern", "attn.q", "attn.k", "attn.v",
               "attn.lam", "attn.token_part", "attn.prompt_part")


class Recorder(Protocol):
    def wants(self, name: str) -> bool: ...

    def record(self, name: str, value: torch.Tensor) -> None: ...


class Cache(dict):
    """Stores the wanted activations by name; ``names`` is None (all), glob patterns, or a predicate.

    ``keep_graph=True`` keeps tensors attached to the autograd graph (for gradient-based relevance).
    """

    def __init__(self, names: None | str | Iterable[str] | Callable[[str], bool] = None,
                 keep_graph: bool = False):
        super().__init__()
        if names is None:
            self._wants = lambda name: True
        elif callable(names):
            self._wants = names
        else:
            patterns = [names] if isinstance(names, str) else list(names)
            self._wants = lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)
        self.keep_graph = keep_graph

    def wants(self, name: str) -> bool:
        return self._wants(name)

    def record(self, name: str, value: torch.Tensor) -> None:
        self[name] = value if self.keep_graph else value.detach()

    def blocks(self, tower: str, point: str) -> list[torch.Tensor]:
        """One hook point of every block of ``tower``, in block order (``vision``, ``attn.pattern``)."""
        found = {}
        for name, value in self.items():
            head, _, rest = name.partition(f"{tower}.blocks.")
            index, _, suffix = rest.partition(".")
            if not head and suffix == point and index.isdigit():
                found[int(index)] = value
        if sorted(found) != list(range(len(found))) or not found:
            raise KeyError(f"the cache holds {tower}.blocks.*.{point} for blocks {sorted(found)}; capture "
                           f"'{tower}.blocks.*.{point}' over a whole forward pass")
        return [found[i] for i in range(len(found))]

    def stack(self, tower: str, point: str) -> torch.Tensor:
        """``blocks`` stacked into one tensor [n_blocks, ...] (as TransformerLens's stack_activation)."""
        return torch.stack(self.blocks(tower, point))


class Steer(Cache):
    """A ``Cache`` that also adds fixed tensors to named hook points (before recording them): an
    intervention on the residual stream, e.g. the known-truth test's oracle adding −δ at one block.

    ``adds`` maps a hook name to a tensor over the original tokens, [N, D] or [B, N, D]; a longer
    sequence (prompts after the patches) is changed on its first N tokens only.
    """

    def __init__(self, adds: dict[str, torch.Tensor], names=()):
        super().__init__(names)
        self.adds = adds

    def edit(self, name: str, value: torch.Tensor) -> torch.Tensor:
        add = self.adds.get(name)
        if add is None:
            return value
        n = add.shape[-2]
        return torch.cat([value[:, :n] + add.to(value), value[:, n:]], dim=1)


class Scope:
    """A recorder seen from one block: prefixes names, and answers nothing when there is no recorder."""

    def __init__(self, recorder: Recorder | None, prefix: str):
        self.recorder, self.prefix = recorder, prefix

    def wants(self, point: str) -> bool:
        return self.recorder is not None and self.recorder.wants(f"{self.prefix}.{point}")

    def record(self, point: str, value: torch.Tensor) -> None:
        if self.wants(point):
            self.recorder.record(f"{self.prefix}.{point}", value)

    def edit(self, point: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` as a recorder that intervenes (``Steer``) changes it; unchanged otherwise."""
        edit = getattr(self.recorder, "edit", None)
        return value if edit is None else edit(f"{self.prefix}.{point}", value)

    def wants_attention(self) -> bool:
        return any(self.wants(p) for p in HOOK_POINTS if p.startswith("attn."))
