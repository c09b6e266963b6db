"""How long the shapes detector takes to train on this machine, and what mAP it reaches.

Runs dataset.shapes -> model.torch_detector -> train.torch through the engine (the example's
parameters unless overridden), then evaluates the trained network on the test split with the same
numpy post-processing the runtime nodes use. Prints wall time, the process's CPU time (which shows
how much the machine was shared), and mAP@0.5 / mAP@[.5:.95].

    .venv/bin/python bench/detection_train.py [--epochs 12] [--count 1200] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from heiti.engine.executor import Executor
    from heiti.engine.graph import Graph
    from heiti.nodes.detection import evaluate_detection
    from heiti.nodes.detection.detector import predict
    from heiti.nodes.torch_arch import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    example = json.loads((ROOT / "resources" / "graphs" / "shapes_detection.json").read_text())
    keep = {"shapes", "detector", "train"}
    example["nodes"] = [n for n in example["nodes"] if n["id"] in keep]
    example["edges"] = [e for e in example["edges"] if e["from"][0] in keep and e["to"][0] in keep]
    params = {n["id"]: n["params"] for n in example["nodes"]}
    if args.epochs:
        params["train"]["epochs"] = args.epochs
    if args.count:
        params["shapes"]["count"] = args.count
    params["train"]["threads"] = args.threads
    graph = Graph.model_validate(example)

    with tempfile.TemporaryDirectory() as tmp:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = Executor(use_cache=False).run(graph, Path(tmp) / "run")
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        if result.status != "ok":
            sys.exit(f"run failed: {result.states}")
        dataset = result.outputs["shapes"]["dataset"]
        model = result.outputs["train"]["model"]
        with np.load(dataset.path) as data:
            x_test = data["x_test"]
        module = load_model(model.path, model.meta)
        quality = evaluate_detection(dataset, "test", predict(module, x_test), model.meta)

    train_s = model.meta["train_time_s"]
    print(f"images: {params['shapes']['count']} ({dataset.meta['images']}), epochs {params['train']['epochs']}, "
          f"threads {args.threads}")
    print(f"train.torch wall time: {train_s:.1f} s   (whole run {wall:.1f} s, process CPU {cpu:.1f} s, "
          f"CPU/wall {cpu / wall:.2f} of {args.threads} threads)")
    print(f"test mAP@0.5 {quality.map50:.3f}   mAP@[.5:.95] {quality.map50_95:.3f}   "
          f"mean IoU {quality.mean_iou:.3f}   best score threshold {quality.best_score_threshold:.2f}")
    print("AP@0.5 per class: " + ", ".join(f"{k} {v:.3f}" for k, v in quality.ap_per_class.items()))
    print(f"training time vs the 180 s budget: {train_s / 180:.2f}")


if __name__ == "__main__":
    main()
