"""One data-parallel job for tests/test_distributed.py: run it alone (`python dist_job.py ...`)
or under `torchrun --nproc_per_node 2`; rank 0 writes what it measured to OUT (torch.save).

    python dist_job.py MODEL.onnx DATA.npz OUT.pt

Steps (all with the default distributed=None: the process group when torchrun started us):
threshold calibration (convert), bias/potential correction (calibrate), fine-tuning
(finetune, no noise, one epoch), verification (verify, per-layer measurements on).
"""

import sys

import numpy as np
import torch

import onnx2snn
from onnx2snn import distributed as dist


def finish(res: dict, out: str) -> None:
    """Rank 0 writes ``res`` to ``out``; the process group (if any) is closed."""
    if dist.is_main():
        torch.save(res, out)
    if dist.initialized():
        torch.distributed.destroy_process_group()


def main(model: str, data: str, out: str) -> None:
    torch.manual_seed(0)
    with np.load(data) as f:
        xtr, ytr, xte, yte = (torch.as_tensor(f[k]) for k in ("xtr", "ytr", "xte", "yte"))
    res = {}
    # batch 48 on 200 samples: 5 batches (the last one short), dealt 3 / 2 over two ranks
    snn = onnx2snn.convert(model, xtr[:200], timesteps=4, batch_size=48, progress=False)
    shard = dist.current()
    res["world_size"] = shard.world
    res["thresholds"] = {k: v.clone() for k, v in snn.thresholds.items()}
    res["calibration_stats"] = snn.calibration_stats
    onnx2snn.correct(snn, xtr[:120], timesteps=4, batch_size=32, progress=False)
    res["bias"] = {k: m.bias.clone() for k, m in snn.neurons().items()}
    res["v_init"] = {k: m.v_init.clone() for k, m in snn.neurons().items()}
    res["calibration"] = dict(snn.config["calibration"])
    twin = onnx2snn.finetune(model, (xtr[:192], ytr[:192]), timesteps=4, epochs=1, batch_size=64, noise=None,
                             progress=False, calibration_limit=128)
    res["finetune_thresholds"] = {k: v.clone() for k, v in twin.learned_thresholds.items()}
    res["finetune_loss"] = twin.finetune_info["history"][-1]["loss"]
    report = onnx2snn.verify(snn, data=(xte[:100], yte[:100]), timesteps=[1, 2, 4], batch_size=24, progress=False)
    res["metrics"] = report.metrics
    res["layers"] = report.layers
    res["verify_config"] = {k: report.config[k] for k in ("world_size", "samples_per_rank")}
    res["n_samples"] = report.n_samples
    finish(res, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
