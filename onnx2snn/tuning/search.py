"""The search over conversion settings against a target: ``convert(..., target=0.99)``.

The calibration data is split once (seeded): a held-out part to validate on against the ANN,
the rest for the activation statistics, collected in one pass. With labeled validation data
(``search={"validation": ...}``) quality is the real metric on it, and all calibration
data goes to the statistics. A candidate is a setting (threshold
method and its parameter, levels, v_init, signed or not) and, for ``"mse"`` thresholds, the
T they are designed for; it costs a threshold computation from the kept histograms and one
SNN run on the held-out part to its largest T, which scores every smaller T of the grid too.

Order and early stopping, so that a search costs a few verify runs:

1. the default setting, designed for T = 2, 4, 8, ... until some T keeps the target (T*);
   if none does up to the largest T, the other settings at the largest T;
2. every other setting (fewest changes from the default first), from T* down the grid while
   it keeps the target at its design T: the first miss ends that setting (a percentile
   threshold does not depend on T: one run scores all of them).

Every run but the default's first may stop after a quarter of the held-out samples
(``early_stop``): when no T of it comes within that margin of the target, or when those that
do already cost more than the cheapest point that keeps it (a setting stopped for energy
is still tried at smaller T; one stopped for quality is not).

A network with time-averaged operators (re-encoding neurons) has their spikes per step
(``reencode_levels``) searched too. Detectors (``postprocess``) get a smaller space and
held-out set by default: their runs cost the most.

Then the point that keeps ``target`` of the ANN's quality at the least estimated energy
(``objective="energy"``) or at the smallest T (``"timesteps"``, ties by energy).

A point keeps the target when its held-out quality is at least ``target + margin``. The search
picks the cheapest of many noisy measurements, so the chosen one tends to sit above what unseen
data gives; ``margin="auto"`` (default) is one binomial standard error of a share at the target
on the held-out units (samples for top-1 agreement, the ANN's confident objects for detectors;
0 for an output error, which is not a share). ``margin=0`` trusts the held-out numbers as they are.
"""

from __future__ import annotations

import difflib
import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch
import torch.fx as fx
from ..progress import bar as progress_bar

from .. import checks
from ..config import ConvertConfig, SearchConfig
from ..settings import OBJECTIVES as _OBJECTIVES, SEARCH
from ..data.batches import check_fits
from ..calibration.thresholds import (collect_statistics, sample_batches, statistics_summary,
                                      thresholds_from_statistics)
from ..errors import ConfigError, DataError, Onnx2SnnWarning
from ..calibration.reencode_plan import apply_plan, auto_plan
from ..graph.averaged import REENCODE_LEVELS, Reencode, has_operand_reencoders
from ..graph.piecewise import has_fittable
from ..snn.network import build_spiking
from ..task import resolve_task
from .report import TuneReport
from .space import REENCODE_CHOICES, VARIED, _reencode_choices, _settings, by_t, candidate_twin, label, point  # noqa: F401
from .validation import Validation

OBJECTIVES = _OBJECTIVES
GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
MIN_VALIDATION = 32   # held-out samples at least
MIN_STATISTICS = 32   # samples left for the statistics at least
# the search's settings and their defaults: the table (onnx2snn.settings.SEARCH, SearchConfig);
# None: by kind of network (KIND_DEFAULTS: classifiers and others / detectors)
DEFAULTS = {name: row.default for name, row in SEARCH.items()}
KIND_DEFAULTS = {False: {"max_validation": 256, "percentiles": ("mse", 99.99, 99.9), "mse_tolerances": (0.0, 0.25, 0.5)},
                 True: {"max_validation": 96, "percentiles": ("mse", 99.99), "mse_tolerances": (0.0, 0.25)}}


def check_target(target: Any) -> float:
    """A share of the ANN's quality in (0, 1]."""
    return checks.real("target", target, 0.0, 1.0, strict_min=True)


def check_objective(objective: Any) -> str:
    return checks.choice("objective", objective, OBJECTIVES)


def check_margin(margin: Any, param: str = "search['margin']") -> "float | str":
    """``"auto"`` or the held-out quality in [0, 0.5] a point needs above the target."""
    if isinstance(margin, str) and margin == "auto":
        return margin
    return checks.real(f"{param} (a share of the ANN's quality, or 'auto')", margin, 0.0, 0.5)


def check_options(options: "SearchConfig | Mapping | None") -> dict:
    """The search's settings (a :class:`onnx2snn.SearchConfig` or a dict of its fields) with
    defaults filled in; unknown keys (with the closest known one) and bad values are errors."""
    if options is None:
        options = {}
    if isinstance(options, SearchConfig):
        options = options.keywords()
    if not isinstance(options, Mapping):
        raise ConfigError(f"search must be a SearchConfig or a dict, got {type(options).__name__}", "search")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(DEFAULTS), n=1)
        raise ConfigError(f"search: unknown key(s) {unknown}{f' (did you mean {close[0]!r}?)' if close else ''}; "
                          f"known: {sorted(DEFAULTS)}", "search")
    o = {**DEFAULTS, **options}
    for k, v in KIND_DEFAULTS[o["postprocess"] is not None].items():
        o[k] = v if o[k] is None else o[k]
    o["objective"] = check_objective(o["objective"])
    o["holdout"] = checks.real("search['holdout']", o["holdout"], 0.0, 0.9, strict_min=True)
    o["max_validation"] = checks.integer("search['max_validation']", o["max_validation"], MIN_VALIDATION)
    o["max_runs"] = checks.integer("search['max_runs']", o["max_runs"], 1)
    o["percentiles"] = tuple(checks.percentile(p, "search['percentiles']") for p in o["percentiles"])
    o["mse_tolerances"] = tuple(checks.real("search['mse_tolerances']", e, 0.0) for e in o["mse_tolerances"])
    if o["levels"] is not None:
        o["levels"] = tuple(checks.integer("search['levels']", k, 1) for k in o["levels"])
    if o["reencode_levels"] is not None:
        o["reencode_levels"] = tuple(k if k == "auto" else checks.integer("search['reencode_levels']", k, 1)
                                     for k in o["reencode_levels"])
    if o["early_stop"] is not None:
        o["early_stop"] = checks.real("search['early_stop']", o["early_stop"], 0.0, 1.0)
    if o["v_init"] is not None:
        o["v_init"] = tuple(checks.real("search['v_init']", v, -1.0, 2.0) for v in o["v_init"])
    o["allow_unsigned"] = checks.boolean("search['allow_unsigned']", o["allow_unsigned"])
    o["gt_confidence"] = checks.real("search['gt_confidence']", o["gt_confidence"], 0.0, 1.0)
    o["seed"] = checks.integer("search['seed']", o["seed"], 0)
    o["margin"] = check_margin(o["margin"])
    sp = o["spike_products"]
    if not isinstance(sp, (tuple, list)) or not sp:
        raise ConfigError(f"search['spike_products']: a tuple of the choices to try, e.g. (False, True), got {sp!r}",
                          "search")
    o["spike_products"] = tuple(dict.fromkeys(checks.boolean("search['spike_products']", v) for v in sp))
    pw = o["pwl_activations"]
    if not isinstance(pw, (tuple, list)) or not pw:
        raise ConfigError(f"search['pwl_activations']: a tuple of the choices to try, e.g. (False, True), got {pw!r}",
                          "search")
    o["pwl_activations"] = tuple(dict.fromkeys(checks.boolean("search['pwl_activations']", v) for v in pw))
    if not o["percentiles"] or not o["mse_tolerances"]:
        raise ConfigError("search: percentiles and mse_tolerances need at least one value", "search")
    return o


@dataclass
class Outcome:
    """What the search hands to ``convert``: the chosen thresholds and config, and the report."""

    thresholds: dict[str, torch.Tensor]
    config: dict
    stats: dict
    report: TuneReport = field(repr=False)


def split(twin: fx.GraphModule, data: Any, batch_size: int, limit: int | None, preprocess, holdout: float,
          max_validation: int, seed: int, target: float, per_sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(statistics part, held-out part) of the calibration data, split at random (seeded).
    ``per_sample``: quality counts samples (not a detector's objects): warn when one sample
    is more than the target leaves."""
    batches, _ = sample_batches(twin, data, batch_size, limit, preprocess)
    x = torch.cat([b for b in batches])
    n = len(x)
    need = MIN_VALIDATION + MIN_STATISTICS
    if n < need:
        raise DataError(f"the calibration data has {n} samples: a search over settings holds out a part to validate "
                        f"on, and needs at least {need} ({MIN_VALIDATION} held out, {MIN_STATISTICS} for the "
                        f"statistics; {math.ceil(MIN_VALIDATION / holdout)} with holdout={holdout:g}). Pass more "
                        "samples, or convert without target=")
    n_val = min(max_validation, max(MIN_VALIDATION, round(holdout * n)), n - MIN_STATISTICS)
    if per_sample and target < 1 and n_val < 1 / (1 - target):
        warnings.warn(f"target={target:g} on {n_val} held-out samples: one sample is more than the "
                      f"{100 * (1 - target):.3g} % the target leaves, so the check is coarse; pass at least "
                      f"{math.ceil(1 / (1 - target) / holdout)} calibration samples", Onnx2SnnWarning, stacklevel=4)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return x[perm[n_val:]], x[perm[:n_val]]


def search(twin: fx.GraphModule, data: Any, base_config: "ConvertConfig | Mapping", target: float,
           objective: str = "energy",
           levels: int | None = None, options: Mapping | None = None, batch_size: int = 64,
           limit: int | None = None, preprocess=None, progress: bool = True,
           distributed: "bool | None" = None) -> Outcome:
    """Search the settings of ``base_config`` (a :class:`ConvertConfig`, or a saved config dict;
    its ``timesteps`` is the largest T tried; every candidate is a ``dataclasses.replace`` of it) for the point that keeps ``target`` of the ANN's quality on held-out
    calibration data at the least energy (or smallest T). ``levels`` None: levels are searched
    too (1 and the default), else fixed. A twin with ``learned_thresholds`` (fine-tuned) keeps
    them: only T is searched, up to twice its fine-tuned T (and, when it has time-averaged
    operators, the thresholds and spikes per step of their re-encoding neurons, which the
    fine-tuning did not learn)."""
    t0 = time.time()
    target, objective = check_target(target), check_objective(objective)
    o = check_options(options)
    if isinstance(base_config, Mapping):  # a saved config: read as load reads it (keys it lacks from the table)
        base_config = ConvertConfig.from_saved(base_config)
    if o["postprocess"] is None:  # a detector known by its metadata, data or output: mAP with its decoder
        info = resolve_task(twin, data if o["validation"] is None else o["validation"], o["annotations"])
        if info.postprocess is not None:
            given = options.keywords() if isinstance(options, SearchConfig) else dict(options or {})
            o = check_options({**given, "postprocess": info.postprocess})
    T_max = int(base_config.timesteps)
    learned = getattr(twin, "learned_thresholds", None)
    if learned is not None:
        ft = (getattr(twin, "finetune_info", None) or {}).get("timesteps")
        T_max = min(T_max, 2 * int(ft)) if ft else T_max
    grid = [t for t in GRID if t <= T_max] + ([T_max] if T_max not in GRID else [])
    if o["validation"] is None:  # a held-out part of the calibration data, against the ANN
        cal, val_x = split(twin, data, batch_size, limit, preprocess, o["holdout"], o["max_validation"], o["seed"],
                           target, o["postprocess"] is None)
        check_fits(val_x[:1], getattr(getattr(twin, "onnx_info", None), "input_shapes", {}) or {}, "calibration data")
        validation = Validation(twin, val_x, batch_size, o["postprocess"], o["category_ids"], o["metric"],
                                o["gt_confidence"])
    else:  # labeled validation data: the real metric; all calibration data for the statistics
        cal = torch.cat(list(sample_batches(twin, data, batch_size, limit, preprocess)[0]))
        validation = Validation(twin, None, batch_size, o["postprocess"], o["category_ids"], o["metric"],
                                data=o["validation"], annotations=o["annotations"], preprocess=preprocess,
                                limit=o["max_validation"])
    margin = validation.standard_error(target) if o["margin"] == "auto" else o["margin"]
    required = min(1.0, target + margin)
    reencoders = [m for m in twin.modules() if isinstance(m, Reencode)]
    # a fine-tuned twin keeps its learned thresholds: statistics only for its re-encoding neurons
    obs = None if learned is not None and not reencoders else \
        collect_statistics(twin, cal, batch_size, None, None, progress, distributed)
    default = base_config
    # a twin with products' operand re-encoders (prepared by convert when the search may choose
    # spike products): the same statistics serve both; the exact-product SNNs are built without them
    products = has_operand_reencoders(twin)
    fits = has_fittable(twin)  # SiLU / GELU the piecewise-linear fits replace: pwl_activations applies
    if learned is None:
        settings = _settings(default, o, levels is None, bool(reencoders), products, fits)
    else:  # only what the fine-tuning did not learn: the re-encoding neurons' spikes per step
        settings = [replace(default, reencode_levels=r) for r in _reencode_choices(default, o, bool(reencoders))]
    candidates: list[dict] = []
    points: list[dict] = []
    cache: dict = {}
    bar = progress_bar(desc="tuning", unit="run", enabled=progress)

    plans: dict = {}

    def plan_key(s: ConvertConfig, d: int) -> tuple:
        return s.threshold, s.mse_tolerance, s.v_init, d

    def use(s: ConvertConfig, d: int) -> None:
        """The re-encoding neurons of the twin fire ``s.reencode_levels`` spikes per step (their
        thresholds are searched for it, and the SNN built with it); "auto": the per-layer plan
        for this setting at design T ``d``."""
        if s.reencode_levels == "auto":
            if plan_key(s, d) not in plans:
                plans[plan_key(s, d)] = auto_plan(twin, obs, cal, s.normalization, s.threshold, d, s.v_init,
                                                  s.mse_tolerance, s.reencode_coding == "binary", REENCODE_LEVELS)
            apply_plan(twin, plans[plan_key(s, d)])
            return
        for m in reencoders:
            m.levels, m.one_sided = int(s.reencode_levels), False

    def thresholds(s: ConvertConfig, d: int) -> dict:
        own = {} if learned is None else {k: v.clone() for k, v in learned.items()}
        if obs is None:
            return own
        use(s, d)
        key = replace(s, timesteps=d) if by_t(s) else s  # the config the thresholds are for
        if key not in cache:
            cache[key] = thresholds_from_statistics(twin, obs, s.normalization, s.threshold, d, s.v_init, s.levels,
                                                    s.mse_tolerance)
        return {**cache[key], **own}

    def config(s: ConvertConfig, T: int, d: int) -> dict:
        """The saved config of candidate ``s`` run at ``T`` (designed for ``d``: its plan)."""
        out = replace(s, timesteps=T).to_dict()
        if s.reencode_levels == "auto":
            out["reencode_plan"] = plans[plan_key(s, d)]
        return out

    def find(s: ConvertConfig, d: int) -> dict | None:
        for c in candidates:
            if c["setting"] == s and (c["design_t"] == d or not by_t(s)) and c["run_to"] >= d:
                return c
        return None

    def best() -> "tuple[float, int] | None":
        """(energy, T) of the point the objective prefers among those keeping the target so far."""
        ok = [p for p in points if p["meets"]]
        if not ok:
            return None
        p = min(ok, key=(lambda p: (p["energy_ratio"], p["T"])) if objective == "energy" else
                (lambda p: (p["T"], p["energy_ratio"])))
        return p["energy_ratio"], p["T"]

    def hopeless(partial: dict) -> "str | None":
        """Why a run may stop after its first quarter (None: go on)."""
        slack = o["early_stop"]
        near = [t for t, m in partial.items() if m["quality"] >= required - slack]
        if not near:
            return "quality"
        b = best()
        if b is None:
            return None
        if objective == "energy" and min(partial[t]["energy_ratio"] for t in near) > b[0] * (1 + slack):
            return "energy"
        if objective == "timesteps" and min(near) > b[1]:
            return "timesteps"
        return None

    def run(s: ConvertConfig, d: int, may_stop: bool = True) -> dict:
        """One candidate: thresholds for design T ``d``, one run to ``d`` scoring every T <= d
        (cut after a quarter of the held-out samples when ``hopeless``)."""
        c = find(s, d)
        if c is not None:
            return c
        t1 = time.time()
        snn = build_spiking(candidate_twin(twin, s), thresholds(s, d), config(s, d, d))
        why: list[str] = []

        def stop(partial: dict) -> bool:
            r = hopeless(partial)
            why.extend([r] if r else [])
            return r is not None
        res, complete = validation.measure(snn, [t for t in grid if t <= d],
                                           stop if may_stop and o["early_stop"] is not None else None)
        c = {"id": len(candidates), "setting": s, "design_t": d if by_t(s) else None, "run_to": d,
             "seconds": round(time.time() - t1, 2), "stopped": why[0] if why else None}
        candidates.append(c)
        if not complete:  # a quarter's numbers: kept with the run, not as points of the frontier
            c["partial"] = {t: {"quality": m["quality"], "energy_ratio": m["energy_ratio"]} for t, m in res.items()}
            bar.update(1)
            return c
        for t, m in res.items():
            points.append({"candidate": c["id"], "T": t, **m, "meets": m["quality"] >= required - 1e-12})
        bar.update(1)
        bar.set_postfix_str(f"{label(s, bool(reencoders))} T<={d}")
        return c

    def meets_at(c: dict, t: int) -> bool:
        return any(p["candidate"] == c["id"] and p["T"] == t and p["meets"] for p in points)

    def smallest_meeting(c: dict) -> int | None:
        ts = [p["T"] for p in points if p["candidate"] == c["id"] and p["meets"]]
        return min(ts) if ts else None

    notes: list[str] = []
    # phase 1: the default setting, designed for growing T, until one keeps the target
    T_star, default_run = None, None
    designs = ([t for t in (2, 4, 8, 16, 32, 64, 128, 256, 512) if t < T_max] + [T_max]) if by_t(default) and learned is None \
        else [T_max]
    for d in designs:
        default_run = run(default, d, may_stop=d != designs[-1])
        T_star = smallest_meeting(default_run)
        if T_star is not None:
            break
    if T_star is None:  # the others at the largest T
        for s in settings[1:]:
            if len(candidates) >= o["max_runs"]:
                break
            T_star = smallest_meeting(run(s, T_max))
            if T_star is not None:
                break
    # phase 2: every setting from T* down the grid while it keeps the target at its design T
    if T_star is not None:
        below = [t for t in grid if t <= T_star][::-1]
        for s in settings:
            for d in below if by_t(s) else [T_star]:
                if len(candidates) >= o["max_runs"]:
                    break
                c = run(s, d)
                if c["stopped"] != "energy" and not meets_at(c, d):
                    break
        if len(candidates) >= o["max_runs"]:
            notes.append(f"stopped at max_runs={o['max_runs']} runs (search['max_runs'])")
    bar.close()
    report = TuneReport(target=target, objective=objective, quality=validation.description, kind=validation.kind,
                        validation_samples=validation.n, statistics_samples=len(cal), timesteps=grid,
                        candidates=[{**c, "setting": point(c["setting"], bool(reencoders)),
                                     "label": label(c["setting"], bool(reencoders))} for c in candidates],
                        points=points, notes=notes, default_label=label(default, bool(reencoders)), seconds=round(time.time() - t0, 2),
                        learned_thresholds=learned is not None, margin=margin, units=validation.units,
                        labeled=validation.labeled)
    if report.chosen is None:
        top = report.best_point()
        e = ConfigError(f"no setting keeps target={target:g} of the ANN's quality ({validation.description}, "
                        f"{validation.n} {report.held} samples{report.margin_text()}) up to T={T_max}: the best is "
                        f"{top['quality']:.4f} at {report.label_of(top)} ({top['energy_ratio']:.3g}x the ANN's "
                        "energy). Raise timesteps= (the largest T the search tries), lower target=, validate on more "
                        "samples (a smaller margin; search={'margin': 0} trusts them as they are), or "
                        "fine-tune first (onnx2snn.finetune)", "target")
        e.report = report
        raise e
    p = report.points[report.chosen]
    c = candidates[p["candidate"]]
    s = c["setting"]
    design = c["run_to"] if by_t(s) else p["T"]
    if reencoders:
        use(s, design)  # convert builds the SNN from this twin
    cfg = config(s, p["T"], design)
    cfg["tune"] = report.summary()
    return Outcome(thresholds(s, design), cfg,
                   {} if obs is None else statistics_summary(twin, obs), report)


__all__ = ["search", "check_target", "check_objective", "check_options", "check_margin", "label", "point", "by_t",
           "Outcome", "OBJECTIVES", "VARIED", "DEFAULTS",
           "MIN_VALIDATION", "MIN_STATISTICS", "GRID"]
