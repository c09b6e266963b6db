"""Heiti's node kinds. Listing them imports only the modules that define kinds (NODE_MODULES) and
the subpackages' own lists: helpers (model readers, TVM scheduling, dataset preparation) load when a
node runs. tests/test_imports.py checks that every module defining a kind is listed.
"""

import os as _os

NODE_MODULES = ("compilers", "convert_tflite", "converters", "datasets", "models", "optimize_cluster",
                "optimize_onnx", "train", "detection", "devices", "reports", "runtimes")

#: TVM's thread pool spins (yielding) for about half a second after each parallel call by default: an
#: idle TVM worker keeps half a core busy meanwhile, and whatever is timed next beside it loses that
#: (measured here: 0.2-0.25 s of CPU per idle 0.5 s, for ~0.5 s; in turns with a TVM runtime, ONNX
#: Runtime's turns saw other processes take 0.15 cores). 10,000 spins still cover the gaps between one call's layers (latency unchanged) and
#: end within ~10 ms. Set before any TVM pool starts: every Heiti process imports this package first.
TVM_SPIN_COUNT = "10000"
_os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", TVM_SPIN_COUNT)
