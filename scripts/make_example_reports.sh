#!/usr/bin/env bash
# The example verification reports in docs/examples/, made with the CLI as a user would:
# digits ResNet (all 360 test digits, calibrated on the 1437 train digits) and tiny-YOLO
# (200 val digit scenes as COCO json + PNG, calibrated on 256 train scenes), T = 1..128.
#   bash scripts/make_example_reports.sh [workdir]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
W="${1:-$(mktemp -d)}"
C="$W/classification" D="$W/detection"
mkdir -p "$C" "$D" docs/examples/classification docs/examples/detection
python - "$C" "$D" <<'PY'
import sys
import numpy as np
import onnx2snn
from onnx2snn import zoo
C, D = sys.argv[1:3]
onnx2snn.export_zoo_model("digits_resnet", f"{C}/digits_resnet.onnx")
xtr, ytr = zoo.load_digits(16, "train"); xte, yte = zoo.load_digits(16, "test")
np.savez(f"{C}/train.npz", x=xtr, y=ytr); np.savez(f"{C}/test.npz", x=xte, y=yte)
onnx2snn.export_zoo_model("tiny_yolo", f"{D}/tiny_yolo.onnx")
calib, _ = zoo.scenes_to_tensors(zoo.digit_scenes("train", n=256))
np.savez(f"{D}/calib.npz", x=calib.numpy())
zoo.write_coco(zoo.digit_scenes("val", n=200), f"{D}/val")
PY
TS=1,2,4,8,16,32,64,128
onnx2snn convert "$C/digits_resnet.onnx" --calib "$C/train.npz" -T 128 --quiet -o "$C/digits_resnet.snn.pt"
onnx2snn verify "$C/digits_resnet.snn.pt" --reference "$C/digits_resnet.onnx" --data "$C/test.npz" \
    --task classification --timesteps $TS --batch-size 64 --out "$C"
onnx2snn convert "$D/tiny_yolo.onnx" --calib "$D/calib.npz" -T 128 --quiet -o "$D/tiny_yolo.snn.pt"
onnx2snn verify "$D/tiny_yolo.snn.pt" --reference "$D/tiny_yolo.onnx" --data "$D/val/images" \
    --annotations "$D/val/instances.json" --task detection --postprocess tiny-yolo --timesteps $TS \
    --batch-size 16 --out "$D"
for k in classification detection; do
  cp "$W/$k/report.md" "$W/$k/report.png" "$W/$k/report.json" "$W/$k/energy.png" "docs/examples/$k/"
done
echo "reports in docs/examples/ (work files in $W)"
