"""One table of settings (onnx2snn.settings): the API, the command line, the settings search and
a saved SNN agree on every default, and every keyword has a flag or a reason to be API-only."""

import argparse
import inspect

import pytest
import torch

import onnx2snn
from onnx2snn import settings
from onnx2snn.calibration.finetune import finetune
from onnx2snn.cli import build_parser


def _subparser(name: str) -> argparse.ArgumentParser:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _cli_defaults(name: str) -> dict:
    """option string -> argparse default of ``onnx2snn <name>``."""
    return {o: a.default for a in _subparser(name)._actions for o in a.option_strings}


def _keywords(fn, skip=("source", "train_data")) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if k not in skip}


@pytest.mark.parametrize("fn, table", [(onnx2snn.convert, settings.CONVERT), (finetune, settings.FINETUNE)],
                         ids=["convert", "finetune"])
def test_signature_is_the_table(fn, table):
    """Every keyword is in the table with the signature's default, and nothing else is."""
    kw = _keywords(fn)
    assert set(kw) == set(table), (set(kw) ^ set(table))
    assert {k: v for k, v in kw.items()} == {k: table[k].default for k in kw}


@pytest.mark.parametrize("command, table", [("convert", settings.CONVERT), ("finetune", settings.FINETUNE)])
def test_cli_defaults_are_the_table(command, table):
    """Each flag's argparse default is the API's, or the table says why not; API-only
    settings say why."""
    cli = _cli_defaults(command)
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
    """The values that had drifted apart, by name."""
    from onnx2snn.graph.averaged import REENCODE_LEVELS
    from onnx2snn.tuning.search import DEFAULTS

    conv, ft = _cli_defaults("convert"), _cli_defaults("finetune")
    sig, ft_sig = _keywords(onnx2snn.convert), _keywords(finetune)
    assert sig["reencode_levels"] == conv["--reencode-levels"] == REENCODE_LEVELS == 7
    assert (ft_sig["epochs"], ft_sig["batch_size"], ft_sig["calibration_limit"]) == \
        (ft["--epochs"], ft["--batch-size"], ft["--limit"]) == (2, 64, 2048)
    assert conv["--margin"] == DEFAULTS["margin"] and conv["--objective"] == sig["objective"]
    from onnx2snn import checks

    for name in ("reencode_levels", "reencode_coding", "target", "margin", "v_init"):
        assert name in checks.CLI_NAMES, name


def test_search_fallbacks_are_the_table():
    """The search's starting point is the config convert writes; a key it lacks (reencode_levels
    before it existed) falls back to what load reads, not to a default of its own."""
    from onnx2snn.tuning.search import Setting

    full = settings.snn_config(**{**{k: settings.CONVERT[k].default for k in settings.SAVED}, "levels": settings.LEVELS})
    s = Setting.of(full, reencoders=True)
    assert (s.percentile, s.mse_tolerance, s.v_init, s.signed, s.reencode) == \
        (settings.PERCENTILE, 0.0, 0.5, True, settings.REENCODE_LEVELS)
    old = {k: v for k, v in full.items() if k != "reencode_levels"}
    assert Setting.of(old, reencoders=True).reencode == settings.saved({}, "reencode_levels") == 7
    assert Setting.of(full, reencoders=False).reencode is None


def test_saved_config_is_the_table(tmp_path):
    """A converted SNN's config holds every saved setting at the API's default; ibt_levels is
    levels; a file lacking a key loads with what files before the setting meant."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x = torch.rand(16, 4)
    snn = onnx2snn.convert(net, x, example_input=x[:1], progress=False)
    for name in settings.SAVED:
        want = settings.CONVERT[name].default
        if name == "levels":
            want = settings.LEVELS  # None: a fine-tuned twin's levels, else the finetune default
        if name == "replace_activations":
            want = {}
        assert snn.config[name] == want, name
    assert snn.config["ibt_levels"] == snn.config["levels"]
    again = onnx2snn.load(snn.save(tmp_path / "a.snn.pt"))
    assert {k: again.config[k] for k in settings.SAVED} == {k: snn.config[k] for k in settings.SAVED}
    assert settings.saved({}, "levels") == 1 and settings.ibt_levels({}) == 1  # older files: one spike
    assert settings.saved({}, "signed_relu") is False and settings.saved({}, "v_init") == 0.5


def test_levels_none_resolves_to_finetunes_default():
    from onnx2snn.calibration.quantized import DEFAULT_LEVELS

    assert DEFAULT_LEVELS == settings.LEVELS == settings.FINETUNE["levels"].default
    assert settings.CONVERT["levels"].default is None


def test_snn_config_refuses_unknown_keys():
    with pytest.raises(KeyError, match="unknown"):
        settings.snn_config(**{k: 0 for k in settings.SAVED}, typo=1)
