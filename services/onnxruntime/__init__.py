"""ONNX Runtime model server: the shared OIP v2 server core over onnxruntime.InferenceSession."""
