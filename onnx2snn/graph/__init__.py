"""ONNX graphs as exact PyTorch twins (torch.fx), and the analysis of what becomes spiking."""
