"""One table of the settings of ``convert`` and ``finetune``: each written once, with its
default, its command-line flag and help, and (for what a saved SNN records) what a file
saved before the setting existed means.

Every reader takes its default from here: the Python signatures (``api.convert``,
``calibration.finetune.finetune``), the command-line parsers (``cli/convert.py``,
``cli/finetune.py``), the settings search's fallbacks (``tuning/search.py``) and the
saved-config readers (``snn/network.py``, ``snn/serialize.py``, ``deploy/nir_export.py``).
:mod:`onnx2snn.config` makes the frozen dataclasses (``ConvertConfig``: what is saved with
the SNN; ``SearchConfig``: the search's own table ``SEARCH``; ``ConvertRun`` / ``FinetuneRun``:
run-time matters, never saved; ``FinetuneConfig``) from these rows, so that a row added here is
a field, a checked keyword and (with a flag) a command-line option with no other edit.
``tests/test_settings.py`` proves they agree. Where the API and the command line once
disagreed (finetune's epochs 2 / 4, batch size 64 / 32, calibration limit 2048 / 512),
the API's default won: the command line now trains as ``onnx2snn.finetune`` does.

No imports beyond the standard library: the command line's ``--help`` reads this table
without torch, and every layer of the package may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace
from typing import Any, Iterator, Mapping

_UNSET = object()


@dataclass(frozen=True)
class Setting:
    """One setting. ``flags``: its command-line option(s), () where it is API-only, and then
    ``api_only`` says why. ``cli_default``: where the command line's default must differ
    (``reason`` says why), else the command line uses ``default``. ``absent``: the value a
    saved SNN config lacking the key means (files from before the setting existed); by
    default ``default``."""

    name: str
    default: Any
    help: str = ""
    flags: tuple[str, ...] = ()
    choices: tuple | None = None
    api_only: str = ""
    cli_default: Any = _UNSET
    reason: str = ""
    absent: Any = _UNSET

    @property
    def command_line_default(self) -> Any:
        return self.default if self.cli_default is _UNSET else self.cli_default

    @property
    def saved_absent(self) -> Any:
        return self.default if self.absent is _UNSET else self.absent


class Table(Mapping):
    """Settings by name; ``defaults`` holds each default as an attribute (for signatures)."""

    def __init__(self, *rows: Setting):
        self._rows = MappingProxyType({r.name: r for r in rows})
        self.defaults = SimpleNamespace(**{r.name: r.default for r in rows})

    def __getitem__(self, name: str) -> Setting:
        return self._rows[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def argument(self, group, name: str, **kwargs) -> None:
        """``group.add_argument`` for ``name``: its flags, default, choices and help from the
        table; ``kwargs`` (type=, metavar=, ...) pass through."""
        s = self._rows[name]
        if not s.flags:
            raise KeyError(f"{name} has no command-line flag ({s.api_only})")
        extra = {"choices": list(s.choices)} if s.choices else {}
        group.add_argument(*s.flags, default=s.command_line_default, help=s.help, **extra, **kwargs)


# spikes per step of a neuron (the second takes the rare values above theta instead of clipping)
LEVELS = 2
# spikes per step of a re-encoding neuron (see scripts/bench_averaged.py)
REENCODE_LEVELS = 7
THRESHOLD = "mse"  # per channel, the threshold with the least squared error at the T of the conversion
PERCENTILE = THRESHOLD  # its name before 0.2 (the setting was called percentile)
NORMALIZATIONS = ("channel", "layer")
ENCODINGS = ("direct", "poisson")
REENCODE_CODINGS = ("unit", "binary")
ENCODE_ANALOG = ("auto", "off")
OBJECTIVES = ("energy", "timesteps")
DISTILL_MODES = ("auto", "mse")

CONVERT = Table(
    Setting("calibration_data", None, "calibration data: .npz with 'x' (float, or uint8 with --size/--mean/--std), "
            "an image folder or a COCO json", ("--calib",), cli_default=None,
            reason="required on the command line"),
    Setting("timesteps", 32, "default number of timesteps of the SNN (with --target: the largest T the search tries)",
            ("-T", "--timesteps")),
    Setting("normalization", "channel", "one threshold per channel or per layer", ("--norm",), NORMALIZATIONS),
    Setting("threshold", THRESHOLD, "how thresholds are set: 'mse' (least squared error of a neuron at -T steps), "
            "a percentile of activations in (0, 100], or 'max'", ("--threshold", "--percentile")),
    Setting("example_input", None, api_only="an example batch for exporting an nn.Module; the command line takes "
            "ONNX files"),
    Setting("input_shape", None, "e.g. 1,3,224,224 for files with dynamic spatial dims", ("--input-shape",)),
    Setting("replace_activations", None, "replace activations with no spiking form, e.g. SiLU=ReLU (repeat or "
            "comma-separate for more)", ("--replace",), absent={}),
    Setting("encoding", "direct", "input as analog current every step, or as Poisson spikes", ("--encoding",),
            ENCODINGS),
    Setting("v_init", 0.5, "initial membrane potential as a fraction of the threshold (0.5 rounds instead of "
            "flooring)", ("--v-init",)),
    Setting("signed_relu", True, "neurons never take back spikes (default: signed IF / signed IBT, which take back "
            "over-firing)", ("--no-signed",), cli_default=False,
            reason="one switch, --no-signed, turns off signed_relu and signed_ibt together", absent=False),
    Setting("signed_ibt", True, flags=("--no-signed",), cli_default=False,
            reason="one switch, --no-signed, turns off signed_relu and signed_ibt together", absent=False),
    Setting("levels", None, "multi-level firing: up to this many spikes per step (1 for NIR / binary-spike "
            f"hardware; default {LEVELS}; with --target: searched unless given)", ("--levels",), absent=1),
    Setting("batch_size", 64, "calibration samples per batch", ("--batch-size",)),
    Setting("calibration_limit", None, "use at most this many calibration samples", ("--limit",)),
    Setting("preprocess", None, flags=("--size", "--mean", "--std"), cli_default=None,
            reason="a Preprocess object in Python; three options on the command line"),
    Setting("progress", True, "no progress bars", ("--quiet",), cli_default=False,
            reason="the command line's switch is its negation, --quiet"),
    Setting("seed", 0, "random seed (Poisson input, calibration sampling)", ("--seed",)),
    Setting("correct_timesteps", None, "then correct biases and initial potentials for this T on the calibration "
            "data (onnx2snn.correct)", ("--correct-timesteps", "--calibrate-timesteps")),
    Setting("distributed", None, api_only="the command line runs distributed exactly when torchrun started it "
            "(the API's default, None)"),
    Setting("mse_tolerance", 0.0, "with 'mse': the largest threshold whose error is within this fraction of the "
            "least (fewer spikes; e.g. 0.25)", ("--mse-tolerance",)),
    Setting("target", None, "search T and the settings (thresholds, levels, tolerance) for the cheapest SNN that "
            "keeps this share in (0, 1] of the ANN's quality on a held-out part of --calib, e.g. 0.99", ("--target",)),
    Setting("objective", "energy", "with --target: least estimated energy, or smallest T", ("--objective",),
            OBJECTIVES),
    Setting("search", None, flags=("--postprocess", "--margin", "--search-data"), cli_default=None,
            reason="a SearchConfig (or dict) in Python: the rows of SEARCH; the command line has options for "
            "those with a flag"),
    Setting("reencode_levels", REENCODE_LEVELS, "spikes per step of the neurons that re-encode SiLU / GELU / "
            f"attention / norm outputs (time-averaged operators; default {REENCODE_LEVELS}; 'auto': per layer by "
            "sensitivity on the calibration data)", ("--reencode-levels",)),
    Setting("reencode_coding", "binary", "re-encoding spikes sent as binary-weighted events (default) or unit events",
            ("--reencode-coding",), ("binary", "unit")),
    Setting("encode_analog", "auto", "spike encoders before weight layers that would read an analog value every step "
            "(a linear bottleneck, a residual stream): 'auto' where it saves MACs, 'off'", ("--encode-analog",),
            ENCODE_ANALOG, absent="off"),
    Setting("spike_products", False, api_only="an approximation (operands of products of two computed tensors "
            "re-encoded into spikes, so attention products run by increments, cost per event); the command line "
            "keeps the exact default", absent=False),
    Setting("pwl_activations", False, "SiLU / GELU as 16-segment piecewise-linear fits (max abs error < 0.01): "
            "less float work per step, an approximation", ("--pwl-activations",), absent=False),
)

FINETUNE = Table(
    Setting("timesteps", 8, "the T the SNN will run", ("-T", "--timesteps")),
    Setting("epochs", 2, "passes over the training images", ("--epochs",)),
    Setting("loss", None, "'distill' (label-free, from the source model), or a zoo loss / preset name with "
            "labelled data", ("--loss",), cli_default="distill",
            reason="the command converts a model without labels: label-free distillation unless a loss is named"),
    Setting("lr", 1e-3, "Adam learning rate (cosine schedule)", ("--lr",)),
    Setting("noise", "gaussian", api_only="the training noise's kind: a research setting"),
    Setting("noise_scale", 0.25, api_only="the training noise's size: a research setting"),
    Setting("per_channel", True, api_only="per-layer thresholds are a research setting"),
    Setting("calibration_data", None, api_only="the command line calibrates on the first --limit training images"),
    Setting("batch_size", 64, "images per step", ("--batch-size",)),
    Setting("seed", 0, "random seed (training is deterministic)", ("--seed",)),
    Setting("progress", True, "no progress bars", ("--quiet",), cli_default=False,
            reason="the command line's switch is its negation, --quiet"),
    Setting("device", None, api_only="the command line trains on the CPU (the API's default)"),
    Setting("example_input", None, api_only="an example batch for exporting an nn.Module; the command line takes "
            "ONNX files"),
    Setting("input_shape", None, "e.g. 1,3,640,640 for files with dynamic spatial dims", ("--input-shape",)),
    Setting("replace_activations", None, "replace activations with no spiking form, e.g. SiLU=ReLU (repeat or "
            "comma-separate for more)", ("--replace",)),
    Setting("threshold", THRESHOLD, "how the initial thresholds are set: 'mse' (least squared error at -T steps), "
            "a percentile in (0, 100], or 'max'", ("--threshold", "--percentile")),
    Setting("levels", LEVELS, "spikes a neuron may fire per step (1 for NIR / binary-spike hardware)", ("--levels",)),
    Setting("calibration_limit", 2048, "calibration images for the initial thresholds", ("--limit",)),
    Setting("weight_decay", 0.0, api_only="an optimizer detail"),
    Setting("grad_clip", 10.0, api_only="an optimizer detail"),
    Setting("preprocess", None, flags=("--size", "--mean", "--std"), cli_default=None,
            reason="a Preprocess object in Python; three options on the command line"),
    Setting("distributed", None, api_only="the command line runs distributed exactly when torchrun started it "
            "(the API's default, None)"),
    Setting("distill_weight", None, "with a task loss: add this times the distillation loss", ("--distill-weight",)),
    Setting("temperature", 2.0, api_only="the distillation's softmax temperature: a research setting"),
    Setting("feature_weight", 0.0, api_only="the distillation's per-neuron terms: a research setting"),
    Setting("rate_weight", 0.0, "weight of a spike-rate penalty: fewer spikes (less energy) for some accuracy "
            "(0: off)", ("--rate-weight",)),
    Setting("distill_mode", "auto", api_only="the distillation's loss per tensor: a research setting"),
)

# the search's own settings (convert's search=, a SearchConfig or a dict; None: by kind of network,
# see tuning/search.py KIND_DEFAULTS); objective is also a keyword of convert (its row is CONVERT's)
SEARCH = Table(
    CONVERT["objective"],
    Setting("postprocess", None, "with --target on a detector: its decoder (tiny-yolo, yolo_relu, yolov8; default: "
            "yolov8 where the ONNX metadata, YOLO data or the output says so); quality is then mAP@0.5 against the "
            "ANN's own detections (or --search-data's labels)", ("--postprocess",)),
    Setting("category_ids", None, api_only="a detector's class id -> dataset category id map: Python only"),
    Setting("metric", None, api_only="a quality function of (snn outputs, ann outputs): Python only"),
    Setting("holdout", 0.25, api_only="the share of the calibration data held out to validate on"),
    Setting("max_validation", None, api_only="held-out samples at most (None: 256, detectors 96)"),
    Setting("percentiles", None, api_only="threshold methods tried (None: mse, 99.99, 99.9; detectors mse, 99.99)"),
    Setting("mse_tolerances", None, api_only="mse tolerances tried (None: 0, 0.25, 0.5; detectors 0, 0.25)"),
    Setting("levels", None, api_only="spikes per step tried (None: the default and 1, unless levels= is given)"),
    Setting("reencode_levels", None, api_only="re-encoding spikes per step tried (None: the default, 2, 3, 4)"),
    Setting("v_init", None, api_only="initial potentials tried (None: the default only)"),
    Setting("allow_unsigned", False, api_only="also try neurons without take-back spikes"),
    Setting("max_runs", 20, api_only="SNN runs at most"),
    Setting("early_stop", 0.03, api_only="stop a run after a quarter of the held-out samples when no T comes "
            "within this of the target (None: never)"),
    Setting("gt_confidence", 0.5, api_only="detectors: the ANN's detections above this confidence are the truth"),
    Setting("margin", "auto", "with --target: held-out quality a point needs above the target, for the held-out "
            "data's noise: 'auto' (one standard error on the held-out samples / objects, default) or a share, e.g. 0 "
            "or 0.005", ("--margin",)),
    Setting("validation", None, "with --target: labeled validation data, as verify --data takes it (.npz with x "
            "and y, class folders; detectors: a COCO json, YOLO data.yaml): quality is then the real metric over the "
            "ANN's, and all of --calib goes to the statistics", ("--search-data", "--tune-data")),
    Setting("annotations", None, api_only="a COCO json for validation images: Python only"),
    Setting("seed", 0, api_only="the seed of the held-out split"),
    Setting("spike_products", (False, True), api_only="spike_products tried where the network has products of two "
            "computed tensors (exact products first)"),
    Setting("pwl_activations", (False,), api_only="pwl_activations tried where the network has SiLU / GELU "
            "(default: the exact ops only; (False, True) lets the search take the piecewise-linear fits)"),
)

# old keyword -> new (a DeprecationWarning, then the new one): convert / finetune keywords and saved keys
RENAMED = {"percentile": "threshold", "calibrate_timesteps": "correct_timesteps", "tune_options": "search"}
# the parts of a call: convert's settings in SAVED make ConvertConfig; SEARCH_KEYWORDS go to the search;
# the rest of CONVERT (and FINETUNE's RUN_TIME rows) are run-time matters, never saved
SEARCH_KEYWORDS = ("target", "objective", "search")
RUN_TIME = ("calibration_data", "example_input", "input_shape", "preprocess", "progress", "distributed", "device")

# what convert saves with the SNN (snn.config), in this order
SAVED = ("timesteps", "normalization", "threshold", "replace_activations", "encoding", "v_init", "signed_relu",
         "signed_ibt", "levels", "seed", "mse_tolerance", "reencode_levels", "reencode_coding", "encode_analog",
         "spike_products", "pwl_activations")


def saved(config: Mapping[str, Any], name: str) -> Any:
    """``config[name]`` of a saved SNN config (under its old name in files from before a
    rename), or what a file from before the setting meant."""
    if name not in config:
        old = [k for k, v in RENAMED.items() if v == name and k in config]
        if old:
            return config[old[0]]
    return config.get(name, CONVERT[name].saved_absent)


def ibt_levels(config: Mapping[str, Any]) -> int:
    """Spikes per step of IBT (LeakyReLU / PReLU) neurons: ``levels`` since they fire multi-level
    spikes; files saved before that (no ``"ibt_levels"`` key) fired one."""
    return int(config.get("ibt_levels", 1))


def snn_config(**values: Any) -> dict:
    """The settings saved with an SNN, from convert's (checked) values: the keys of ``SAVED``
    and ``ibt_levels`` (always ``levels``; written so that older files, which lack it, are
    told apart)."""
    missing = [k for k in SAVED if k not in values]
    extra = [k for k in values if k not in SAVED]
    if missing or extra:
        raise KeyError(f"snn_config: missing {missing}, unknown {extra}")
    config = {k: values[k] for k in SAVED}
    config["replace_activations"] = dict(config["replace_activations"] or {})
    config["ibt_levels"] = config["levels"]
    return config


__all__ = ["Setting", "Table", "CONVERT", "FINETUNE", "SEARCH", "SAVED", "RENAMED", "SEARCH_KEYWORDS", "RUN_TIME",
           "THRESHOLD", "saved", "ibt_levels", "snn_config", "LEVELS",
           "REENCODE_LEVELS", "PERCENTILE", "NORMALIZATIONS", "ENCODINGS", "REENCODE_CODINGS", "ENCODE_ANALOG",
           "OBJECTIVES",
           "DISTILL_MODES"]
