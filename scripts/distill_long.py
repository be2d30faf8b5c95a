"""Label-free distillation of one zoo detector on more scenes, at the T of issue #10's target.

Plain conversion (512 calibration scenes, defaults) and distillation (no labels; yolov8_silu
with SiLU -> ReLU) scored on the bench's 300 val scenes at 2 / 4 / 8 / 16 steps, in % of the
ANN's mAP@0.5 / mAP@0.5:0.95, with the fine-tuning time and the energy ratio vs the ANN at T.

Usage: python scripts/distill_long.py --model yolov8_silu -T 8 --n-train 4096 --epochs 6
       [--rate-weight 0.2] [--out result.json] [--save distilled.snn.pt]   (results: docs/examples/distill/long_*.json)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx2snn  # noqa: E402
from onnx2snn import checks, zoo  # noqa: E402
from onnx2snn.errors import ConfigError  # noqa: E402
from onnx2snn.graph.source import to_twin  # noqa: E402
from bench_distill import energy_ratio, evaluate_at  # noqa: E402

POST = {"tiny_yolo_decode": "tiny-yolo", "yolo_relu_decode": "yolo_relu", "decode_ultralytics": "yolov8"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="yolov8_silu")
    ap.add_argument("-T", "--timesteps", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rate-weight", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="JSON file (default: long_<model>_<n>x<epochs>.json)")
    ap.add_argument("--save", help="also save the distilled SNN here (onnx2snn.load reads it back)")
    args = ap.parse_args()
    for flag, target in (("--out", args.out), ("--save", args.save)):  # fail now, not after the training
        if target:
            try:
                checks.writable_file(flag, target)
            except ConfigError as e:
                ap.error(str(e))
    torch.set_num_threads(args.threads)
    preset = zoo.get_preset(args.model)
    dec, T = zoo.get_decoder(preset.decoder), args.timesteps
    val = zoo.digit_scenes("val", n=300)
    x, _ = zoo.scenes_to_tensors(zoo.make_scenes(args.n_train, "train", seed=12345))
    path = onnx2snn.export_zoo_model(args.model, f"/tmp/long_{args.model}.onnx")
    twin = to_twin(path)
    replace = {"SiLU": "ReLU"} if args.model.endswith("silu") else None
    ann = evaluate_at(twin, dec, val)[None]

    def share(m):
        return [round(100 * m["mAP50"] / ann["mAP50"], 1), round(100 * m["mAP50_95"] / ann["mAP50_95"], 1)]

    plain = onnx2snn.convert(twin, x[:512], timesteps=T, replace_activations=replace, progress=False)
    plain_at_t = evaluate_at(plain, dec, val, [T])[T]
    t0, c0 = time.time(), time.process_time()
    ft = onnx2snn.finetune(twin, x, timesteps=T, epochs=args.epochs, lr=1e-3, batch_size=32, calibration_data=x[:512],
                           replace_activations=replace, rate_weight=args.rate_weight, progress=False)
    secs, cpu = time.time() - t0, time.process_time() - c0
    snn = onnx2snn.convert(ft, timesteps=T, progress=False)
    if args.save:
        snn.save(args.save)
    per_t = evaluate_at(snn, dec, val, sorted({2, 4, 8, 16, T}))
    res = {"model": args.model, "n_train": args.n_train, "epochs": args.epochs, "T": T, "rate_weight": args.rate_weight,
           "ann": ann, "plain_of_ann": share(plain_at_t), "distill_of_ann": {t: share(m) for t, m in per_t.items()},
           "finetune_s": round(secs, 1), "finetune_cpu_s": round(cpu, 1), "load_after": os.getloadavg()[0],
           "per_T": per_t, "energy_ratio": energy_ratio(snn, path, val[:100], T, POST[preset.decoder]),
           "history": ft.finetune_info["history"]}
    print(json.dumps({k: v for k, v in res.items() if k not in ("history", "per_T")}, indent=1))
    out = args.out or f"long_{args.model}_{args.n_train}x{args.epochs}.json"
    with open(out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
