"""Longer label-free distillation of yolov8_silu (SiLU -> ReLU) at T=8 on more scenes.

Usage: python scripts/distill_long.py N_TRAIN EPOCHS OUT.json (results: docs/examples/distill/long_*.json)"""
import json, sys, time, os
import torch, onnx2snn
from onnx2snn import zoo
from onnx2snn.graph.source import to_twin
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_distill import evaluate_at, energy_ratio
torch.set_num_threads(2)
n_train, epochs, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
name, T = "yolov8_silu", 8
dec = zoo.get_decoder("decode_ultralytics")
val = zoo.digit_scenes("val", n=300)
x, _ = zoo.scenes_to_tensors(zoo.make_scenes(n_train, "train", seed=12345))
p = onnx2snn.export_zoo_model(name, f"/tmp/long_{name}.onnx")
twin = to_twin(p)
t0, c0 = time.time(), time.process_time()
ft = onnx2snn.finetune(twin, x, timesteps=T, epochs=epochs, lr=1e-3, batch_size=32, calibration_data=x[:512],
                       replace_activations={"SiLU": "ReLU"}, progress=False)
secs, cpu = time.time() - t0, time.process_time() - c0
snn = onnx2snn.convert(ft, timesteps=T, progress=False)
per_t = evaluate_at(snn, dec, val, [2, 4, 8, 16])
res = {"model": name, "n_train": n_train, "epochs": epochs, "T": T, "finetune_s": round(secs, 1),
       "finetune_cpu_s": round(cpu, 1), "load_after": os.getloadavg()[0], "per_T": per_t,
       "energy_ratio": energy_ratio(snn, p, val[:100], T, "yolov8"), "history": ft.finetune_info["history"]}
print(json.dumps({k: v for k, v in res.items() if k != "history"}, indent=1))
json.dump(res, open(out, "w"), indent=1)
