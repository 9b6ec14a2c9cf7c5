"""The input: ONNX model files, their shapes, storage URIs and the built-in zoo."""
