"""Synthetic but self-consistent measurements: for tests, the screenshot benchmark and trying the
report without running a pipeline. Quality figures are derived from a generated confusion matrix
and latency statistics from generated per-call times, exactly as a runtime node would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from heiti.engine.measurements import (
    ClassificationQuality,
    DetectionQuality,
    LatencyStats,
    MeasurementsFile,
    TargetInfo,
    TimeSeries,
)

ENVIRONMENT = {"cpu": "AMD EPYC 7B13 (sample)", "cores": 2, "os": "Linux 6.1 x86_64", "python": "3.11.2",
               "versions": {"numpy": "2.2.6", "torch": "2.13.0", "onnxruntime": "1.23.2", "tvm": "0.27.0",
                            "ai_edge_litert": "2.1.0"}}


@dataclass
class Spec:
    node: str
    runtime: str
    label: str
    model_format: str
    latency_ms: float
    quality: float
    size_bytes: int
    compile_time_s: float | None = None


CLASSIFICATION_SPECS = [
    Spec("torch_rt", "torch", "PyTorch (eager, fp32)", "torch", 1.80, 0.9750, 420_000),
    Spec("ort", "onnxruntime", "ONNX Runtime (CPU, fp32)", "onnx", 0.42, 0.9750, 405_000, 3.1),
    Spec("tvm", "tvm", "TVM (llvm, O3)", "tvm", 0.31, 0.9750, 610_000, 14.2),
    Spec("tflite_int8", "litert", "LiteRT int8", "tflite", 0.26, 0.9556, 118_000, 4.6),
]

DETECTION_CLASSES = ["circle", "square", "triangle"]


def latency_stats(values: np.ndarray, first: float) -> LatencyStats:
    return LatencyStats(mean=float(values.mean()), std=float(values.std()), median=float(np.median(values)),
                        p90=float(np.percentile(values, 90)), p99=float(np.percentile(values, 99)),
                        min=float(values.min()), max=float(values.max()), first=first, count=int(values.size))


def _latencies(rng: np.random.Generator, mean_ms: float, calls: int) -> np.ndarray:
    values = rng.lognormal(np.log(mean_ms), 0.08, calls)
    spikes = rng.random(calls) < 0.01
    values[spikes] *= rng.uniform(1.5, 3.0, int(spikes.sum()))
    return values


def _resources(rng: np.random.Generator, seconds: float, period: float = 0.1) -> list[TimeSeries]:
    t = np.arange(0, seconds, period)
    cores = np.clip(rng.normal(88, 8, (2, t.size)), 0, 100)
    cores[:, :3] = np.array([20, 60, 85])[: min(3, t.size)]
    cpu = cores.mean(axis=0)
    process = np.clip(cores.sum(axis=0) - rng.uniform(5, 15, t.size), 0, 200)
    rss = 180 + 25 * (1 - np.exp(-t / 0.5)) + rng.normal(0, 0.5, t.size)
    start = float(rng.uniform(5, 30))  # run clock: runtimes ran one after the other
    clock = list(start + t)
    series = [TimeSeries(name="cpu_percent", unit="%", t=clock, values=list(cpu)),
              TimeSeries(name="rss_mb", unit="MB", t=clock, values=list(rss)),
              TimeSeries(name="process_cpu_percent", t=clock, values=list(process)),
              TimeSeries(name="mem_percent", unit="%", t=clock, values=list(30 + rss / 100))]
    series += [TimeSeries(name=f"cpu_percent_core{i}", unit="%", t=clock, values=list(cores[i])) for i in range(2)]
    return series


def _confusion(rng: np.random.Generator, accuracy: float, classes: int, samples: int) -> np.ndarray:
    support = np.full(classes, samples // classes)
    support[: samples - support.sum()] += 1
    cm = np.zeros((classes, classes), dtype=np.int64)
    for i, n in enumerate(support):
        correct = int(round(n * min(1.0, max(0.0, accuracy + rng.normal(0, 0.015)))))
        cm[i, i] = correct
        for _ in range(n - correct):
            j = int(rng.integers(classes - 1))
            cm[i, j + (j >= i)] += 1
    return cm


def classification_quality(cm: np.ndarray, class_names: list[str]) -> ClassificationQuality:
    diag = np.diag(cm).astype(float)
    recall = np.divide(diag, cm.sum(axis=1), out=np.zeros_like(diag), where=cm.sum(axis=1) > 0)
    precision = np.divide(diag, cm.sum(axis=0), out=np.zeros_like(diag), where=cm.sum(axis=0) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(diag), where=denom > 0)
    return ClassificationQuality(
        accuracy=float(diag.sum() / cm.sum()), top5=float(min(1.0, diag.sum() / cm.sum() + 0.02)),
        precision_per_class=precision.tolist(), recall_per_class=recall.tolist(), f1_per_class=f1.tolist(),
        support_per_class=cm.sum(axis=1).astype(int).tolist(), precision_mean=float(precision.mean()),
        recall_mean=float(recall.mean()), f1_mean=float(f1.mean()),
        g_mean=float(np.exp(np.log(np.clip(recall, 1e-12, None)).mean())),
        confusion_matrix=cm.astype(int).tolist(), class_names=class_names)


def _base(spec: Spec, rng: np.random.Generator, calls: int, task: str) -> MeasurementsFile:
    lat = _latencies(rng, spec.latency_ms, calls)
    pipeline = [{"kind": "model.torch_cnn", "node": "model", "seconds": 0.01},
                {"kind": "train.torch", "node": "train", "seconds": 21.5}]
    if spec.model_format != "torch":
        pipeline.append({"kind": "export.onnx", "node": "onnx", "seconds": 2.9})
    if spec.runtime == "tvm":
        pipeline.append({"kind": "optimizer.tvm", "node": "tvm_compile", "seconds": 11.3})
    return MeasurementsFile(
        node=spec.node, runtime=spec.runtime, label=spec.label, model_format=spec.model_format,
        model_path=f"nodes/{spec.node}/model.{spec.model_format}", model_size_bytes=spec.size_bytes, task=task,
        dataset={"name": "digits" if task == "classification" else "shapes", "split": "test",
                 "samples": 360 if task == "classification" else 120},
        options={"threads": 2}, target=TargetInfo(kind="local", device={"cpu": ENVIRONMENT["cpu"], "cores": 2}),
        environment=ENVIRONMENT, compile_time_s=spec.compile_time_s, pipeline=pipeline,
        latency_ms=latency_stats(lat, first=float(lat.max() * 6)), latencies_ms=lat.tolist(),
        preprocess_ms=latency_stats(rng.lognormal(np.log(0.01), 0.1, calls), first=0.05),
        throughput_per_s=float(1000 / lat.mean()), resources=_resources(rng, max(1.0, lat.sum() / 1000 + 0.5)))


def classification_measurements(spec: Spec, seed: int = 0, calls: int = 300, classes: int = 10) -> MeasurementsFile:
    rng = np.random.default_rng(seed)
    data = _base(spec, rng, calls, "classification")
    cm = _confusion(np.random.default_rng(1000 + round(spec.quality * 10_000)), spec.quality, classes, 360)
    data.classification = classification_quality(cm, [str(i) for i in range(classes)])
    return data


def detection_measurements(spec: Spec, seed: int = 0, calls: int = 200) -> MeasurementsFile:
    rng = np.random.default_rng(seed)
    data = _base(spec, rng, calls, "detection")
    ap, ap_coco, curves = {}, {}, {}
    for i, name in enumerate(DETECTION_CLASSES):
        value = float(np.clip(spec.quality + (i - 1) * 0.03, 0, 1))
        ap[name], ap_coco[name] = value, value * 0.68
        recall = np.linspace(0, 0.96, 60)
        precision = np.clip(1 - (recall / 0.97) ** (8 * value), 0, 1) * 0.02 + np.where(
            recall < value, 1.0, np.clip(1 - (recall - value) * 6, 0, 1)) * 0.98
        curves[name] = {"recall": recall.tolist(), "precision": np.minimum.accumulate(precision).tolist()}
    thr = np.round(np.linspace(0.0, 0.95, 20), 3)
    map50 = np.clip(spec.quality * (1 - np.clip(thr - 0.2, 0, None) ** 2 * 1.6), 0, 1)  # falls as boxes drop
    precision = np.clip(0.45 + 0.6 * thr, 0, 0.99)
    recall = np.clip(spec.quality + 0.05 - np.clip(thr - 0.3, 0, None) ** 1.5 * 2.2, 0, 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-9)
    data.detection = DetectionQuality(
        map50=float(np.mean(list(ap.values()))), map50_95=float(np.mean(list(ap_coco.values()))), ap_per_class=ap,
        ap50_95_per_class=ap_coco, pr_curves=curves,
        map_vs_threshold={"threshold": thr.tolist(), "map50": map50.tolist(), "precision": precision.tolist(),
                          "recall": recall.tolist(), "f1": f1.tolist()},
        mean_iou=0.81, class_names=DETECTION_CLASSES, best_score_threshold=float(thr[int(np.argmax(f1))]),
        images=120, ground_truth_boxes=260, detections=900)
    return data


def sample_graph(specs: list[Spec], task: str = "classification") -> dict[str, Any]:
    dataset = "dataset.digits" if task == "classification" else "dataset.shapes"
    model = "model.torch_cnn" if task == "classification" else "model.torch_detector"
    nodes = [{"id": "data", "kind": dataset}, {"id": "model", "kind": model}, {"id": "train", "kind": "train.torch"},
             {"id": "onnx", "kind": "export.onnx"}, {"id": "tvm_compile", "kind": "optimizer.tvm"},
             {"id": "tflite", "kind": "convert.tflite"}]
    edges = [("data", "train"), ("model", "train"), ("train", "onnx"), ("onnx", "tvm_compile"), ("train", "tflite")]
    source = {"torch": "train", "onnxruntime": "onnx", "tvm": "tvm_compile", "litert": "tflite", "openvino": "onnx"}
    for spec in specs:
        nodes.append({"id": spec.node, "kind": f"runtime.{spec.runtime}"})
        edges += [(source.get(spec.runtime, "onnx"), spec.node), ("data", spec.node), (spec.node, "report")]
    nodes.append({"id": "report", "kind": "report.html"})
    return {"format": "heiti-graph", "version": 1, "name": f"sample {task}: {len(specs)} runtimes", "nodes": nodes,
            "edges": [{"from": [a, "model" if a != "data" else "dataset"], "to": [b, "in"]} for a, b in edges]}


def write_sample_run(run_dir: Path, specs: list[Spec] | None = None, task: str = "classification",
                     seed: int = 0) -> list[Path]:
    """A run folder as the executor leaves it: graph.json, events.jsonl, measurements/<node>.json."""
    from heiti.engine.events import JsonlWriter, NodeFinished, NodeStarted, RunFinished, RunStarted

    specs = specs or CLASSIFICATION_SPECS
    run_dir = Path(run_dir)
    (run_dir / "measurements").mkdir(parents=True, exist_ok=True)
    graph = sample_graph(specs, task)
    (run_dir / "graph.json").write_text(json.dumps(graph, indent=1), encoding="utf-8")
    writer = JsonlWriter(run_dir / "events.jsonl")
    order = [n["id"] for n in graph["nodes"]]
    writer(RunStarted(graph=graph["name"], out_dir=str(run_dir), order=order))
    for i, node in enumerate(order):
        writer(NodeStarted(node=node, kind=graph["nodes"][i]["kind"]))
        writer(NodeFinished(node=node, duration_s=0.5 + i * 0.7))
    writer(RunFinished(status="ok", duration_s=30.0, counts={"done": len(order)}, out_dir=str(run_dir)))
    writer.close()
    paths = []
    for i, spec in enumerate(specs):
        make = classification_measurements if task == "classification" else detection_measurements
        data = make(spec, seed=seed * 100 + i)
        path = run_dir / "measurements" / f"{spec.node}.json"
        data.save(path)
        paths.append(path)
    return paths
