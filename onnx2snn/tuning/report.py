"""TuneReport: every candidate's quality and energy per T, the Pareto frontier and the chosen
point with the reason, as markdown, JSON and a plot (energy vs quality), like the verify report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from ..table import format_table


@dataclass
class TuneReport:
    """Result of the search (``snn.tune_report`` after ``convert(..., target=...)``).

    ``points``: one per candidate and T, with ``quality`` (share of the ANN's, on the held-out
    data), ``energy_ratio`` (estimated energy / the ANN's, as :func:`onnx2snn.verify` counts it),
    ``energy_pj``, ``synops`` and ``meets`` (quality >= target + ``margin``, the allowance for
    the held-out data's noise; ``units``: what the quality is a share of). ``candidates``: the settings
    tried, each run once to ``run_to``; one with ``stopped`` ("quality", "energy" or
    "timesteps") was cut after a quarter of the held-out samples (its numbers in ``partial``,
    not among the points)."""

    target: float
    objective: str
    quality: str
    kind: str
    validation_samples: int
    statistics_samples: int
    timesteps: list[int]
    candidates: list[dict]
    points: list[dict]
    default_label: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    learned_thresholds: bool = False
    margin: float = 0.0
    units: int | None = None
    labeled: bool = False  # validated on labeled data (the real metric), not on held-out calibration data

    @property
    def held(self) -> str:
        return "labeled validation" if self.labeled else "held-out"

    @property
    def required(self) -> float:
        """The held-out quality a point needs: the target plus the margin."""
        return min(1.0, self.target + self.margin)

    def margin_text(self) -> str:
        """', with a margin of ...' (empty without one)."""
        if not self.margin:
            return ""
        on = f" on {self.units} {self.held} {'objects' if self.kind.startswith('mAP') else 'samples'}" \
            if self.units else ""
        return f", with a margin of {100 * self.margin:.2g} points{on}: >= {100 * self.required:.4g} % there"

    # -- analysis ----------------------------------------------------------------------
    def label_of(self, p: dict) -> str:
        c = self.candidates[p["candidate"]]
        d = f" (thresholds for T={c['design_t']})" if c["design_t"] is not None and c["design_t"] != p["T"] else ""
        return f"T={p['T']}, {c['label']}{d}"

    @property
    def frontier(self) -> list[int]:
        """Indices of the Pareto-optimal points (no other point has at least their quality at
        no more energy, one of the two strictly better), by growing energy."""
        order = sorted(range(len(self.points)), key=lambda i: (self.points[i]["energy_ratio"],
                                                               -self.points[i]["quality"]))
        out, best = [], -1.0
        for i in order:
            if self.points[i]["quality"] > best + 1e-12:
                out.append(i)
                best = self.points[i]["quality"]
        return out

    @property
    def chosen(self) -> int | None:
        """Index of the chosen point: among those keeping the target, the least energy
        (``objective="energy"``, ties: smaller T) or the smallest T (ties: less energy)."""
        ok = [i for i, p in enumerate(self.points) if p["meets"]]
        if not ok:
            return None
        if self.objective == "timesteps":
            return min(ok, key=lambda i: (self.points[i]["T"], self.points[i]["energy_ratio"]))
        return min(ok, key=lambda i: (self.points[i]["energy_ratio"], self.points[i]["T"]))

    def best_point(self) -> dict:
        """The point of highest quality (least energy among equals)."""
        return max(self.points, key=lambda p: (p["quality"], -p["energy_ratio"]))

    def default_point(self) -> dict | None:
        """The default setting's smallest T that keeps the target (what one would pick by
        hand from a verify sweep of the default conversion)."""
        ok = [p for p in self.points if p["meets"] and self.candidates[p["candidate"]]["label"] == self.default_label
              and (self.candidates[p["candidate"]]["design_t"] in (None, p["T"]))]
        return min(ok, key=lambda p: p["T"]) if ok else None

    @property
    def reason(self) -> str:
        i = self.chosen
        if i is None:
            b = self.best_point()
            return (f"no point keeps {100 * self.target:g} % of the ANN's quality{self.margin_text()}; the best is "
                    f"{100 * b['quality']:.2f} % at {self.label_of(b)}")
        p = self.points[i]
        n_ok = sum(q["meets"] for q in self.points)
        what = "the least estimated energy" if self.objective == "energy" else "the smallest T (then least energy)"
        out = (f"{what} among the {n_ok} of {len(self.points)} points that keep >= {100 * self.target:g} % of the "
               f"ANN's quality ({self.quality}, {self.validation_samples} {self.held} samples{self.margin_text()}): "
               f"{self.label_of(p)}, "
               f"{100 * p['quality']:.2f} % at {p['energy_ratio']:.3g}x the ANN's energy")
        d = self.default_point()
        if d is not None and d is not p:
            out += (f"; the default setting ({self.default_label}) needs T={d['T']} for the target, at "
                    f"{d['energy_ratio']:.3g}x")
        return out

    def summary(self) -> dict:
        """The chosen point in a few fields (stored in the SNN's config as ``tune``)."""
        i = self.chosen
        p = None if i is None else self.points[i]
        c = None if p is None else self.candidates[p["candidate"]]
        return {"target": self.target, "objective": self.objective, "quality_measure": self.quality,
                "validation_samples": self.validation_samples, "validation": self.held, "margin": self.margin,
                "chosen": None if p is None else {"timesteps": p["T"], **c["setting"], "thresholds_for_t":
                                                  c["design_t"], "quality": p["quality"],
                                                  "energy_ratio_vs_ann": p["energy_ratio"]},
                "candidates": len(self.candidates), "points": len(self.points), "seconds": self.seconds,
                "reason": self.reason}

    # -- output ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "objective": self.objective, "quality": self.quality, "kind": self.kind,
                "validation_samples": self.validation_samples, "statistics_samples": self.statistics_samples,
                "timesteps": self.timesteps, "candidates": self.candidates, "points": self.points,
                "frontier": self.frontier, "chosen": self.chosen, "reason": self.reason,
                "default_setting": self.default_label, "seconds": self.seconds, "notes": self.notes,
                "learned_thresholds": self.learned_thresholds, "margin": self.margin, "units": self.units,
                "labeled": self.labeled,
                "required": self.required}

    def to_json(self, path: "str | os.PathLike") -> str:
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1, default=str)
        return path

    def table(self) -> str:
        """Markdown: the frontier (and the chosen point), then every candidate run."""
        front = self.frontier
        rows = [[("**" if i == self.chosen else "") + self.label_of(self.points[i]) + ("**" if i == self.chosen else ""),
                 f"{100 * self.points[i]['quality']:.2f}", f"{self.points[i]['energy_ratio']:.3g}",
                 "yes" if self.points[i]["meets"] else "no"] for i in front]
        runs = [[c["id"], c["label"], c["design_t"] or "-", c["run_to"], f"{c['seconds']:.1f}",
                 f"after 1/4 ({c['stopped']})" if c.get("stopped") else "-"] for c in self.candidates]
        out = [f"## Settings search: target {100 * self.target:g} % of the ANN ({self.quality}), objective "
               f"{self.objective}",
               f"{self.validation_samples} {self.held} samples{self.margin_text()}, statistics from "
               f"{self.statistics_samples}; "
               f"{len(self.candidates)} runs, {len(self.points)} points; {self.seconds:.1f} s", "",
               f"Chosen: {self.reason}.", "", "### Pareto frontier (energy vs quality)", "",
               format_table(["point", "quality (% of ANN)", "energy vs ANN", "keeps target"], rows), "",
               "### Runs (one SNN run each, scored at every T of the grid up to its last)", "",
               format_table(["run", "setting", "thresholds for T", "run to T", "seconds", "stopped early"], runs)]
        out += [f"Note: {n}" for n in self.notes]
        return "\n".join(out)

    def write(self, folder: "str | os.PathLike", name: str = "tune") -> dict[str, str]:
        """``<name>.md``, ``<name>.json`` and ``<name>.png`` in ``folder``."""
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        md = os.path.join(folder, f"{name}.md")
        with open(md, "w") as f:
            f.write(self.table() + "\n")
        return {"md": md, "json": self.to_json(os.path.join(folder, f"{name}.json")),
                "png": self.plot(os.path.join(folder, f"{name}.png"))}

    def plot(self, path: "str | os.PathLike", title: str | None = None) -> str:
        """PNG: energy (x the ANN's) vs quality (% of the ANN's), one colour per setting, each
        point labelled by its T; the frontier drawn, the target as a line, the choice starred."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig, ax = plt.subplots(figsize=(7.2, 4.8))
        labels = list(dict.fromkeys(c["label"] for c in self.candidates))
        cmap = plt.get_cmap("tab10")
        for k, lab in enumerate(labels):
            pts = [p for p in self.points if self.candidates[p["candidate"]]["label"] == lab]
            ax.scatter([p["energy_ratio"] for p in pts], [100 * p["quality"] for p in pts], s=18,
                       color=cmap(k % 10), alpha=0.8, label=lab)
            for p in pts:
                ax.annotate(str(p["T"]), (p["energy_ratio"], 100 * p["quality"]), fontsize=6,
                            xytext=(2, 2), textcoords="offset points", color=cmap(k % 10))
        front = [self.points[i] for i in self.frontier]
        ax.step([p["energy_ratio"] for p in front], [100 * p["quality"] for p in front], where="post", color="k",
                lw=1, label="Pareto frontier")
        ax.axhline(100 * self.target, color="red", ls="--", lw=1, label=f"target {100 * self.target:g} %")
        if self.margin:
            ax.axhline(100 * self.required, color="red", ls=":", lw=1,
                       label=f"target + margin (validation noise): {100 * self.required:.4g} %")
        if self.chosen is not None:
            c = self.points[self.chosen]
            ax.scatter([c["energy_ratio"]], [100 * c["quality"]], marker="*", s=220, facecolor="none",
                       edgecolor="red", lw=1.5, label=f"chosen: T={c['T']}, {c['energy_ratio']:.3g}x")
        lo = min(100 * self.target - 5, min(100 * p["quality"] for p in self.points if p["quality"] >=
                                            self.target - 0.1) - 1) if self.points else 0
        ax.set_ylim(max(lo, min(100 * p["quality"] for p in self.points) - 1), 100.5)
        ax.set(xlabel="estimated energy (x the ANN's)", ylabel=f"quality (% of the ANN, {self.kind})",
               title=title or f"settings search: {len(self.candidates)} runs, points labelled by T")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


__all__ = ["TuneReport"]
