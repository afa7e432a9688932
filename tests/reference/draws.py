"""Injected random draws: both implementations of an update see the same noise, critic subset, dropout masks
and VAE noise, whatever order or kernels they use to ask for them.

Inside `inject(draws)`, torch.randn / torch.randn_like return the next queued standard-normal tensor,
torch.randperm the next queued permutation and F.dropout multiplies by the next queued keep-mask (÷ (1 − p));
torch.rand of shape (k, *mask shape), how spot.networks.dropout_keep_masks draws k masks as uniforms compared with
p, returns the next k keep-masks as those uniforms (1.0 kept, 0.0 dropped),
each checked against the shape asked for. An implementation that asks for a draw the other does not, or in
another shape, fails loudly instead of drifting.
"""
from __future__ import annotations

import contextlib
import dataclasses

import torch
import torch.nn.functional as F


@dataclasses.dataclass
class Draws:
    normal: list[torch.Tensor] = dataclasses.field(default_factory=list)  # randn / randn_like, in call order
    perm: list[torch.Tensor] = dataclasses.field(default_factory=list)  # randperm
    masks: list[torch.Tensor] = dataclasses.field(default_factory=list)  # dropout keep-masks (0/1)


class DrawError(AssertionError):
    pass


def _pop(queue: list, kind: str, shape) -> torch.Tensor:
    if not queue:
        raise DrawError(f"asked for one more {kind} draw of shape {tuple(shape)} than injected")
    value = queue.pop(0)
    if tuple(value.shape) != tuple(shape):
        raise DrawError(f"{kind} draw of shape {tuple(shape)} asked for; the next injected one is {tuple(value.shape)}")
    return value


@contextlib.contextmanager
def inject(draws: Draws):
    """Patches torch's random calls to hand out copies of `draws` (the caller's lists are not consumed)."""
    normal, perm, masks = list(draws.normal), list(draws.perm), list(draws.masks)
    real = (torch.randn, torch.randn_like, torch.randperm, F.dropout, torch.rand)

    def randn(*size, **kwargs):
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return _pop(normal, "normal", size).clone()

    def randn_like(tensor, **kwargs):
        return _pop(normal, "normal", tensor.shape).to(tensor.dtype).clone()

    def randperm(n, **kwargs):
        return _pop(perm, "randperm", (n,)).clone()

    def rand(*size, **kwargs):
        size = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        return torch.stack([_pop(masks, "dropout mask", size[1:]) for _ in range(size[0])])

    def dropout(input, p=0.5, training=True, inplace=False):
        if not training or p == 0.0:
            return input
        return input * _pop(masks, "dropout mask", input.shape) / (1.0 - p)

    torch.randn, torch.randn_like, torch.randperm, F.dropout, torch.rand = randn, randn_like, randperm, dropout, rand
    try:
        yield
    finally:
        torch.randn, torch.randn_like, torch.randperm, F.dropout, torch.rand = real
    left = {k: len(q) for k, q in (("normal", normal), ("randperm", perm), ("dropout mask", masks)) if q}
    if left:
        raise DrawError(f"injected draws left unused: {left}")
