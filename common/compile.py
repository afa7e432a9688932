"""The backward partition `common.utils.compile_in_place` / `compiled` use on a CPU (imported only when compiling:
it loads inductor, ~1.4 s)."""
from __future__ import annotations

import torch
from torch._functorch.partitioners import default_partition
from torch._inductor.custom_graph_pass import CustomPartitionerFn, get_hash_for_files


class SavedActivations(CustomPartitionerFn):
    """AOTAutograd's default partition: the backward gets the forward's own tensors, nothing recomputed.

    default_partition also copies each random op into the backward graph, unused there; inductor runs it anyway (it
    has a side effect on the generator), so every compiled backward would draw again and shift the random stream.
    Those dead draws are removed."""

    def __call__(self, gm, joint_inputs, **kwargs):
        forward, backward = default_partition(gm, joint_inputs, num_fwd_outputs=kwargs["num_fwd_outputs"],
                                              static_lifetime_input_indices=kwargs.get("static_lifetime_input_indices"))
        dead = [node for node in backward.graph.nodes if node.op == "call_function" and not node.users
                and torch.Tag.nondeterministic_seeded in getattr(node.target, "tags", ())]
        for node in dead:
            backward.graph.erase_node(node)
        if dead:
            backward.graph.lint()
            backward.recompile()
        return forward, backward

    def uuid(self):  # part of inductor's cache key: changes with this file
        return get_hash_for_files((__file__,))
