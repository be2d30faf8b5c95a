"""Progress: a bar on a terminal, a few plain lines in a log, nothing when turned off."""

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import onnx2snn
from onnx2snn import progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("env, enabled, want", [
    ("0", True, "off"), ("off", True, "off"), ("1", True, "bar"), ("", True, "log"), ("1", False, "off"),
    (None, False, "off"), (None, True, "log")])
def test_mode(monkeypatch, env, enabled, want):
    """pytest's stderr is not a terminal: the log lines unless the variable or the caller say otherwise."""
    if env is None:
        monkeypatch.delenv(progress.ENV, raising=False)
    else:
        monkeypatch.setenv(progress.ENV, env)
    assert progress.mode(enabled) == want


def test_log_lines_per_quarter(monkeypatch, caplog):
    monkeypatch.delenv(progress.ENV, raising=False)
    with caplog.at_level(logging.INFO, logger="onnx2snn.progress"):
        assert list(progress.bar(range(100), desc="step", unit="batch")) == list(range(100))
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 5, msgs  # start, 25 / 50 / 75 %, done
    assert msgs[0] == "step: started (100 batches)"
    assert [m.split(": ")[1].split(" ")[0] for m in msgs[1:4]] == ["25/100", "50/100", "75/100"]
    assert msgs[-1].startswith("step: done, 100/100 batches (100%)")


def test_off_writes_nothing(monkeypatch, caplog):
    monkeypatch.setenv(progress.ENV, "0")
    with caplog.at_level(logging.INFO, logger="onnx2snn.progress"):
        with progress.bar(total=10, desc="x") as b:
            b.update(10)
    assert not caplog.records


SNIPPET = textwrap.dedent("""
    import torch, onnx2snn
    from onnx2snn.progress import log_to_stderr
    log_to_stderr()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 3))
    snn = onnx2snn.convert(model, torch.rand(64, 1, 8, 8), timesteps=4, batch_size=8,
                           example_input=torch.rand(1, 1, 8, 8))
    print(snn(torch.rand(2, 1, 8, 8)).shape)
""")


def _run(env_value):
    env = {k: v for k, v in os.environ.items() if k != progress.ENV}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    if env_value is not None:
        env[progress.ENV] = env_value
    p = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, env=env, timeout=300)
    err = p.stderr.decode()  # bytes: text mode would turn '\r' into '\n'
    assert p.returncode == 0, err
    return err


def test_a_log_file_has_lines_not_carriage_returns():
    """stderr to a pipe (a file, CI): a few whole lines, no bar redraws."""
    err = _run(None)
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("calibrating")]
    assert lines and lines[-1].startswith("calibrating: done, 64/64 samples"), err
    assert len(lines) <= 6, err


def test_env_forces_the_bar_or_silence():
    assert "\r" in _run("1")  # the tqdm bar, even into a pipe (shows it is a bar, not lines)
    assert "calibrating" not in _run("0")
