"""One table of settings (onnx2snn.settings): the API, its config dataclasses, the command line,
the settings search and a saved SNN agree on every default; a typo gets a "did you mean"; old
keyword names still work with a DeprecationWarning; a search candidate is a replace() of the config."""

import argparse
import dataclasses
import inspect
import warnings

import pytest
import torch

import onnx2snn
from onnx2snn import ConfigError, settings
from onnx2snn.calibration.finetune import finetune
from onnx2snn.cli import build_parser
from onnx2snn.config import ConvertConfig, ConvertRun, FinetuneConfig, FinetuneRun, SearchConfig, names


def _subparser(name: str) -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _cli_defaults(name: str) -> dict:
    """option string -> argparse default of ``onnx2snn <name>``."""
    return {o: a.default for a in _subparser(name)._actions for o in a.option_strings}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_dataclasses_are_the_table():
    """ConvertConfig is what is saved (SAVED); with the run-time matters and the search keywords it
    is every row of CONVERT; SearchConfig is SEARCH, FinetuneConfig + FinetuneRun are FINETUNE; each
    field's default is its row's."""
    assert names(ConvertConfig) == settings.SAVED
    every = set(names(ConvertConfig)) | set(names(ConvertRun)) | set(settings.SEARCH_KEYWORDS) | {"calibration_data"}
    assert every == set(settings.CONVERT)
    assert not set(names(ConvertRun)) & set(settings.SAVED)
    for cls, table in ((ConvertConfig, settings.CONVERT), (ConvertRun, settings.CONVERT), (SearchConfig, settings.SEARCH),
                       (FinetuneConfig, settings.FINETUNE), (FinetuneRun, settings.FINETUNE)):
        assert _defaults(cls) == {k: table[k].default for k in names(cls)}, cls.__name__
    assert set(names(FinetuneConfig)) | set(names(FinetuneRun)) == set(settings.FINETUNE)
    assert settings.SEARCH["objective"] is settings.CONVERT["objective"]  # one row, two tables


@pytest.mark.parametrize("fn", [onnx2snn.convert, finetune], ids=["convert", "finetune"])
def test_at_most_eight_named_parameters(fn):
    params = inspect.signature(fn).parameters.values()
    named = [p for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    assert len(named) <= 8 and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def test_every_row_is_a_keyword():
    """convert_settings / finetune_settings take every row of the tables (at its default) and give
    the default configs."""
    from onnx2snn.config import convert_settings, finetune_settings

    kw = {k: s.default for k, s in settings.CONVERT.items() if k not in ("calibration_data", "target", "search")}
    cfg, run, sc, steered = convert_settings(None, None, kw)
    assert (cfg, run, sc) == (ConvertConfig(), ConvertRun(), SearchConfig()) and steered  # objective= steers
    cfg, run = finetune_settings(None, {k: s.default for k, s in settings.FINETUNE.items()})
    assert (cfg, run) == (FinetuneConfig(), FinetuneRun())


@pytest.mark.parametrize("command, tables", [("convert", (settings.CONVERT, settings.SEARCH)),
                                             ("finetune", (settings.FINETUNE,))])
def test_cli_defaults_are_the_table(command, tables):
    """Each flag's argparse default is the API's, or the table says why not; API-only settings say why."""
    cli = _cli_defaults(command)
    for table in tables:
        for name, s in table.items():
            if not s.flags:
                assert s.api_only, f"{command}: {name} has no flag and no reason to be API-only"
                continue
            if s.reason:  # a flag with a default of its own (an inverted switch, a dict spread over options)
                assert all(f in cli for f in s.flags), (name, s.flags)
                if len(s.flags) == 1:
                    assert cli[s.flags[0]] == s.cli_default, (command, name)
                continue
            for f in s.flags:
                assert f in cli, f"{command}: {name}'s flag {f} is missing"
                assert cli[f] == s.default, f"{command} {f}: CLI default {cli[f]!r}, API default {s.default!r}"


def test_inverted_switches_match_the_api():
    """--no-signed and --quiet are off by default: the API's signed neurons and progress."""
    for command, table in (("convert", settings.CONVERT), ("finetune", settings.FINETUNE)):
        cli = _cli_defaults(command)
        assert cli["--quiet"] is False and table["progress"].default is True
    cli = _cli_defaults("convert")
    assert cli["--no-signed"] is False and settings.CONVERT["signed_relu"].default is True
    assert settings.CONVERT["signed_ibt"].default is True


def test_drift_found_in_issue_30_is_gone():
    """The values that had drifted apart, by name; every flagged setting has its CLI name."""
    from onnx2snn import checks
    from onnx2snn.graph.averaged import REENCODE_LEVELS
    from onnx2snn.tuning.search import DEFAULTS
    from onnx2snn.tuning.validation import GT_CONFIDENCE

    conv, ft = _cli_defaults("convert"), _cli_defaults("finetune")
    assert ConvertConfig().reencode_levels == conv["--reencode-levels"] == REENCODE_LEVELS == 7
    f = FinetuneConfig()
    assert (f.epochs, f.batch_size, f.calibration_limit) == (ft["--epochs"], ft["--batch-size"], ft["--limit"]) \
        == (2, 64, 2048)
    assert conv["--margin"] == DEFAULTS["margin"] == SearchConfig().margin
    assert conv["--objective"] == DEFAULTS["objective"] == "energy"
    assert GT_CONFIDENCE == SearchConfig().gt_confidence
    for table in (settings.CONVERT, settings.FINETUNE, settings.SEARCH):
        for name, s in table.items():
            if s.flags and not s.reason:
                assert name in checks.CLI_NAMES, name
    for name in ("reencode_levels", "reencode_coding", "target", "margin", "v_init", "threshold", "correct_timesteps"):
        assert name in checks.CLI_NAMES, name


def test_did_you_mean():
    net, x = _net(), torch.rand(8, 4)
    with pytest.raises(ConfigError, match=r"unknown setting timestep=: did you mean timesteps=\?"):
        onnx2snn.convert(net, x, example_input=x[:1], timestep=8)
    with pytest.raises(ConfigError, match=r"unknown setting treshold=: did you mean threshold=\?"):
        onnx2snn.convert(net, x, example_input=x[:1], treshold=99.9)
    with pytest.raises(ConfigError, match=r"unknown setting epoch=: did you mean epochs=\?"):
        finetune(net, x, example_input=x[:1], epoch=1)
    with pytest.raises(ConfigError, match=r"SearchConfig\(\) got an unknown setting margn=: did you mean margin=\?"):
        onnx2snn.convert(net, x, example_input=x[:1], target=0.9, search={"margn": 0})
    with pytest.raises(ConfigError, match=r"config must be a ConvertConfig"):
        onnx2snn.convert(net, x, FinetuneConfig(), example_input=x[:1])
    with pytest.raises(ConfigError, match=r"objective= and search= steer the settings search: pass target="):
        onnx2snn.convert(net, x, example_input=x[:1], search={"margin": 0})


def _deprecated(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)
                 and w.filename == __file__]


def test_old_names_warn_and_work(tmp_path):
    """percentile= / calibrate_timesteps= / tune_options= / onnx2snn.calibrate: a DeprecationWarning
    pointing at the caller's line, and the same network as the new names give."""
    net, x = _net(), torch.rand(64, 4)
    new = onnx2snn.convert(net, x, example_input=x[:1], threshold=99.9, correct_timesteps=4, progress=False)
    old, msgs = _deprecated(onnx2snn.convert, net, x, example_input=x[:1], percentile=99.9, calibrate_timesteps=4,
                            progress=False)
    assert any("percentile=" in m and "threshold=" in m for m in msgs), msgs
    assert any("calibrate_timesteps=" in m and "correct_timesteps=" in m for m in msgs), msgs
    assert old.config["threshold"] == new.config["threshold"] == 99.9
    assert old.config["calibration"] == new.config["calibration"]  # both corrected for T=4
    y_new, y_old = new(x[:8], timesteps=4), old(x[:8], timesteps=4)
    assert torch.allclose(y_new, y_old, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="pass only threshold="):
        onnx2snn.convert(net, x, example_input=x[:1], threshold=99.9, percentile=99.9)
    snn = onnx2snn.convert(net, x, example_input=x[:1], timesteps=4, progress=False)
    ref = onnx2snn.correct(onnx2snn.convert(net, x, example_input=x[:1], timesteps=4, progress=False), x,
                           progress=False)
    _, msgs = _deprecated(onnx2snn.calibrate, snn, x, progress=False)
    assert any("onnx2snn.correct" in m for m in msgs), msgs
    assert torch.equal(snn(x[:8]), ref(x[:8]))
    _, msgs = _deprecated(finetune, net, x, example_input=x[:1], epochs=0, percentile="max", progress=False)
    assert any("threshold=" in m for m in msgs), msgs
    twin = onnx2snn.import_onnx(onnx2snn.export_onnx(net, x[:1], f"{tmp_path}/m.onnx"))
    (th_old, _), msgs = _deprecated(onnx2snn.calibrate_thresholds, twin, x, percentile=99.0, progress=False)
    th_new, _ = onnx2snn.calibrate_thresholds(twin, x, threshold=99.0, progress=False)
    assert any("calibrate_thresholds(percentile=" in m for m in msgs) and th_old.keys() == th_new.keys()
    assert all(torch.equal(th_old[k], th_new[k]) for k in th_new)
    with pytest.raises(ConfigError, match="did you mean threshold="):
        onnx2snn.calibrate_thresholds(twin, x, treshold=99.0)
    # the command line's old spellings are aliases of the new options
    args = build_parser().parse_args(["convert", __file__, "--calib", __file__, "--percentile", "99", "--calibrate-timesteps",
                                      "4", "--target", "0.9", "--tune-data", __file__, "--tune-report", "d"])
    assert (args.threshold, args.correct_timesteps, args.validation, args.search_report) == (99.0, 4, __file__, "d")


def test_config_round_trips_through_save_and_load(tmp_path):
    """A converted SNN's config is ConvertConfig's defaults (levels resolved); it survives save / load;
    convert(config=snn.config) builds the same network; a file from before the renames (percentile,
    no reencode_levels) reads as load reads it."""
    net, x = _net(), torch.rand(64, 4)
    snn = onnx2snn.convert(net, x, example_input=x[:1], progress=False)
    cfg = ConvertConfig.from_saved(snn.config)
    assert cfg == dataclasses.replace(ConvertConfig(), levels=settings.LEVELS, replace_activations={})
    assert snn.config == {**cfg.to_dict(), **{k: v for k, v in snn.config.items() if k not in cfg.to_dict()}}
    assert snn.config["ibt_levels"] == snn.config["levels"]
    again = onnx2snn.load(snn.save(tmp_path / "a.snn.pt"))
    assert ConvertConfig.from_saved(again.config) == cfg
    twin = onnx2snn.convert(net, x, again.config, example_input=x[:1], progress=False)
    assert torch.equal(twin(x[:8]), snn(x[:8]))
    changed = onnx2snn.convert(net, x, cfg, timesteps=4, example_input=x[:1], progress=False)
    assert ConvertConfig.from_saved(changed.config) == dataclasses.replace(cfg, timesteps=4)
    old = {k: v for k, v in snn.config.items() if k not in ("threshold", "reencode_levels", "ibt_levels")}
    old["percentile"] = 99.9
    read = ConvertConfig.from_saved(old)
    assert read.threshold == 99.9 and read.reencode_levels == settings.saved({}, "reencode_levels") == 7
    assert settings.saved({}, "levels") == 1 and settings.ibt_levels({}) == 1  # older files: one spike
    assert settings.saved({}, "signed_relu") is False and settings.saved({}, "v_init") == 0.5
    # an old file on disk: the config key renamed back, loads and runs as before
    blob = torch.load(tmp_path / "a.snn.pt", weights_only=True)
    import json

    conf = json.loads(blob["config"])
    conf["percentile"] = conf.pop("threshold")
    blob["config"] = json.dumps(conf)
    torch.save(blob, tmp_path / "old.snn.pt")
    loaded = onnx2snn.load(tmp_path / "old.snn.pt")
    assert ConvertConfig.from_saved(loaded.config) == cfg and torch.equal(loaded(x[:8]), snn(x[:8]))


def test_config_is_frozen_and_hashable():
    cfg = ConvertConfig(replace_activations={"SiLU": "ReLU"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.timesteps = 4
    with pytest.raises(TypeError, match="frozen"):
        cfg.replace_activations["GELU"] = "ReLU"
    assert len({cfg, dataclasses.replace(cfg), ConvertConfig(replace_activations={"SiLU": "ReLU"})}) == 1
    import copy

    assert copy.deepcopy(cfg) == cfg


def test_search_candidates_are_replaces_of_the_config():
    """Every candidate of the space is the same config type, differs from the start only in the
    fields the search varies, and is hashable (the thresholds' cache key)."""
    from onnx2snn.tuning.search import VARIED, _settings, check_options, label

    start = dataclasses.replace(ConvertConfig(), levels=2, replace_activations={})
    o = check_options({"allow_unsigned": True, "v_init": (0.5, 0.0)})
    cands = _settings(start, o, levels_free=True, reencoders=True)
    assert cands[0] == start and len(cands) == len(set(cands)) > 10
    varied = {n for f in VARIED for n in ((f,) if isinstance(f, str) else f)}
    for c in cands:
        assert type(c) is ConvertConfig
        diff = {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if getattr(c, f.name) != getattr(start, f.name)}
        assert set(diff) <= varied and dataclasses.replace(start, **diff) == c
    assert {c.reencode_levels for c in cands} == {7, 2, 3, 4} and {c.levels for c in cands} == {2, 1}
    assert label(start, True) == "mse, levels=2, reencode=7"
    # without re-encoding neurons their spikes per step are not searched
    assert {c.reencode_levels for c in _settings(start, o, True, False)} == {7}


def test_search_end_to_end_returns_a_replace():
    """convert(target=...) saves a config that is a replace() of the one it was given."""
    net, x = _net(), torch.rand(128, 4)
    snn = onnx2snn.convert(net, x, example_input=x[:1], target=0.5, timesteps=8, progress=False,
                           search=SearchConfig(max_runs=2, margin=0))
    got = ConvertConfig.from_saved(snn.config)
    start = dataclasses.replace(ConvertConfig(), timesteps=8, levels=2, replace_activations={})
    assert got == dataclasses.replace(start, timesteps=got.timesteps, threshold=got.threshold, levels=got.levels,
                                      mse_tolerance=got.mse_tolerance)
    assert got.timesteps <= 8 and snn.config["tune"] and len(snn.tune_report.candidates) <= 2
    s2, msgs = _deprecated(onnx2snn.convert, net, x, example_input=x[:1], target=0.5, timesteps=8, progress=False,
                           tune_options={"max_runs": 2, "margin": 0})
    assert any("search=" in m for m in msgs) and ConvertConfig.from_saved(s2.config) == got


def test_levels_none_resolves_to_finetunes_default():
    from onnx2snn.calibration.quantized import DEFAULT_LEVELS

    assert DEFAULT_LEVELS == settings.LEVELS == settings.FINETUNE["levels"].default
    assert settings.CONVERT["levels"].default is None


def test_snn_config_refuses_unknown_keys():
    with pytest.raises(KeyError, match="unknown"):
        settings.snn_config(**{k: 0 for k in settings.SAVED}, typo=1)
