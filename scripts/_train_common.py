"""Helpers shared by the zoo training and benchmark scripts: seeding, saving weights + metrics
json, the training scripts' common options, writing a benchmark's table / JSON / plot."""
from __future__ import annotations

import argparse
import os
import json
import random
import time
from pathlib import Path

import numpy as np
import torch


def setup(seed: int) -> None:
    """One thread (leave the other core free), fixed seeds, deterministic kernels."""
    torch.set_num_threads(1)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def arguments(doc: str, models: list[str], batch: int, weights_dir: Path) -> argparse.ArgumentParser:
    """The options every training script takes: --models, --epochs (default: per model),
    --batch, --lr, --seed, --out-dir."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--models", nargs="+", default=models)
    ap.add_argument("--epochs", type=int, default=None, help="default: per model, see EPOCHS")
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", type=Path, default=weights_dir, help="where <name>.pt/.json go")
    return ap


def save(model: torch.nn.Module, name: str, metrics: dict, settings: dict, out_dir: Path) -> None:
    """Write <name>.pt (float32 state_dict) and <name>.json (metrics and training settings)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(state, out_dir / f"{name}.pt")
    info = {"name": name, "metrics": metrics, "training": settings, "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()), "date": time.strftime("%Y-%m-%d")}
    (out_dir / f"{name}.json").write_text(json.dumps(info, indent=2) + "\n")
    size_kb = (out_dir / f"{name}.pt").stat().st_size / 1024
    print(f"saved {out_dir / name}.pt ({size_kb:.0f} KiB): {metrics}")


def bench_start(args) -> None:
    """The common start of a benchmark script: passive OpenMP waits, ``args.threads`` threads,
    seed 0, ``args.out`` created."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)


def write_outputs(out_dir: Path, name: str, text: str, report: dict, plot) -> None:
    """Print the tables and write <name>.md, <name>.json (every number) and <name>.png
    (``plot(report, path)``) into ``out_dir``."""
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(text)
    with open(out_dir / f"{name}.json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    plot(report, out_dir / f"{name}.png")
