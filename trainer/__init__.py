"""trainer: data loaders, a GRU on sequences of vibration-window features, calibration, evaluation, ONNX export."""
