"""VerifyReport: everything one verification measured, as a markdown table, JSON, a plot
and a summary (the smallest T that matches the reference within a tolerance)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..table import format_table
from .energy import KINDS

METRIC_NAMES = {"top1": "top-1 (%)", "top5": "top-5 (%)", "agreement": "agreement (%)", "rel_l2": "rel. L2",
                "mAP50": "mAP@0.5", "mAP50_95": "mAP@0.5:0.95", "detections": "detections",
                "mAP50_ultralytics": "mAP@0.5 (Ultralytics AP)", "mAP50_95_ultralytics": "mAP@0.5:0.95 (Ultralytics AP)"}
PERCENT = {"top1", "top5", "agreement"}
RELATIVE_TOL = {"mAP50", "mAP50_95", "mAP50_ultralytics", "mAP50_95_ultralytics"}           # tolerance relative to the reference value
DEFAULT_TOL = {"classification": 0.01, "detection": 0.01}


@dataclass
class VerifyReport:
    """Result of :func:`onnx2snn.verify`.

    ``metrics["reference"]`` holds the reference's metrics (onnxruntime on the source
    file), ``metrics["snn"][T]`` the SNN's at each T. ``layers`` holds per-neuron
    errors and firing rates, per-layer MACs / SynOps and the energy estimate (None with
    ``layers=False``). ``tolerance`` sets what :attr:`summary` calls a match:
    classification metrics within ``tolerance`` (absolute, 0.01 = 1 point) of the
    reference, mAP within ``tolerance`` relative (0.01 = 1 %).
    """

    task: str
    timesteps: list[int]
    n_samples: int
    metrics: dict[str, Any]
    reference: dict[str, Any]
    config: dict[str, Any]
    layers: dict[str, Any] | None = None
    seconds: float = 0.0
    tolerance: float | None = None
    outputs: dict[Any, Any] | None = field(default=None, repr=False)  # with return_outputs=True; not in JSON
    classes: dict[str, Any] | None = None  # detection: AP per class with names (verify's per_class_table)

    # -- summary -----------------------------------------------------------------------
    @property
    def primary_metric(self) -> str:
        ref = self.metrics["reference"]
        if self.task == "detection":
            return "mAP50_95"
        return "top1" if "top1" in ref else "agreement"

    def _tol(self, tol: float | None) -> float:
        if tol is not None:
            return float(tol)
        return DEFAULT_TOL[self.task] if self.tolerance is None else float(self.tolerance)

    def reference_value(self, metric: str) -> float:
        return 1.0 if metric == "agreement" else float(self.metrics["reference"][metric])

    @property
    def criteria(self) -> list[str]:
        """The metrics a T must match to count as "within tolerance": the primary one and,
        for classification with labels, agreement with the reference's top-1 too (an SNN
        can reach the reference's accuracy while disagreeing on many samples)."""
        out = [self.primary_metric]
        if self.task == "classification" and out[0] != "agreement" and \
                "agreement" in self.metrics["snn"][self.timesteps[0]]:
            out.append("agreement")
        return out

    def _within(self, t: int, metric: str, tol: float) -> bool:
        ref = self.reference_value(metric)
        need = ref * (1 - tol) if metric in RELATIVE_TOL else ref - tol
        v = self.metrics["snn"][t].get(metric)
        return v is not None and v >= need - 1e-12

    def smallest_t(self, tol: float | None = None, metric: str | None = None) -> int | None:
        """Smallest T of the sweep within ``tol`` of the reference: absolute for accuracies /
        agreement (0.01 = 1 point; agreement against 100 %), relative for mAP (0.01 = 1 %).
        ``metric`` None: on every metric of :attr:`criteria`; else on that one only. None
        when no T is."""
        tol = self._tol(tol)
        metrics = [metric] if metric else self.criteria
        for t in self.timesteps:
            if all(self._within(t, m, tol) for m in metrics):
                return t
        return None

    @property
    def summary(self) -> dict[str, Any]:
        m = self.primary_metric
        tol = self._tol(None)
        t = self.smallest_t(tol)
        T = self.timesteps[-1]
        out = {"metric": m, "criteria": self.criteria, "reference": self.reference_value(m),
               "tolerance": tol, "tolerance_kind": "relative" if m in RELATIVE_TOL else "absolute",
               "smallest_t": t, "at_smallest_t": None if t is None else self.metrics["snn"][t][m],
               "max_t": T, "at_max_t": self.metrics["snn"][T][m],
               "smallest_t_per_metric": {k: self.smallest_t(tol, k) for k in self.metrics["snn"][T]
                                         if k in PERCENT or k in RELATIVE_TOL}}
        if self.layers is not None and t is not None:
            tot = self.layers["ops"]["snn"][t]
            out["synops_at_smallest_t"] = tot["synops"]
            out["energy_ratio_vs_ann_at_smallest_t"] = tot["energy_ratio_vs_ann"]
            out["energy_ratio_vs_int8_ann_at_smallest_t"] = tot.get("energy_ratio_vs_int8_ann")
        return out

    # -- output ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything measured, JSON-ready (T keys become strings)."""
        return _jsonable({
            "task": self.task, "timesteps": self.timesteps, "n_samples": self.n_samples,
            "reference": self.reference, "metrics": self.metrics, "summary": self.summary,
            "layers": self.layers, "config": self.config, "seconds": self.seconds,
            **({"classes": self.classes} if self.classes else {}),
        })

    def to_json(self, path: "str | os.PathLike") -> str:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path

    def table(self) -> str:
        """Markdown: metrics vs T next to the reference, then per-layer numbers."""
        snn, ref = self.metrics["snn"], self.metrics["reference"]
        keys = [k for k in ("top1", "top5", "agreement", "mAP50", "mAP50_95", "rel_l2") if k in snn[self.timesteps[0]]]
        ops = self.layers["ops"] if self.layers else None
        headers = ["model"] + [METRIC_NAMES[k] for k in keys]
        if ops:
            headers += ["SynOps / sample", "MACs / sample", "non-spiking FLOPs / sample", "energy (uJ)",
                        "energy vs ANN", "INT8: SNN vs INT8 ANN"]
        rows = [["reference (onnxruntime)"] + [_fmt(k, ref.get(k)) if k not in ("agreement", "rel_l2") else "-"
                                                for k in keys]]
        if ops:
            rows[0] += ["-", _big(ops["ann_macs"]), _big(ops.get("ann_nonspiking_flops", 0.0)),
                        f"{ops['ann_energy_pj'] / 1e6:.4g}", "1", "1"]
        for t in self.timesteps:
            row = [f"SNN T={t}"] + [_fmt(k, snn[t].get(k)) for k in keys]
            if ops:
                o = ops["snn"][t]
                row += [_big(o["synops"]), _big(o["macs"]), _big(o.get("nonspiking_flops", 0.0)),
                        f"{o['energy_pj'] / 1e6:.4g}",
                        f"{o['energy_ratio_vs_ann']:.3g}", f"{o.get('energy_ratio_vs_int8_ann', 0.0):.3g}"]
            rows.append(row)
        s = self.summary
        tol = (f"{100 * s['tolerance']:g} % relative" if s["tolerance_kind"] == "relative"
               else f"{100 * s['tolerance']:g} point{'s' if s['tolerance'] != 0.01 else ''}")
        what = "T={}".format(s["smallest_t"]) if s["smallest_t"] else f"none up to T={s['max_t']}"
        names = " and ".join(METRIC_NAMES[k] + (" (vs 100 %)" if k == "agreement" else "") for k in s["criteria"])
        out = [f"## Verification ({self.task}): SNN vs {self.reference['source']}",
               f"{self.n_samples} samples; reference: {self.reference['runtime']} "
               f"({', '.join(self.reference['providers'])}, {', '.join(self.reference['disabled_optimizers'])} off); "
               f"{self.seconds:.1f} s", "",
               format_table(headers, rows), "",
               f"Smallest T within {tol} of the reference on {names}: {what}"]
        tune = (self.config.get("snn") or {}).get("tune")
        if tune and tune.get("chosen"):  # settings picked by convert(..., target=...)
            c = tune["chosen"]
            out.insert(2, f"Settings chosen by a search for {100 * tune['target']:g} % of the ANN "
                          f"({tune['quality_measure']}, {tune['objective']}): T={c['timesteps']}, "
                          f"threshold {c.get('threshold', c.get('percentile'))}, levels {c['levels']}, mse_tolerance {c['mse_tolerance']:g}, "
                          f"v_init {c['v_init']:g}; {100 * c['quality']:.2f} % on {tune['validation_samples']} "
                          + ("labeled validation samples" if tune.get("validation") == "labeled validation" else
                             "held-out calibration samples")
                          + (f" (needed: target + margin {100 * tune['margin']:.2g} points)" if tune.get("margin")
                             else ""))
        if self.reference.get("warning"):
            out.insert(2, f"**Warning**: {self.reference['warning']}")
        if "ann_twin_rel_l2" in self.reference:
            out += ["", "Analog mode (the twin the SNN was built from: every neuron as its activation) vs the source "
                        f"model: relative L2 {self.reference['ann_twin_rel_l2']:.3g} of the outputs (0 up to rounding "
                        "for a plain conversion; the change made by replace_activations / fine-tuning otherwise). The "
                        "SNN's own error is the per-neuron table below."]
        if self.config.get("inferred"):
            out.insert(2, "Inferred: " + "; ".join(f"{k} {v}" for k, v in self.config["inferred"].items()))
        if self.classes:
            out += ["", *self._class_table()]
        if self.layers:
            out += ["", *self._layer_tables()]
        return "\n".join(out)

    def _class_table(self) -> list[str]:
        """AP@0.5 / AP@0.5:0.95 per class: the reference and the SNN at up to three T."""
        c = self.classes
        cols = _pick(self.timesteps, 3)
        ap = lambda a: "-" if a is None else f"{a:.3f}"  # noqa: E731
        rows = []
        for cid, name in c["names"].items():
            r = c["reference"][cid]
            rows.append([name, c["objects"].get(cid, 0), f"{ap(r['AP50'])} / {ap(r['AP50_95'])}"]
                        + [f"{ap(c['snn'][t][cid]['AP50'])} / {ap(c['snn'][t][cid]['AP50_95'])}" for t in cols])
        return ["### AP per class (AP@0.5 / AP@0.5:0.95)",
                format_table(["class", "objects", "reference"] + [f"SNN T={t}" for t in cols], rows)]

    def _layer_tables(self) -> list[str]:
        L = self.layers
        T = self.timesteps[-1]
        cols = _pick(self.timesteps, 6)
        rows = [[n["name"], n["kind"], n["neurons"], f"{n['firing_rate'][T]:.4f}"]
                + [f"{n['rel_error'][t]:.4f}" for t in cols] + [f"{n.get('clip_error', 0.0):.4f}"]
                for n in L["neurons"]]
        out = [f"### Neurons: firing rate (spikes per neuron per step, T={T}), spiking error (time-averaged "
               "output vs the neuron's ideal rate function: the twin's activation clipped to what the neuron can "
               "represent; falls with T) and clipping (ideal rate function vs the twin's activation, any T), "
               "both relative to the activation's norm",
               format_table(["neuron", "kind", "neurons", f"rate T={T}"] + [f"err T={t}" for t in cols] + ["clip"],
                            rows)]
        rows = []
        for w in L["weighted"]:
            row = [w["name"], w["op"], w["input"], ", ".join(w["sources"]) or "-", _big(w["macs"])]
            if "synops" in w:
                row += [_big(w["synops"][T]), f"{w['input_density'][T]:.4f}"]
            else:
                row += [f"{_big(w['macs'] * (T if w['input'] == 'analog per step' else 1))} MACs", "-"]
            rows.append(row)
        o = L["ops"]
        out += ["", f"### Operations per sample at T={T} (events entering each layer x fan-out)",
                format_table(["layer", "op", "input", "spikes from", "ANN MACs", f"SynOps T={T}",
                              "input events / element / step"], rows), ""]
        out += _kind_tables(o, L.get("energy") or [], self.timesteps)
        out += [f"Note: {n}" for n in o["notes"]]
        return out

    def energy_plot(self, path: "str | os.PathLike") -> str:
        """PNG: energy by kind vs T (stacked) with the ANN's line, FP32 and INT8 side by side."""
        if not self.layers or not self.layers["ops"].get("snn"):
            raise ValueError("energy_plot needs a report measured with layers=True")
        return energy_plot(self.layers, self.timesteps, os.fspath(path))

    def plot(self, path: "str | os.PathLike") -> str:
        """PNG: the metric(s) vs T with the reference as horizontal lines; firing rate per
        layer; per-layer relative error vs T."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        n = 3 if self.layers else 1
        fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 4.2), squeeze=False)
        axes = axes[0]
        ts = self.timesteps
        ax = axes[0]
        keys = [k for k in ("top1", "top5", "agreement", "mAP50", "mAP50_95") if k in self.metrics["snn"][ts[0]]]
        for k in keys:
            scale = 100 if k in PERCENT else 1
            line, = ax.plot(ts, [scale * self.metrics["snn"][t][k] for t in ts], "o-", label=f"SNN {METRIC_NAMES[k]}")
            if k in self.metrics["reference"]:
                ax.axhline(scale * self.metrics["reference"][k], color=line.get_color(), ls="--",
                           label=f"reference {METRIC_NAMES[k]}")
        s = self.summary
        if s["smallest_t"]:
            ax.axvline(s["smallest_t"], color="grey", ls=":", lw=1, label=f"smallest T in tolerance ({s['smallest_t']})")
        ax.set(xscale="log", xlabel="timesteps T", title=f"{self.task}: SNN vs onnxruntime",
               ylabel="%" if self.task == "classification" else "mAP")
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.legend(fontsize=7)
        if self.layers:
            T = ts[-1]
            names = [x["name"] for x in self.layers["neurons"]]
            ax = axes[1]
            pos = range(len(names))
            ax.bar(pos, [x["firing_rate"][T] for x in self.layers["neurons"]], color="tab:orange")
            step = max(1, len(names) // 24)  # at most ~24 readable labels
            ax.set_xticks(list(pos)[::step], names[::step], rotation=70, fontsize=7, ha="right")
            ax.set(ylabel="spikes per neuron per step", title=f"firing rate per layer (T={T})")
            ax = axes[2]
            _layer_errors(fig, ax, self.layers["neurons"], ts)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def energy_plot(layers: dict, ts: list[int], path: str) -> str:
    """PNG: energy per sample by kind vs T, stacked, with the ANN's as a line; FP32 (the field's
    convention) and INT8 deployment (integer SNN vs INT8 ANN) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    o = layers["ops"]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    x = list(range(len(ts)))
    for ax, key, ann_key, title in ((axes[0], "energy_by_kind_pj", "ann_energy_pj", "FP32 SNN vs FP32 ANN"),
                                    (axes[1], "energy_by_kind_int8_pj", "ann_energy_int8_pj",
                                     "integer SNN vs INT8 ANN")):
        bottom = [0.0] * len(ts)
        for k in KINDS:
            vals = [o["snn"][t][key][k] / 1e6 for t in ts]
            if any(vals):
                ax.bar(x, vals, bottom=bottom, label=k)
                bottom = [b + v for b, v in zip(bottom, vals)]
        ax.axhline(o[ann_key] / 1e6, color="black", ls="--", label="ANN")
        ax.set_xticks(x, [str(t) for t in ts])
        ax.set(xlabel="timesteps T", ylabel="energy per sample (uJ)", title=title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _kind_tables(o: dict, per_layer: list[dict], ts: list[int]) -> list[str]:
    """Markdown: counts by kind and energy (FP32, INT8) at each T next to the ANN's; per layer at
    the largest T, the costliest first."""
    if not o.get("snn"):
        return []
    kinds = list(KINDS)
    fp, i8 = o["costs"]["fp32_pj"], o["costs"]["int8_pj"]
    head = ["", *[f"{k}" for k in kinds], "FP32 (uJ)", "vs FP32 ANN", "float share", "INT8 (uJ)", "vs INT8 ANN"]
    a = o["ann_counts"]
    rows = [["ANN"] + [_big(a[k]) for k in kinds] + [f"{o['ann_energy_pj'] / 1e6:.4g}", "1",
                                                     f"{o['ann_float_share']:.2f}", f"{o['ann_energy_int8_pj'] / 1e6:.4g}", "1"]]
    for t in ts:
        s = o["snn"][t]
        rows.append([f"SNN T={t}"] + [_big(s["counts"][k]) for k in kinds]
                    + [f"{s['energy_pj'] / 1e6:.4g}", f"{s['energy_ratio_vs_ann']:.3g}", f"{s['float_share']:.2f}",
                       f"{s['energy_int8_pj'] / 1e6:.4g}", f"{s['energy_ratio_vs_int8_ann']:.3g}"])
    costs = ", ".join(f"{k} {fp[k]:.3g} / {i8[k]:.3g}" for k in kinds)
    out = ["### Work per sample by kind and energy (same rules for SNN and ANN)", format_table(head, rows), "",
           f"Costs in pJ, FP32 / INT8 deployment: {costs}. {o['costs']['source']}"]
    T = ts[-1]
    if per_layer:
        def pj(c):
            return sum(fp[k] * v for k, v in c.items())
        ranked = sorted(per_layer, key=lambda r: -pj(r["snn"][T]))
        rows = [[r["name"], r["op"], r["form"], f"{pj(r['ann']) / 1e3:.4g}", f"{pj(r['snn'][T]) / 1e3:.4g}"]
                + [_big(r["snn"][T].get(k, 0.0)) for k in kinds] for r in ranked[:30]]
        out += ["", f"### Work per layer at T={T} (costliest first{', 30 of ' + str(len(ranked)) if len(ranked) > 30 else ''};"
                    " energy in nJ, FP32)",
                format_table(["node", "op", "form", "ANN nJ", f"SNN nJ T={T}", *kinds], rows)]
    return out


def _layer_errors(fig, ax, neurons: list[dict], ts: list[int]) -> None:
    """Relative error vs T, one line per neuron layer coloured by depth (first -> last):
    a legend for a few layers; for many, a colourbar naming some of them, and the worst
    layer at the largest T in the title."""
    import matplotlib as mpl

    cmap = mpl.colormaps["viridis"]
    n = len(neurons)
    colors = [cmap(i / max(1, n - 1)) for i in range(n)]
    for x, c in zip(neurons, colors):
        ax.plot(ts, [max(x["rel_error"][t], 1e-6) for t in ts], ".-", lw=1, color=c, label=x["name"])
    ax.set(xscale="log", yscale="log", xlabel="timesteps T", ylabel="relative error vs ANN activation",
           title=f"per-layer error ({n} neuron layers)")
    ax.set_xticks(ts, [str(t) for t in ts])
    if n <= 10:
        ax.legend(fontsize=6, title="layer (by depth)", title_fontsize=6)
        return
    sm = mpl.cm.ScalarMappable(cmap=cmap, norm=mpl.colors.Normalize(0, n - 1))
    bar = fig.colorbar(sm, ax=ax, fraction=0.06, pad=0.02)
    ticks = sorted({round(i * (n - 1) / 5) for i in range(6)})
    bar.set_ticks(ticks, labels=[_short(neurons[i]["name"]) for i in ticks], fontsize=6)
    bar.set_label("layer depth", fontsize=7)
    T = ts[-1]
    worst = max(range(n), key=lambda i: neurons[i]["rel_error"][T])
    ax.set_title(f"per-layer error ({n} neuron layers)\nworst at T={T}: {_short(neurons[worst]['name'])}", fontsize=9)


def _short(name: str, k: int = 22) -> str:
    return name if len(name) <= k else "…" + name[-(k - 1):]


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key in PERCENT:
        return f"{100 * v:.2f}"
    return f"{v:.4f}"


def _big(v: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3f}{unit}"
    return f"{v:.0f}"


def _pick(ts: list[int], k: int) -> list[int]:
    """At most k of the timesteps, spread over the sweep, always with the last."""
    if len(ts) <= k:
        return list(ts)
    idx = sorted({round(i * (len(ts) - 1) / (k - 1)) for i in range(k)})
    return [ts[i] for i in idx]


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


__all__ = ["VerifyReport"]
