"""Small node kinds used only by tests: they exercise the engine without any ML framework."""

from __future__ import annotations

import json
import time

from heiti.engine import In, ModelArtifact, Node, NodeError, Out
from heiti.engine.payloads import Value
from pydantic import BaseModel, ConfigDict, Field


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(Node):
    """Emits a number."""

    kind = "test.source"
    category = "Test"

    class Params(_P):
        value: float = Field(1.0, description="the number")
        delay: float = Field(0.0, ge=0)

    outputs = {"out": Out(Value)}

    def run(self, ctx, **inputs):
        time.sleep(self.params.delay)
        ctx.progress(0.5, "half")
        ctx.metric("value", self.params.value)
        (ctx.workdir / "value.json").write_text(json.dumps(self.params.value))
        return {"out": Value(value=self.params.value)}


class Add(Node):
    """Adds its inputs (any number of wires) and an offset."""

    kind = "test.add"
    category = "Test"

    class Params(_P):
        offset: float = 0.0

    inputs = {"values": In(Value, multiple=True)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, values):
        return {"out": Value(value=sum(v.value for v in values) + self.params.offset)}


class Collect(Node):
    """Adds whatever values arrived, even if some sources failed."""

    kind = "test.collect"
    category = "Test"
    inputs = {"values": In(Value, multiple=True, partial=True)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, values):
        return {"out": Value(value=sum(v.value for v in values))}


class Fail(Node):
    """Always fails."""

    kind = "test.fail"
    category = "Test"
    inputs = {"x": In(Value, required=False)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, **inputs):
        raise NodeError("this node always fails")


class Slow(Node):
    """Loops until cancelled (or `steps` steps)."""

    kind = "test.slow"
    category = "Test"

    class Params(_P):
        steps: int = 1000
        step_s: float = 0.01

    inputs = {"x": In(Value, required=False)}
    outputs = {"out": Out(Value)}

    def run(self, ctx, **inputs):
        for i in range(self.params.steps):
            ctx.check_cancelled()
            time.sleep(self.params.step_s)
            ctx.progress(i / self.params.steps)
        return {"out": Value(value=self.params.steps)}


class MakeModel(Node):
    """Writes a fake model file of a chosen format."""

    kind = "test.model"
    category = "Test"

    class Params(_P):
        fmt: str = "keras"

    outputs = {"model": Out(ModelArtifact)}

    @classmethod
    def output_formats(cls, params, input_formats=None):
        return {"model": params.fmt if params else None}

    def run(self, ctx):
        path = ctx.workdir / f"model.{self.params.fmt}"
        path.write_bytes(b"model")
        return {"model": ModelArtifact(path=path, model_format=self.params.fmt)}


class KerasToOnnx(Node):
    """Converter keras -> onnx (test)."""

    kind = "test.keras_to_onnx"
    category = "Test"
    inputs = {"model": In(ModelArtifact, formats={"keras"})}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx, model):
        path = ctx.workdir / "model.onnx"
        path.write_bytes(model.path.read_bytes() + b">onnx")
        return {"model": ModelArtifact(path=path, model_format="onnx")}


class OnnxToTvm(Node):
    """Compiler onnx -> tvm (test)."""

    kind = "test.tvm"
    category = "Test"
    inputs = {"model": In(ModelArtifact, formats={"onnx", "tflite"})}
    outputs = {"model": Out(ModelArtifact, format="tvm")}

    def run(self, ctx, model):
        path = ctx.workdir / "model.so"
        path.write_bytes(model.path.read_bytes() + b">tvm")
        return {"model": ModelArtifact(path=path, model_format="tvm")}


class PassModel(Node):
    """Keeps the format of its input (like training)."""

    kind = "test.pass"
    category = "Test"
    inputs = {"model": In(ModelArtifact)}
    outputs = {"model": Out(ModelArtifact, same_as="model")}

    def run(self, ctx, model):
        return {"model": model}


ALL = [Source, Add, Collect, Fail, Slow, MakeModel, KerasToOnnx, OnnxToTvm, PassModel]
