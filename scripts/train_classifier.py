"""Train the zoo's digit classifiers (digits_resnet, digits_vgg, digits_vit, digits_mobilenetv3,
digits_convnext) on scikit-learn digits.

CPU, one thread, seeded. Writes onnx2snn/zoo/weights/<name>.pt and <name>.json.
Usage: python scripts/train_classifier.py [--models digits_resnet digits_vgg] [--epochs N]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_common import arguments, save, setup  # noqa: E402

from onnx2snn.progress import bar as progress_bar, log_to_stderr  # noqa: E402
from onnx2snn.zoo import build_model, get_preset, load_digits  # noqa: E402
from onnx2snn.zoo.registry import WEIGHTS_DIR  # noqa: E402


def shift_augment(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (zero padding), per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def train(name: str, epochs: int, batch: int, lr: float, seed: int, out_dir: Path = WEIGHTS_DIR) -> None:
    setup(seed)
    preset = get_preset(name)
    size = preset.input_shape[-1]
    xtr, ytr = (torch.from_numpy(a) for a in load_digits(size, "train"))
    xte, yte = (torch.from_numpy(a) for a in load_digits(size, "test"))
    model = build_model(name, pretrained=False).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * ((len(xtr) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    log_to_stderr()
    bar = progress_bar(range(epochs), desc=name, unit="epoch")
    for _ in bar:
        model.train()
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), batch):
            idx = perm[i:i + batch]
            xb = shift_augment(xtr[idx], max(1, size // 8), gen)
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    train_time = time.time() - t0
    metrics = {"test_accuracy": accuracy(model, xte, yte), "train_accuracy": accuracy(model, xtr, ytr),
               "n_test": len(yte), "n_train": len(ytr)}
    settings = {"epochs": epochs, "batch": batch, "lr": lr, "optimizer": "AdamW(wd=5e-4) + OneCycle",
                "augment": f"random shift +-{max(1, size // 8)} px", "label_smoothing": 0.05, "seed": seed,
                "input_size": size, "threads": 1, "train_time_s": round(train_time, 1)}
    save(model, name, metrics, settings, out_dir)


EPOCHS = {"digits_resnet": 60, "digits_vgg": 60, "digits_vit": 100, "digits_mobilenetv3": 60,
          "digits_convnext": 60}


def main() -> None:
    ap = arguments(__doc__, ["digits_resnet", "digits_vgg"], 64, WEIGHTS_DIR)
    args = ap.parse_args()
    for name in args.models:
        train(name, args.epochs or EPOCHS[name], args.batch, args.lr, args.seed, args.out_dir)


if __name__ == "__main__":
    main()
