"""The zoo's data: real sklearn digits, generated digit scenes, their COCO / YOLO writers.
(Loaders for user data: :mod:`onnx2snn.data`; ``loaders``, ``letterbox`` and the readers of
``yolo_format`` are re-exported here from there.)"""
