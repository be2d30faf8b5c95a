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
    the outputs; constants (get_attr) are copied along. Outputs that are not nodes
    (literals of the original graph's output) are returned as they are.
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
    for o in outputs:
        if isinstance(o, fx.Node) and o not in env and o.op == "get_attr":
            env[o] = g.node_copy(o)
    g.output(tuple(env[o] if isinstance(o, fx.Node) else o for o in outputs))
    sub = fx.GraphModule(gm, g, class_name=name)
    sub.graph.eliminate_dead_code()
    sub.delete_all_unused_submodules()
    sub.recompile()
    return sub


__all__ = ["extract"]
