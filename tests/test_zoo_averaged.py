"""A zoo model with GELU, LayerNorm and layer scale converts post-training (time-averaged
operators, nothing replaced, no fine-tuning) and keeps the ANN's accuracy at T=8."""
import torch

import onnx2snn
import onnx2snn.zoo as zoo


def test_digits_convnext_post_training_t8_keeps_ann_top1(tmp_path):
    torch.manual_seed(0)
    xtr, _ = zoo.load_digits(16, "train")
    xte, yte = (torch.from_numpy(a) for a in zoo.load_digits(16, "test"))
    path = onnx2snn.export_zoo_model("digits_convnext", tmp_path / "digits_convnext.onnx")
    twin = onnx2snn.import_onnx(path)
    snn = onnx2snn.convert(twin, torch.from_numpy(xtr[:256]), timesteps=8, progress=False)
    ops = [m.op_name for m in snn.averaged_ops().values()]
    assert ops.count("GELU") == 4 and ops.count("LayerNormalization") >= 4, ops
    with torch.no_grad():
        ann = (twin(xte).argmax(1) == yte).float().mean().item()
        top1 = (snn(xte, timesteps=8).argmax(1) == yte).float().mean().item()
    assert ann >= 0.97
    assert top1 >= ann - 0.015, f"SNN top-1 {top1:.4f} at T=8 vs ANN {ann:.4f}"
