"""Helpers shared by the zoo training and benchmark scripts: seeding, saving weights + metrics
json, writing a benchmark's table / JSON / plot."""
from __future__ import annotations

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


def write_outputs(out_dir: Path, name: str, text: str, report: dict, plot) -> None:
    """Print the tables and write <name>.md, <name>.json (every number) and <name>.png
    (``plot(report, path)``) into ``out_dir``."""
    print(text)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.md").write_text(text)
    with open(out_dir / f"{name}.json", "w") as f:
        json.dump(report, f, indent=1, default=str)
    plot(report, out_dir / f"{name}.png")
