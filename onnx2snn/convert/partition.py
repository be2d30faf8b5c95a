"""Cut a twin's fx graph into sub-GraphModules that pass values to each other.

The spiking network runs three parts of the rewritten twin: a *static* prefix (what
comes before the first neuron: with direct encoding it is the same at every step, so
it runs once), the spiking *core* (runs on [T*B, ...]) and the *head* (readout and
post-processing, run once on time-averaged values). Each part is its own GraphModule
sharing the modules of the rewritten twin.
"""

from __future__ import annotations

import torch.fx as fx


def extract(gm: fx.GraphModule, nodes: list[fx.Node], inputs: list[fx.Node], outputs: list[fx.Node],
            name: str) -> fx.GraphModule:
    """A GraphModule computing ``outputs`` (a tuple) from ``inputs`` with ``nodes``.

    ``nodes`` must be in topological order and contain everything between the inputs and
    the outputs; constants (get_attr) are copied along.
    """
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in inputs:
        env[n] = g.placeholder(n.name)
    for n in nodes:
        if n in env:
            continue
        for a in n.all_input_nodes:
            if a not in env and a.op == "get_attr":
                env[a] = g.node_copy(a)
        env[n] = g.node_copy(n, lambda a: env[a])
    g.output(tuple(env[o] for o in outputs))
    sub = fx.GraphModule(gm, g, class_name=name)
    sub.graph.eliminate_dead_code()
    sub.delete_all_unused_submodules()
    sub.recompile()
    return sub


def boundary(nodes: set[fx.Node], consumers: set[fx.Node]) -> list[fx.Node]:
    """Nodes of ``nodes`` used by some node in ``consumers`` (or by the output)."""
    out = []
    for n in nodes:
        if any(u in consumers or u.op == "output" for u in n.users):
            out.append(n)
    return out


__all__ = ["extract", "boundary"]
