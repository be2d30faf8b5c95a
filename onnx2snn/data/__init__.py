"""The user's data, in whatever form it comes, as batches for the library's every pass.

Calibration, fine-tuning, correction and verification all read data through this package:

- :mod:`.loaders`: :class:`Preprocess` (resize / crop / letterbox, scale, normalize) and the
  datasets of files: :class:`ImageFolder`, :class:`NpzArrays`, :class:`CocoImages`,
  :func:`open_dataset`, :func:`load_batch`.
- :mod:`.yolo_format`: Ultralytics-format data (``data.yaml``, ``images/`` + ``labels/``) as
  :class:`YoloDataset`, with labels as COCO ground truth; :mod:`.letterbox` its geometry.
- :mod:`.batches`: any input (tensor, array, ``.npz``, DataLoader, Dataset, path) as float32
  batches (:func:`iter_batches`), with the checks every pass shares (:func:`check_fits`,
  :func:`input_tensor`, :func:`resolve_preprocess`).
- :mod:`.evaluation`: batches with labels (classification) or with the image ids, sizes and
  ground truth that detections are scored against (:func:`detection_batches`).

The zoo (models, synthetic digits and scenes, writers) uses this package; this package does
not use the zoo. ``onnx2snn.zoo.Preprocess`` and the other loaders stay importable from the zoo.
"""
from .batches import check_fits, input_tensor, iter_batches, open_path, resolve_preprocess, sample_count
from .evaluation import BatchMeta, DetectionData, classification_batches, detection_batches
from .letterbox import letterbox_geometry
from .loaders import CocoImages, ImageFolder, NpzArrays, Preprocess, load_batch, open_dataset
from .yolo_format import YoloDataset, read_data_yaml

__all__ = ["Preprocess", "ImageFolder", "NpzArrays", "CocoImages", "open_dataset", "load_batch", "YoloDataset",
           "read_data_yaml", "letterbox_geometry", "iter_batches", "check_fits", "input_tensor", "sample_count",
           "resolve_preprocess", "open_path", "BatchMeta", "DetectionData", "classification_batches",
           "detection_batches"]
