"""The search's space: the candidates of a settings search, each a ``dataclasses.replace`` of the
conversion config (:class:`onnx2snn.ConvertConfig`), their order (the default first, then by how
many fields differ), how a candidate is named in the report, and the twin it is built from."""

from __future__ import annotations

import itertools
from dataclasses import replace

import torch.fx as fx

from ..config import ConvertConfig
from ..graph.averaged import drop_operand_reencoders, has_operand_reencoders
from ..graph.piecewise import has_fittable, piecewise_activations
from ..graph.source import copy_twin

REENCODE_CHOICES = (2, 3, 4)  # spikes per step of re-encoding neurons tried (with the given one)
# the fields of ConvertConfig a candidate changes (besides timesteps): signed_relu and _ibt change together
VARIED = ("threshold", "levels", "mse_tolerance", "v_init", ("signed_relu", "signed_ibt"), "reencode_levels",
          "spike_products", "pwl_activations")


def by_t(c: ConvertConfig) -> bool:
    """Thresholds depend on the T they are designed for ("mse"; a per-layer re-encoder plan,
    ``reencode_levels="auto"``, is made for it too)."""
    return c.threshold == "mse" or c.reencode_levels == "auto"


def _signed(c: ConvertConfig) -> bool:
    return bool(c.signed_relu or c.signed_ibt)


def label(c: ConvertConfig, reencoders: bool) -> str:
    """A candidate in a few words (what the report shows)."""
    p = "mse" if c.threshold == "mse" else f"p{c.threshold:g}" if isinstance(c.threshold, float) else str(c.threshold)
    out = f"{p}, levels={c.levels}"
    if c.mse_tolerance:
        out += f", tol={c.mse_tolerance:g}"
    if c.v_init != 0.5:
        out += f", v_init={c.v_init:g}"
    if not _signed(c):
        out += ", unsigned"
    if reencoders:
        out += f", reencode={c.reencode_levels}"
    if c.spike_products:
        out += ", spike products"
    if c.pwl_activations:
        out += ", pwl"
    return out


def point(c: ConvertConfig, reencoders: bool) -> dict:
    """What a candidate sets, for the report (JSON)."""
    out = {"threshold": c.threshold, "levels": c.levels, "mse_tolerance": c.mse_tolerance, "v_init": c.v_init,
           "signed": _signed(c)}
    if reencoders:
        out["reencode_levels"] = c.reencode_levels
    out.update(spike_products=c.spike_products, pwl_activations=c.pwl_activations)
    return out


def _differs(c: ConvertConfig, default: ConvertConfig) -> int:
    return sum(tuple(getattr(c, n) for n in ((f,) if isinstance(f, str) else f)) !=
               tuple(getattr(default, n) for n in ((f,) if isinstance(f, str) else f)) for f in VARIED)


def _reencode_choices(default: ConvertConfig, o: dict, reencoders: bool) -> tuple:
    """Spikes per step of the re-encoding neurons to try, the default first (the default alone
    when the network has none)."""
    if not reencoders:
        return (default.reencode_levels,)
    return tuple(dict.fromkeys((default.reencode_levels,) + (o["reencode_levels"] or REENCODE_CHOICES)))


def _settings(default: ConvertConfig, o: dict, levels_free: bool, reencoders: bool,
              products: bool = False, fits: bool = False) -> list[ConvertConfig]:
    """Every candidate of the space, each ``replace(default, ...)``: the default first, then by
    how many fields differ."""
    levels = o["levels"] or ((default.levels, 1 if default.levels > 1 else 2) if levels_free else (default.levels,))
    v_inits = o["v_init"] or (default.v_init,)
    signs = ((default.signed_relu, default.signed_ibt),)
    if o["allow_unsigned"] and _signed(default):
        signs += ((False, False),)
    pcts = tuple(dict.fromkeys((default.threshold,) + o["percentiles"]))
    tols = tuple(dict.fromkeys((default.mse_tolerance,) + o["mse_tolerances"]))
    reencs = _reencode_choices(default, o, reencoders)
    # products of two computed tensors on spikes (increment products): only where the twin has them
    prods = tuple(dict.fromkeys((default.spike_products,) + o["spike_products"])) if products else \
        (default.spike_products,)
    # SiLU / GELU as piecewise-linear fits: only where the twin has them
    pwls = tuple(dict.fromkeys((default.pwl_activations,) + o["pwl_activations"])) if fits else \
        (default.pwl_activations,)
    out = {default}
    for p, k, e, v, (sr, si), r, m, w in itertools.product(pcts, levels, tols, v_inits, signs, reencs, prods, pwls):
        if p != "mse" and e:
            continue
        out.add(replace(default, threshold=p, levels=int(k), mse_tolerance=float(e), v_init=float(v),
                        signed_relu=sr, signed_ibt=si, reencode_levels=r, spike_products=bool(m),
                        pwl_activations=bool(w)))

    def key(c: ConvertConfig):
        return (_differs(c, default), c.spike_products != default.spike_products,
                c.pwl_activations != default.pwl_activations, pcts.index(c.threshold), tols.index(c.mse_tolerance),
                list(levels).index(c.levels) if c.levels in levels else 0,
                v_inits.index(c.v_init) if c.v_init in v_inits else 0, not _signed(c),
                reencs.index(c.reencode_levels) if c.reencode_levels in reencs else 0)
    return sorted(out, key=key)


def candidate_twin(twin: fx.GraphModule, c: ConvertConfig) -> fx.GraphModule:
    """The twin candidate ``c`` is built from: without the products' operand re-encoders where it
    takes exact products, with piecewise-linear SiLU / GELU where it takes them (a copy, made
    after its re-encoders' levels were set; the statistics of the twin serve every variant)."""
    out = twin
    if not c.spike_products and has_operand_reencoders(out):
        out = drop_operand_reencoders(out)
    if c.pwl_activations and has_fittable(out):
        out = piecewise_activations(copy_twin(out) if out is twin else out, True)
    return out


__all__ = ["REENCODE_CHOICES", "VARIED", "by_t", "label", "point", "candidate_twin"]
