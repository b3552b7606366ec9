"""PVTT deployment: ONNX/TensorRT engines and the one-template `generate` command."""
