"""The counts of one verification, by node and by kind, and their energy: SNN at each T, the
ANN once, FP32 and INT8 side by side (rules: :mod:`onnx2snn.verification.work`, costs:
:mod:`onnx2snn.verification.energy`)."""

from __future__ import annotations

import math

from .energy import FLOAT_KINDS, FP32, INT8, KINDS, RULES, SOURCE, add_counts, by_kind_pj, energy_pj, float_share
from ..snn.norms import SumNorm, sum_norm_extra
from .work import compensation, scaled, total

METHOD = ("Per sample, ANN and SNN by the same rules. Kinds: ac (accumulate), mac, add, mul, cmp, exp, div, sqrt "
          "(float element-wise work), neuron (one update per neuron per step). Events are counted where they are "
          "consumed, with their multiplicity (a k-spike is k events, popcount(k) binary-weighted), carried through "
          "reshape / transpose / concat / split / slice / pad / pooling / upsampling / adds: each event costs one "
          "ac per synapse it reaches. Weight layers (Conv, Gemm / Linear, BatchNorm, MatMul with a constant "
          "weight) on analog input: MACs (padding taps excluded) each time they run: once before the first "
          "neuron, every step inside the core. Readouts on spikes: ac per event and synapse; on analog values: "
          "one add per input element per step, then MACs once. Time-averaged ops: their own work every step, plus "
          "an add and a multiply per averaged input and output element every step after the first (at t = 1 the "
          "output is f(x_1)); on the running sums (LayerNorm): an add per input and output element, per row 2 "
          "multiplies and an add, per channel a multiply (t beta) instead; an increment product (both operands "
          "spikes): an ac per operand event per partner element it meets plus one for the operand's running sum, "
          "and an add and a multiply per output element every step after the first. Weight-free ops on analog "
          "values (residual "
          "adds, scalings): their work every step; on events: routing, free. Bias: one ac per output element "
          "(per step inside the core). Post-processing: weight layers' MACs once in both, the rest in neither. "
          "Energy: FP32 table (the field's convention) and INT8 table (8-bit weights, 32-bit integer accumulators "
          "and neuron potentials, float work in FP32) for both the SNN and the ANN. " + SOURCE)


def _rewritten_module(mon, name: str, node):
    """The time-averaged module at a node of the SNN (None when there is none)."""
    target = node.target if node.op == "call_module" else f"averaged_{name}"
    try:
        return mon.snn.rewritten.get_submodule(target)
    except AttributeError:
        return None


def _rewritten_kinds(mon, name: str, node) -> list[str] | None:
    """The input kinds (dynamic / static / constant) of the time-averaged module at a node."""
    return list(getattr(_rewritten_module(mon, name, node), "kinds", None) or []) or None


def _sum_domain(mon, name: str, node) -> "int | None":
    """Multiplies per step of a time-averaged op run on the sums (its scaled knots and
    intercepts), None when it runs on the averages."""
    mod = _rewritten_module(mon, name, node)
    if not getattr(mod, "sum_domain", False):
        return None
    return int(mod.fn.knots.numel() + mod.fn.intercept.numel())


def node_rules(mon) -> list[dict]:
    """Per node: its ANN counts and the SNN's counts (``once``, ``step``: per step, ``later``: per
    step after the first (a time-averaged op's running sums, 1/t, t and differences: at t = 1 its
    output is f(x_1), none of them is needed), ``events``:
    the layer key whose measured events cost an accumulate each)."""
    W = mon.work
    nodes = {n.name: n for n in mon.snn.ann.graph.nodes}
    key_of = {v: k for k, v in mon.node_of.items()}
    product_of = {v: k for k, v in getattr(mon, "products", {}).items()}
    neuron_of = {n.name: n.target for n in nodes.values() if n.op == "call_module" and n.target in mon.neurons}
    rows = []
    for a in mon.analysis.nodes:
        if a.part not in ("core", "readout", "post") or a.name not in W.counts:
            continue
        c, n, key = W.counts[a.name], nodes[a.name], key_of.get(a.name)
        if a.part == "post" and key is None:
            continue  # post-processing: in neither
        once, step, later, events, form = {}, {}, {}, None, a.form
        if a.form in ("static", "post-processing"):
            once = c
        elif a.name in neuron_of:
            tgt = neuron_of[a.name]
            step, form = {"neuron": float(mon.size.get(tgt) or W.out_numel.get(a.name, 0))}, "neuron"
        elif key is not None:
            kind = mon.weighted[key]
            bias = {"ac": c["ac"]} if "ac" in c else {}
            if kind == "analog per step":
                step = c
            elif kind == "spiking":
                step, events, form = bias, key, "spike-driven"
            elif kind == "readout" and key in mon.readout_analog:
                once, form = c, "readout (analog)"
                step = {"add": float(math.prod(W.in_shape.get(a.name, (0,))))}
            elif kind == "readout":
                once, events = bias, key
            else:
                once = c
        elif a.name in product_of:  # increment product: ac per operand event (measured), output per step
            out = float(W.out_numel.get(a.name, 0))
            later, events, form = {"add": out, "mul": out}, product_of[a.name], "increment product"
        elif a.role == "averaged":
            m = _rewritten_module(mon, a.name, n)
            if isinstance(m, SumNorm):  # a LayerNorm on the running sums
                step, later, form = c, sum_norm_extra(m, W.out_numel.get(a.name, 0)), "time-averaged (sums)"
            else:
                step, later = c, compensation(W, a.name, _rewritten_kinds(mon, a.name, n),
                                              _sum_domain(mon, a.name, n))
        elif a.role == "maxpool" and a.part == "core":
            step = total([c, {"add": float(sum(W.in_numels.get(a.name, [])) + W.out_numel.get(a.name, 0))}])
            form = "spiking max-pool"
        elif a.part == "readout":
            once = c
        elif a.name in mon.analog_nodes:
            step, form = c, "analog per step"
        else:
            form = "routing (events)"
        rows.append({"node": a.name, "name": key or a.name, "op": a.op, "form": form,
                     "ann": W.exact.get(a.name, c), "once": once,
                     "step": step, "later": later, "events": events})
    return rows


def compose(mon) -> tuple[dict, list[dict]]:
    """(``ops``: totals per T and the ANN's, per kind and in energy; per-layer counts per T)."""
    cps, N = mon.checkpoints, max(mon.samples, 1)
    if mon.work is None:
        return {"snn": {}, "method": METHOD, "notes": list(mon.notes)}, []
    rows = node_rules(mon)
    ann = total([r["ann"] for r in rows])
    per_layer, snn = [], {t: {} for t in cps}
    syn_cum = {k: v.cumsum(0) for k, v in mon.synops.items()}
    for r in rows:
        counts = {}
        for t in cps:
            c = total([r["once"], scaled(r["step"], t), scaled(r["later"], t - 1)])
            if r["events"] is not None and r["events"] in syn_cum:
                add_counts(c, {"ac": float(syn_cum[r["events"]][t - 1]) / N})
            counts[t] = c
            add_counts(snn[t], c)
        if any(v for c in counts.values() for v in c.values()) or any(r["ann"].values()):
            per_layer.append({"name": r["name"], "op": r["op"], "form": r["form"], "ann": r["ann"], "snn": counts})
    ann_pj, ann_int = energy_pj(ann, FP32), energy_pj(ann, INT8)
    ann_macs = ann.get("mac", 0.0)
    totals = {}
    for t in cps:
        c = {k: snn[t].get(k, 0.0) for k in KINDS}
        syn = sum(float(syn_cum[k][t - 1]) / N for k in syn_cum if k not in mon.readout_analog
                  and k not in getattr(mon, "products", {}))
        e32, e8 = energy_pj(c, FP32), energy_pj(c, INT8)
        totals[t] = {"synops": syn, "macs": c["mac"], "nonspiking_flops": sum(c[k] for k in FLOAT_KINDS),
                     "neuron_updates": c["neuron"], "counts": c,
                     "synops_over_ann_macs": syn / ann_macs if ann_macs else 0.0,
                     "energy_pj": e32, "energy_by_kind_pj": by_kind_pj(c, FP32),
                     "energy_ratio_vs_ann": e32 / ann_pj if ann_pj else 0.0,
                     "float_share": float_share(c, FP32),
                     "energy_int8_pj": e8, "energy_by_kind_int8_pj": by_kind_pj(c, INT8),
                     "energy_ratio_vs_int8_ann": e8 / ann_int if ann_int else 0.0}
    ann_full = {k: ann.get(k, 0.0) for k in KINDS}
    ops = {"ann_macs": ann_macs, "ann_nonspiking_flops": sum(ann_full[k] for k in FLOAT_KINDS),
           "ann_counts": ann_full, "ann_energy_pj": ann_pj, "ann_energy_by_kind_pj": by_kind_pj(ann_full, FP32),
           "ann_energy_int8_pj": ann_int, "ann_float_share": float_share(ann_full, FP32), "snn": totals,
           "costs": {"fp32_pj": dict(FP32), "int8_pj": dict(INT8), "source": SOURCE, "rules": dict(RULES)},
           "constants": {"accumulate_pj": FP32["ac"], "multiply_accumulate_pj": FP32["mac"],
                         "float_add_pj": FP32["add"], "float_multiply_pj": FP32["mul"],
                         "process": "45 nm (Horowitz, ISSCC 2014)"},
           "method": METHOD, "notes": list(mon.notes)}
    return ops, per_layer


__all__ = ["compose", "node_rules", "METHOD"]
