"""The shared YOLO blocks: committed weights keep their keys, YOLO11's attention computes
softmax(q^T k) attention, C3k2 picks its inner blocks, bad settings raise ConfigError."""
import pytest
import torch
import torch.nn.functional as F

import onnx2snn
import onnx2snn.zoo as zoo
from onnx2snn.zoo.models import yolo_blocks as yb


@pytest.mark.parametrize("name", ["yolo_relu", "yolov8_silu", "yolov8_relu", "yolo11_silu"])
def test_committed_weights_keep_their_keys_in_order(name):
    state = torch.load(zoo.WEIGHTS_DIR / zoo.get_preset(name).weights, weights_only=True)
    assert list(zoo.build_model(name, pretrained=False).state_dict()) == list(state)


def test_attention_equals_scaled_dot_product_attention():
    torch.manual_seed(0)
    att = yb.Attention(32, num_heads=2).eval()
    x = torch.randn(3, 32, 4, 5)
    with torch.no_grad():
        q, k, v = att.qkv(x).view(3, 2, 2 * att.key_dim + att.head_dim, 20).split(
            (att.key_dim, att.key_dim, att.head_dim), 2)
        ref = F.scaled_dot_product_attention(q.transpose(-2, -1), k.transpose(-2, -1), v.transpose(-2, -1))
        ref = ref.transpose(-2, -1).reshape(3, 32, 4, 5) + att.pe(v.reshape(3, 32, 4, 5))
        torch.testing.assert_close(att(x), att.proj(ref))
    assert att.key_dim == 8 and att.qkv.conv.out_channels == 32 + 2 * 2 * 8


def test_c3k2_inner_blocks_and_shapes():
    plain, c3k = yb.C3k2(32, 48, n=2, e=0.25), yb.C3k2(32, 48, n=1, c3k=True)
    assert [type(m) for m in plain.m] == [yb.Bottleneck] * 2 and plain.c == 12
    assert isinstance(c3k.m[0], yb.C3k) and len(c3k.m[0].m) == 2
    psa = yb.C2PSA(64, 64)
    x = torch.randn(2, 32, 8, 8)
    assert plain(x).shape == c3k(x).shape == (2, 48, 8, 8)
    assert psa(torch.randn(2, 64, 4, 4)).shape == (2, 64, 4, 4) and psa.m[0].attn.num_heads == 1


def test_conv_key_layouts_and_bad_settings():
    assert list(yb.Conv(1, 4, 3).state_dict())[:2] == ["conv.weight", "bn.weight"]
    assert list(yb.Conv(1, 4, 3, named=False).state_dict())[:2] == ["0.weight", "1.weight"]
    with pytest.raises(onnx2snn.ConfigError, match="act='gelu' is not valid"):
        yb.Conv(1, 4, act="gelu")
    with pytest.raises(onnx2snn.ConfigError, match="num_heads=3 does not divide dim=32"):
        yb.Attention(32, num_heads=3)
    with pytest.raises(onnx2snn.ConfigError, match="C2PSA keeps the width"):
        yb.C2PSA(32, 64)
