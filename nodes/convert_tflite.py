"""TFLite -> ONNX with tf2onnx, so that a .tflite model (MediaPipe's, a converted Keras one) also runs
on ONNX Runtime and OpenVINO and compiles with TVM through the ONNX path."""

from __future__ import annotations

import time
from typing import Any

from heiti.engine import In, ModelArtifact, Node, NodeError, Out
from pydantic import BaseModel, ConfigDict, Field


class TFLiteToOnnx(Node):
    """Convert a TFLite model to ONNX with tf2onnx; the input stays NHWC unless `nchw_input` is set.

    `nchw_input` adds a transpose inside the model so that it takes NCHW input.
    """

    kind = "convert.tflite_to_onnx"
    title = "Convert TFLite to ONNX"
    category = "Converters"

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")

        opset: int = Field(17, ge=13, le=18, description="ONNX opset version")
        nchw_input: bool = Field(False, description="make the ONNX model take NCHW input (a transpose is added)")

    inputs = {"model": In(ModelArtifact, formats={"tflite"})}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        import onnx
        import tf2onnx
        from heiti.nodes.model_io import onnx_io
        from heiti.nodes.models import step_meta

        t0 = time.perf_counter()
        p = self.params
        if any(i.get("quantization") for i in model.inputs):
            ctx.warn("an int8 TFLite model converts to QDQ/QOperator ONNX that not every runtime runs")
        ctx.progress(0.2, "converting")
        names = [str(i["name"]) for i in model.inputs]
        try:
            proto, _ = tf2onnx.convert.from_tflite(
                str(model.path), opset=p.opset,
                inputs_as_nchw=names if p.nchw_input and all(len(i["shape"]) == 4 for i in model.inputs) else None)
        except Exception as err:  # noqa: BLE001 - tf2onnx raises anything on unsupported operators
            raise NodeError(f"tf2onnx cannot convert {model.path.name}: {type(err).__name__}: {str(err)[:300]}") from err
        onnx.checker.check_model(proto)
        path = ctx.workdir / "model.onnx"
        onnx.save(proto, str(path))
        inputs, outputs = onnx_io(proto)
        seconds = time.perf_counter() - t0
        layout = "NCHW" if p.nchw_input else (model.meta.get("layout") or "NHWC")
        meta = step_meta(model, ctx, self.kind, seconds, convert_time_s=round(seconds, 3), layout=layout,
                         input_name=inputs[0]["name"], opset=p.opset)
        ctx.log(f"tf2onnx: {len(proto.graph.node)} ONNX nodes in {seconds:.1f} s")
        return {"model": ModelArtifact(path=path, model_format="onnx", inputs=inputs, outputs=outputs, meta=meta)}
