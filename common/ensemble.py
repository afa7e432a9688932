"""An ensemble of same-shaped MLPs evaluated together, the critics of both algorithms and the generator's SAC.

Each layer's weights are one [num, in, out] tensor, so every layer is one batched matmul over the members;
a subset of members can run alone (REDQ's target critics), and `detach_params` uses the weights as constants,
so a loss on the output (an actor's) reaches the input without building a graph into the critic's weights.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


def linear_default_init_(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """nn.Linear's default initialization per member: U(±1/sqrt(fan_in)) for weight, then bias."""
    bound = 1.0 / math.sqrt(weight.shape[1])
    weight.uniform_(-bound, bound)
    bias.uniform_(-bound, bound)


class EnsembleMLP(nn.Module):
    """`num` MLPs sizes[0] → … → sizes[-1] with ReLU between layers; input (B, in) shared by all members, or
    (num, B, in) per member; output (n, B, out) for the n members asked for."""

    def __init__(self, num: int, sizes: list[int],
                 init: Callable[[torch.Tensor, torch.Tensor], None] = linear_default_init_):
        super().__init__()
        self.num = num
        pairs = list(zip(sizes[:-1], sizes[1:]))
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(num, i, o)) for i, o in pairs])
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(num, 1, o)) for _, o in pairs])
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):  # layer by layer: weight, then bias
                init(w, b)

    def forward(self, x: torch.Tensor, members: torch.Tensor | None = None,
                detach_params: bool = False) -> torch.Tensor:
        weights, biases = list(self.weights), list(self.biases)
        if members is not None:  # gather only the chosen members' weights: the others never run
            weights = [w.index_select(0, members) for w in weights]
            biases = [b.index_select(0, members) for b in biases]
        if detach_params:
            weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
        # A shared input is expanded (a view, no copy); outputs stay contiguous [n, B, out], which keeps the
        # ReLU backward fast (on a transposed view it is ~25x slower).
        h = x.expand(weights[0].shape[0], *x.shape) if x.dim() == 2 else x
        last = len(weights) - 1
        for k, (w, b) in enumerate(zip(weights, biases)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = h.relu_()
        return h

    def member(self, x: torch.Tensor, index: int, detach_params: bool = False) -> torch.Tensor:
        """One member alone on (B, in) -> (B, out), as plain matmuls (e.g. TD3's Q1 in the actor loss)."""
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases)):
            w, b = w[index], b[index]
            if detach_params:
                w, b = w.detach(), b.detach()
            x = torch.addmm(b, x, w)
            if k < last:
                x = torch.relu(x)
        return x
