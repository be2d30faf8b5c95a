"""Train the zoo's detectors (tiny_yolo, yolo_relu, yolov8_silu, yolov8_relu, yolo11_silu) on generated digit scenes.

The YOLOv8 / YOLO11-structured models train on their raw maps (``model(x, raw=True)``) with the
YOLOv8 loss (task-aligned assignment, CIoU + DFL, BCE) and are evaluated on their export
output with Ultralytics' validation decoding (conf 0.001, IoU 0.7, multi-label, 300).

Every epoch draws fresh train scenes (seed = base seed + epoch) from the train digits;
evaluation uses the fixed 500-scene val split (unseen handwriting) with pycocotools.
CPU, one thread, seeded. Writes onnx2snn/zoo/weights/<name>.pt and <name>.json.
Usage: python scripts/train_detector.py [--models tiny_yolo yolo_relu] [--epochs N]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _train_common import arguments, save, setup  # noqa: E402

from onnx2snn.progress import bar as progress_bar, log_to_stderr  # noqa: E402
from onnx2snn.zoo import LOSSES, build_model, yolov8_loss, digit_scenes, evaluate_detector, get_decoder, get_preset, make_scenes, scenes_to_tensors  # noqa: E402
from onnx2snn.zoo.registry import WEIGHTS_DIR  # noqa: E402


def train(name: str, epochs: int, per_epoch: int, batch: int, lr: float, seed: int, out_dir: Path = WEIGHTS_DIR) -> None:
    setup(seed)
    preset = get_preset(name)
    decode = get_decoder(preset.decoder)
    if name in RAW_LOSS:  # Ultralytics-style export output: train on the raw maps
        def loss_fn(x, targets, _loss=RAW_LOSS[name]):
            return _loss(model(x, raw=True), targets)
    else:
        def loss_fn(x, targets, _loss=LOSSES[preset.loss]):
            return _loss(model(x), targets)
    size = preset.input_shape[-1]
    val = digit_scenes("val", size=size)
    model = build_model(name, pretrained=False).train()
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    steps_per_epoch = per_epoch // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)
    t0 = time.time()
    history = []
    for epoch in range(epochs):
        scenes = make_scenes(per_epoch, "train", seed=seed + 1000 * epoch, size=size)
        gen = torch.Generator().manual_seed(seed + epoch)
        perm = torch.randperm(len(scenes), generator=gen).tolist()
        model.train()
        bar = progress_bar(range(steps_per_epoch), desc=f"{name} {epoch + 1}/{epochs}", unit="step")
        for step in bar:
            x, targets = scenes_to_tensors([scenes[j] for j in perm[step * batch:(step + 1) * batch]])
            loss, parts = loss_fn(x, targets)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in parts.items()})
        quick = evaluate_detector(model, decode, val[:200])
        history.append({"epoch": epoch + 1, "val200": quick, "time_s": round(time.time() - t0, 1)})
        print(f"epoch {epoch + 1}: val[:200] {quick}", flush=True)
    train_time = time.time() - t0
    metrics = dict(evaluate_detector(model, decode, val), n_val=len(val))
    settings = {"epochs": epochs, "scenes_per_epoch": per_epoch, "batch": batch, "lr": lr,
                "optimizer": "AdamW(wd=5e-4 on weights) + OneCycle", "seed": seed, "input_size": size,
                "threads": 1, "train_time_s": round(train_time, 1), "history": history,
                "decode": {"conf_thres": 0.001, "iou_thres": 0.7, "max_det": 300, "multi_label": True}
                if name in RAW_LOSS else {"conf_thres": 0.001, "iou_thres": 0.6, "max_det": 100}}
    save(model, name, metrics, settings, out_dir)


EPOCHS = {"tiny_yolo": 12, "yolo_relu": 12, "yolov8_silu": 16, "yolov8_relu": 16, "yolo11_silu": 7}
RAW_LOSS = {"yolov8_silu": yolov8_loss, "yolov8_relu": yolov8_loss, "yolo11_silu": yolov8_loss}


def main() -> None:
    log_to_stderr()
    ap = arguments(__doc__, ["tiny_yolo", "yolo_relu"], 32, WEIGHTS_DIR)
    ap.add_argument("--per-epoch", type=int, default=3200)
    args = ap.parse_args()
    for name in args.models:
        train(name, args.epochs or EPOCHS[name], args.per_epoch, args.batch, args.lr, args.seed, args.out_dir)


if __name__ == "__main__":
    main()
