"""Data parallelism: real 2-process gloo jobs on the CPU (torchrun) give what one process gives:
thresholds, bias/potential correction and verify metrics exactly, fine-tuning to rounding,
and the CLI works unchanged under torchrun. Plus the pieces, in one process: sharding by
batch without duplicates, and histograms that do not depend on the order of the data."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import onnx2snn
from onnx2snn import distributed as dist
from onnx2snn.calibration.data import iter_batches
from onnx2snn.calibration.observers import StreamingHistogram
from onnx2snn.export import export_zoo_model

HERE = os.path.dirname(__file__)
ROOT = os.path.dirname(HERE)


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, cwd, nproc=2):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port())] + args
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def alone(args, cwd):
    return subprocess.run([sys.executable] + args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _ok(r):
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])


@pytest.fixture(scope="module")
def job_files(tmp_path_factory, digits):
    d = tmp_path_factory.mktemp("dist")
    model = export_zoo_model("digits_resnet", d / "m.onnx")
    xtr, ytr, xte, yte = (t.numpy() for t in digits)
    np.savez(d / "d.npz", xtr=xtr, ytr=ytr, xte=xte, yte=yte)
    np.savez(d / "calib.npz", x=xtr[:200])
    np.savez(d / "test.npz", x=xte[:100], y=yte[:100])
    return d, str(model)


# -- in one process: the pieces ------------------------------------------------------
def test_shards_cover_every_batch_once(tmp_path):
    x = torch.arange(230, dtype=torch.float32).reshape(230, 1)
    y = torch.arange(230)
    one = list(iter_batches((x, y), 48, with_labels=True, limit=220))
    parts = [list(iter_batches((x, y), 48, with_labels=True, limit=220, shard=dist.Shard(r, 3))) for r in range(3)]
    assert [len(p) for p in parts] == [2, 2, 1]
    dealt = sorted((p for part in parts for p in part), key=lambda b: int(b[1][0]))
    assert len(dealt) == len(one) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
                                          for a, b in zip(one, dealt))
    # a map-style dataset: each rank loads only its own samples
    loaded = []

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, i):
            loaded.append(i)
            return torch.full((1,), float(i)), i

    batches = list(iter_batches(Data(), 4, with_labels=True, shard=dist.Shard(1, 2)))
    assert sorted(loaded) == [4, 5, 6, 7] and [b[1].tolist() for b in batches] == [[4, 5, 6, 7]]
    assert list(iter_batches(Data(), 4, shard=dist.Shard(3, 4))) == []  # more ranks than batches


def test_histogram_counts_do_not_depend_on_order():
    """Ranges are powers of two strictly above the data: the same counts whatever the order
    of the batches, and two shards regrouped to the larger range add up to the whole."""
    g = torch.Generator().manual_seed(0)
    vals = torch.cat([torch.rand(3, 500, generator=g) * s for s in (0.3, 5.0, 1.0, 64.0, 2.0)], 1)
    vals[0, 7] = 4.0  # exactly a power of two
    vals[1, :50] = 0.0
    batches = vals.split(250, 1)
    fwd, back = StreamingHistogram(3, 256), StreamingHistogram(3, 256)
    for b in batches:
        fwd.update(b)
    for b in reversed(batches):
        back.update(b)
    assert torch.equal(fwd.counts, back.counts) and torch.equal(fwd.upper, back.upper)
    a, b = StreamingHistogram(3, 256), StreamingHistogram(3, 256)
    for k, part in enumerate(batches):
        (a if k % 2 else b).update(part)
    upper = torch.maximum(a.upper, b.upper)
    a._regroup(upper)
    b._regroup(upper)
    assert torch.equal(a.counts + b.counts, fwd.counts)


def test_alone_without_torchrun():
    assert dist.init(None) == dist.ALONE and dist.init(False) == dist.ALONE
    with pytest.raises(onnx2snn.ConfigError, match="torchrun"):
        dist.init(True)
    with pytest.raises(onnx2snn.ConfigError, match="distributed"):
        dist.init("yes")


# -- real jobs: 2 processes (gloo) against 1 -------------------------------------------
def test_two_processes_equal_one(job_files):
    d, model = job_files
    _ok(alone([os.path.join(HERE, "dist_job.py"), model, "d.npz", "one.pt"], d))
    _ok(torchrun([os.path.join(HERE, "dist_job.py"), model, "d.npz", "two.pt"], d))
    one, two = (torch.load(d / f, weights_only=False) for f in ("one.pt", "two.pt"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("thresholds", "bias", "v_init"):  # exact: max |diff| = 0
        assert one[key].keys() == two[key].keys()
        assert all(torch.equal(one[key][k], two[key][k]) for k in one[key]), key
    stats = next(iter(two["calibration_stats"].values()))
    assert stats["world_size"] == 2 and sum(stats["samples_per_rank"]) == 200 == stats["samples"]
    assert stats["samples_per_rank"] == [48 + 48 + 8, 48 + 48]  # batches 0, 2, 4 and 1, 3
    assert two["calibration"]["samples_per_rank"] == [64, 56] and two["calibration"]["world_size"] == 2
    assert one["metrics"] == two["metrics"] and one["layers"] == two["layers"] and one["n_samples"] == 100
    assert two["verify_config"] == {"world_size": 2, "samples_per_rank": [52, 48]}
    # fine-tuning: the same updates up to the rounding of gradient sums
    for k, v in one["finetune_thresholds"].items():
        assert torch.allclose(v, two["finetune_thresholds"][k], rtol=1e-4, atol=1e-6), k
    assert abs(one["finetune_loss"] - two["finetune_loss"]) <= 1e-5 * abs(one["finetune_loss"])


def test_cli_under_torchrun(job_files):
    d, model = job_files
    conv = ["convert", model, "--calib", "calib.npz", "-T", "8", "--quiet"]
    ver = ["verify", "--data", "test.npz", "--timesteps", "1,4,8", "--batch-size", "16", "--quiet"]
    _ok(alone(["-m", "onnx2snn"] + conv + ["-o", "one.snn.pt"], d))
    r = torchrun(["-m", "onnx2snn"] + conv + ["-o", "two.snn.pt"], d)
    _ok(r)
    assert r.stdout.count("wrote two.snn.pt") == 1  # rank 0 writes and prints
    a, b = onnx2snn.load(d / "one.snn.pt"), onnx2snn.load(d / "two.snn.pt")
    assert all(torch.equal(a.thresholds[k], b.thresholds[k]) for k in a.thresholds)
    _ok(alone(["-m", "onnx2snn", ver[0], "one.snn.pt"] + ver[1:] + ["--out", "rep1"], d))
    _ok(torchrun(["-m", "onnx2snn", ver[0], "two.snn.pt"] + ver[1:] + ["--out", "rep2"], d))
    r1, r2 = (json.loads((d / f / "report.json").read_text()) for f in ("rep1", "rep2"))
    assert r1["metrics"] == r2["metrics"] and r1["layers"] == r2["layers"]
    assert r2["config"]["world_size"] == 2 and r2["config"]["samples_per_rank"] == [52, 48]
