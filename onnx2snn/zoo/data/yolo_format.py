"""The zoo's YOLO writer: digit scenes as an Ultralytics-format dataset (for tests and
examples). Reading YOLO data is the data layer's job (:mod:`onnx2snn.data.yolo_format`);
its names are re-exported here, where they were imported before."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...data.yolo_format import (SPLITS, YoloDataset, collate, is_yolo_source, label_path,  # noqa: F401
                                 letterbox_geometry, parse_labels, read_data_yaml)


def write_yolo(splits: dict, out_dir: str | os.PathLike, names: list[str] | None = None) -> Path:
    """Write scenes as a YOLO dataset: ``out_dir/images/<split>/*.png``, ``labels/<split>/*.txt``
    and ``data.yaml``; ``splits`` maps split name -> list of :class:`~onnx2snn.zoo.Scene`.
    Returns the yaml path."""
    from PIL import Image

    from .scenes import CATEGORIES

    out = Path(out_dir)
    names = names or [c["name"] for c in CATEGORIES]
    lines_yaml = ["path: .", *[f"{s}: images/{s}" for s in splits], "names:",
                  *[f"  {i}: '{n}'" for i, n in enumerate(names)]]
    for split, scenes in splits.items():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(scenes):
            stem = Path(s.file_name).stem if s.file_name else f"{split}_{k + 1:06d}"
            Image.fromarray(np.round(s.image * 255).astype(np.uint8), mode="L").save(out / "images" / split / f"{stem}.png")
            h, w = s.image.shape
            rows = [f"{int(c)} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} "
                    f"{(b[3] - b[1]) / h:.6f}" for b, c in zip(s.boxes.tolist(), s.labels.tolist())]
            (out / "labels" / split / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
    path = out / "data.yaml"
    path.write_text("\n".join(lines_yaml) + "\n")
    return path


__all__ = ["YoloDataset", "read_data_yaml", "parse_labels", "label_path", "is_yolo_source", "write_yolo",
           "letterbox_geometry", "collate", "SPLITS"]
