"""One settings search (``convert(..., target=...)``) for tests/test_tune.py: run it alone
(`python dist_tune_job.py MODEL.onnx CALIB.npz OUT.pt`) or under `torchrun --nproc_per_node 2`
(statistics collected on each rank's share and merged; every rank validates on the whole
held-out part); rank 0 writes the chosen settings and thresholds to OUT (torch.save)."""

import sys

import numpy as np
import torch

import onnx2snn
from onnx2snn import distributed as dist
from dist_job import finish  # this script's folder is on sys.path


def main(model: str, data: str, out: str) -> None:
    torch.manual_seed(0)
    with np.load(data) as f:
        x = torch.as_tensor(f["x"])
    snn = onnx2snn.convert(model, x, timesteps=8, target=0.99, batch_size=48, progress=False,
                           tune_options={"max_runs": 6})
    res = {"world_size": dist.current().world, "tune": snn.config["tune"],
           "thresholds": {k: v.clone() for k, v in snn.thresholds.items()},
           "points": snn.tune_report.points}
    finish(res, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
