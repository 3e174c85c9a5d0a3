"""edge_agent: the gateway core of gruwatch.

Wire protocol, feature extraction, model bundles, step-wise scoring and the MQTT daemon. Runs with
numpy, onnxruntime, paho-mqtt and small pure-Python packages only: nothing here may import torch,
pandas, scipy, scikit-learn or pyarrow (tests/edge_agent/test_imports.py proves it).
"""

__version__ = "0.1.0"
