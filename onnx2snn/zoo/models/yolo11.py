"""A YOLO11-structured detector for the 64x64 digit scenes (our own code, after the
published YOLO11 layout; Ultralytics is AGPL-3.0 and no dependency).

SiLU Conv-BN blocks, C3k2 stages (C2f with Bottleneck or C3k inner blocks, hidden width
0.25 in the early backbone), SPPF then C2PSA (position-sensitive attention: qkv 1x1
conv, softmax over q^T k, depthwise positional conv, FFN), the YOLOv8 PAN neck with C3k2,
and the decoupled DFL head with YOLO11's depthwise class branch. It shares YOLOv8's
forward, export decode (``[B, 4 + C, A]``) and loss (:func:`~.yolov8.yolov8_loss`).
"""
from __future__ import annotations

from torch import nn

from .yolo_blocks import C2PSA, C3k2, REG_MAX, SPPF, Conv, Detect
from .yolov8 import STRIDES, YOLOv8


class YOLO11(YOLOv8):
    """Backbone (C3k2 stages, SPPF, C2PSA), PAN neck with C3k2, Detect (depthwise class branch) at strides 4, 8, 16."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, act: str = "silu",
                 reg_max: int = REG_MAX, heads: int = 2):
        nn.Module.__init__(self)
        w = width
        c3, c4, c5 = 2 * w, 4 * w, 6 * w
        self.num_classes = num_classes
        self.stem = nn.Sequential(Conv(in_channels, w, 3, 2, act), Conv(w, c3, 3, 2, act),
                                  C3k2(c3, c3, 1, False, 0.25, act=act))                        # /4
        self.stage4 = nn.Sequential(Conv(c3, c4, 3, 2, act), C3k2(c4, c4, 1, False, 0.25, act=act))  # /8
        self.stage5 = nn.Sequential(Conv(c4, c5, 3, 2, act), C3k2(c5, c5, 1, True, act=act),
                                    SPPF(c5, c5, act=act), C2PSA(c5, c5, 1, act=act, num_heads=heads))  # /16
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C3k2(c5 + c4, c4, 1, False, act=act)
        self.top3 = C3k2(c4 + c3, c3, 1, False, act=act)
        self.down3 = Conv(c3, c3, 3, 2, act)
        self.bottom4 = C3k2(c3 + c4, c4, 1, False, act=act)
        self.down4 = Conv(c4, c4, 3, 2, act)
        self.bottom5 = C3k2(c4 + c5, c5, 1, True, act=act)
        self.detect = Detect(num_classes, (c3, c4, c5), STRIDES, reg_max, act, depthwise_cls=True)
        self.detect.init_bias()
