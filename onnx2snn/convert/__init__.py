"""Import ONNX graphs as PyTorch twins and rewrite them into spiking networks."""
