"""Heiti's node kinds. Listing them imports only the modules that define kinds (NODE_MODULES) and
the subpackages' own lists: helpers (model readers, TVM scheduling, dataset preparation) load when a
node runs. tests/test_imports.py checks that every module defining a kind is listed.
"""

NODE_MODULES = ("compilers", "convert_tflite", "converters", "datasets", "models", "optimize_cluster",
                "optimize_onnx", "train", "detection", "devices", "reports", "runtimes")
