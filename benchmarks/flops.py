"""Minimum FLOP counts of each update: the matmuls the math needs, forward and backward.

A dense layer with batch B, fan-in i, fan-out o costs 2·B·i·o FLOPs forward; backward costs the same
again for the weight gradient (if the layer is trained) and again for the input gradient (if
something upstream needs it). Elementwise work (activations, Adam, Polyak) is ignored: it is O(params)
or O(B·width), small next to the matmuls. Work an implementation wastes (unused target critics,
weight gradients nobody applies) is not counted, so the achieved fraction shows waste as a loss.
"""
from __future__ import annotations


def mlp_layers(inp: int, hidden: list[int], out: int) -> list[tuple[int, int]]:
    dims = [inp, *hidden, out]
    return list(zip(dims[:-1], dims[1:]))


def forward(batch: int, layers) -> float:
    return sum(2.0 * batch * i * o for i, o in layers)


def backward(batch: int, layers, weights: bool, first_input_cols: int = 0) -> float:
    """Weight grads (if `weights`) + input grads of every layer but the first, plus the first layer's
    input grad restricted to `first_input_cols` columns (e.g. the action part of a critic's input)."""
    total = forward(batch, layers) if weights else 0.0
    total += forward(batch, layers[1:])
    total += 2.0 * batch * first_input_cols * layers[0][1]
    return total


def adaptive_bc_update(obs: int, act: int, batch: int = 256, hidden: int = 256, num_critics: int = 10,
                       num_target: int = 2, policy_delay: int = 2) -> float:
    actor = mlp_layers(obs, [hidden, hidden], act)
    critic = mlp_layers(obs + act, [hidden, hidden], 1)
    critic_step = (forward(batch, actor)  # target actor on s'
                   + num_target * forward(batch, critic)  # only the M sampled target critics
                   + num_critics * (forward(batch, critic) + backward(batch, critic, weights=True)))
    actor_step = (forward(batch, actor)
                  + num_critics * (forward(batch, critic) + backward(batch, critic, weights=False, first_input_cols=act))
                  + backward(batch, actor, weights=True))
    return critic_step + actor_step / policy_delay


def spot_policy_update(obs: int, act: int, batch: int = 256, hidden: int = 256, vae_hidden: int = 750,
                       policy_delay: int = 2) -> float:
    actor = mlp_layers(obs, [hidden, hidden], act)
    critic = mlp_layers(obs + act, [hidden, hidden], 1)
    latent = 2 * act
    encoder = mlp_layers(obs + act, [vae_hidden, vae_hidden], 2 * latent)  # mean and log-std
    decoder = mlp_layers(obs + latent, [vae_hidden, vae_hidden], act)
    critic_step = forward(batch, actor) + 2 * forward(batch, critic) + 2 * (
        forward(batch, critic) + backward(batch, critic, weights=True))
    actor_step = (forward(batch, actor)
                  + forward(batch, critic) + backward(batch, critic, weights=False, first_input_cols=act)
                  + forward(batch, encoder) + backward(batch, encoder, weights=False, first_input_cols=act)
                  + forward(batch, decoder) + backward(batch, decoder, weights=False, first_input_cols=latent)
                  + backward(batch, actor, weights=True))
    return critic_step + actor_step / policy_delay


def spot_vae_update(obs: int, act: int, batch: int = 256, vae_hidden: int = 750) -> float:
    latent = 2 * act
    encoder = mlp_layers(obs + act, [vae_hidden, vae_hidden], 2 * latent)
    decoder = mlp_layers(obs + latent, [vae_hidden, vae_hidden], act)
    return (forward(batch, encoder) + backward(batch, encoder, weights=True)
            + forward(batch, decoder) + backward(batch, decoder, weights=True, first_input_cols=latent))


def actor_forward(obs: int, act: int, batch: int = 1, hidden: int = 256) -> float:
    return forward(batch, mlp_layers(obs, [hidden, hidden], act))
