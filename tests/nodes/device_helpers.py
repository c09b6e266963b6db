"""Shared by the device tests: a small real ONNX model, a server thread, raw protocol helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from heiti.engine.payloads import TargetHandle
from heiti.nodes.devices.protocol import VERSION, Channel, MsgType
from heiti.nodes.devices.server import DeviceServer
from heiti.nodes.devices.transport import connect_tcp


def make_onnx(path: Path, in_shape: tuple[int, ...], external: bool = False) -> Path:
    """A small real model: mean over all but the first two axes, then a 3->10 or C->10 matmul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    channels = in_shape[1]
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((channels, 10)).astype(np.float32), "w")
    nodes, inits = [], [weight]
    source = "x"
    if len(in_shape) > 2:
        inits.append(numpy_helper.from_array(np.arange(2, len(in_shape), dtype=np.int64), "axes"))
        nodes.append(helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0))
        source = "m"
    nodes.append(helper.make_node("MatMul", [source, "w"], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [in_shape[0], 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    if external:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def local_run(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


class ServerThread:
    def __init__(self, workdir: Path, port: int = 0, **kwargs) -> None:
        kwargs.setdefault("frame_timeout", 0.5)
        kwargs.setdefault("stats_period", 0.1)
        self.server = DeviceServer(workdir, **kwargs)
        self.thread = threading.Thread(target=self.server.serve_tcp, args=("127.0.0.1", port), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 5
        while self.server.address is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.address is not None
        self.port = self.server.address[1]
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(5)


def tcp_target(address: str, **options) -> TargetHandle:
    return TargetHandle(kind="tcp", address=address, options={"timeout_s": 3.0, "retries": 1, **options})


def raw_channel(address: str) -> Channel:
    return Channel(connect_tcp(address, 2.0), frame_timeout=1.0)


def hello(channel: Channel, seq: int = 1, token: str = "") -> None:
    channel.send(MsgType.HELLO, {"protocol": VERSION, "token": token}, seq=seq)


def next_reply(channel: Channel, timeout: float = 3.0):
    """The next message that is not STATS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = channel.receive(deadline - time.monotonic())
        if msg is not None and msg.type != MsgType.STATS:
            return msg
    raise AssertionError("no reply")
