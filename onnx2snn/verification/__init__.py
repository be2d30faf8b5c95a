"""Verification: the SNN against onnxruntime on its source ONNX file, vs timesteps.

    report = onnx2snn.verify(snn, reference="model.onnx", data=(x, y), timesteps=[1, 2, 4, 8, 16, 32])
    print(report.table()); report.to_json("report.json"); report.plot("report.png")

Modules: ``reference`` (onnxruntime + input checks; evaluation batches: :mod:`onnx2snn.data`),
``metrics`` (accuracy, agreement, rel. L2, COCO mAP), ``detection`` (NMS, Ultralytics-style
decoding, COCO results, mAP), ``decoders`` (decoders by name), ``monitor`` (hooks: per-layer
error, firing rates, events), ``events`` (event counts carried to where they are consumed),
``work`` / ``tally`` (work per node and kind, SNN vs ANN), ``energy`` (kinds, cost tables), ``report`` (VerifyReport), ``api`` (verify).
"""

from .api import DEFAULT_TIMESTEPS, verify
from ..data.evaluation import BatchMeta
from .decoders import register_decoder
from .detection import decode_ultralytics, evaluate_coco, evaluate_ultralytics, nms_detections, to_coco_detections
from .energy import FP32, INT8
from .monitor import ENERGY_AC_PJ, ENERGY_MAC_PJ, fanout_map
from .report import VerifyReport

__all__ = ["verify", "VerifyReport", "BatchMeta", "DEFAULT_TIMESTEPS", "ENERGY_AC_PJ", "ENERGY_MAC_PJ", "FP32", "INT8", "fanout_map",
           "register_decoder", "decode_ultralytics", "nms_detections", "to_coco_detections", "evaluate_coco",
           "evaluate_ultralytics"]
