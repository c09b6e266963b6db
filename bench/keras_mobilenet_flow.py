"""Keras MobileNetV2 → ONNX → ONNX Runtime (200 inferences) → report, as one `heiti run`.

The issue's comparison flow (issue 14): Kenning 0.8.2 did the same work here in 26.9 s with a
1.4 GB peak; the goal is ≤ 13.4 s with the `heiti` process itself ≤ 0.6 GB (frameworks live in the
worker processes). Built offline: MobileNetV2 with weights=None (random weights, no download),
saved as .keras, and 200 random 224×224×3 images in an .npz, both made in a separate process
before the clock starts. Timed: `heiti run --jobs N --no-cache` from start to exit; the heiti
process's peak RSS is sampled every 50 ms.

    .venv/bin/python bench/keras_mobilenet_flow.py [--jobs 2] [--inferences 200] [--compare] [--runs 5] [--steps]
        [--cached [--reruns 3]]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from parallel import compile_bytecode, load, timed_run  # noqa: E402

BUILD = """
import sys, numpy as np, keras
folder = sys.argv[1]; n = int(sys.argv[2])
keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000).save(folder + "/mobilenet_v2.keras")
np.savez(folder + "/images.npz", x=np.random.default_rng(0).random((n, 224, 224, 3), dtype=np.float32))
"""


def graph(folder: Path, inferences: int) -> dict:
    return {
        "format": "heiti-graph", "version": 1, "name": "keras mobilenetv2 to onnxruntime",
        "nodes": [
            {"id": "model", "kind": "model.file", "params": {"path": str(folder / "mobilenet_v2.keras"), "task": "none"}},
            {"id": "to_onnx", "kind": "convert.keras_to_onnx", "params": {}},
            {"id": "images", "kind": "dataset.npz", "params": {"path": str(folder / "images.npz"), "layout": "NHWC"}},
            {"id": "run_ort", "kind": "runtime.onnxruntime", "params": {"max_samples": inferences}},
            {"id": "report", "kind": "report.html", "params": {"title": "MobileNetV2 on ONNX Runtime"}},
        ],
        "edges": [
            {"from": ["model", "model"], "to": ["to_onnx", "model"]},
            {"from": ["to_onnx", "model"], "to": ["run_ort", "model"]},
            {"from": ["images", "dataset"], "to": ["run_ort", "dataset"]},
            {"from": ["run_ort", "measurements"], "to": ["report", "measurements"]},
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--inferences", type=int, default=200)
    parser.add_argument("--compare", action="store_true", help="also run --jobs 1 on the same files")
    parser.add_argument("--runs", type=int, default=1, help="timed runs of each --jobs (median and best printed)")
    parser.add_argument("--steps", action="store_true", help="print the steps inside each node too")
    parser.add_argument("--cached", action="store_true",
                        help="also a run that fills a cache and re-runs served by it (their share of a full run)")
    parser.add_argument("--reruns", type=int, default=3, help="cached re-runs after the fill (median printed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heiti-bench-mobilenet-") as tmp:
        folder = Path(tmp)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", BUILD, str(folder), str(args.inferences)],
                       check=True, env=env)
        compile_bytecode()
        path = folder / "flow.json"
        path.write_text(json.dumps(graph(folder, args.inferences)))
        print(f"model and images built; {os.cpu_count()} cores; {load()}", flush=True)
        for jobs in [args.jobs, *([1] if args.compare and args.jobs != 1 else [])]:
            times = []
            for i in range(args.runs):
                run = folder / f"run-j{jobs}-{i}"
                seconds, peak_mb, code = timed_run(path, run, ["--jobs", str(jobs), "--no-cache"])
                times.append(seconds)
                print(f"heiti run --jobs {jobs}: {seconds:.2f} s (goal <= 13.4 s; Kenning 26.9 s → "
                      f"{seconds / 26.9:.2f}×), heiti process peak {peak_mb:.0f} MB (goal <= 600), exit {code}   "
                      f"({load()})", flush=True)
                timeline(run / "events.jsonl", steps=args.steps)
            if len(times) > 1:
                print(f"--jobs {jobs}, {len(times)} runs: median {statistics.median(times):.2f} s, best {min(times):.2f} s, "
                      f"worst {max(times):.2f} s", flush=True)
        if args.cached:
            cache = ["--jobs", str(args.jobs), "--cache", str(folder / "cache")]
            full, _, _ = timed_run(path, folder / "run-fill", cache)
            print(f"cache filled in {full:.2f} s   ({load()})", flush=True)
            agains = []
            for i in range(max(1, args.reruns)):  # each into a new run folder, as `heiti run` does
                again, _, code = timed_run(path, folder / f"run-cached-{i}", cache)
                agains.append(again)
                print(f"cached re-run {i + 1}: {again:.2f} s = {again / full:.1%} of the fill run (goal <= 5%), "
                      f"exit {code}   ({load()})", flush=True)
            middle = statistics.median(agains)
            print(f"cached re-runs: median {middle:.2f} s = {middle / full:.1%}, first {agains[0] / full:.1%}, "
                  f"best {min(agains) / full:.1%}", flush=True)


def timeline(events: Path, steps: bool = False) -> None:
    """Start and end of each node, in seconds from the run's start: where the time went; with
    `steps`, the steps inside (the converter's phases, the runtime's progress, work made ahead)."""
    import parallel

    if not events.exists():
        return
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    t0, started = lines[0]["t"], {}
    began, ended = parallel.LAST_SPAN
    if began:
        print(f"    heiti start -> run_started {t0 - began:.2f} s; run_finished -> exit {ended - lines[-1]['t']:.2f} s")
    for e in lines:
        message = e.get("message", "")
        if e["type"] == "node_started":
            started[e["node"]] = e["t"] - t0
        elif e["type"] in ("node_finished", "node_failed", "node_cached"):
            print(f"    {e['node']:10s} {started.get(e['node'], 0.0):6.2f} → {e['t'] - t0:6.2f} s  {e['type'][5:]}")
        elif e["type"] == "node_log" and ("ahead" in message or (steps and "phases" in message)):
            print(f"    {e['node']:10s}          {e['t'] - t0:6.2f} s  {message}")
        elif steps and e["type"] == "node_progress" and not message.endswith(" calls"):
            print(f"    {e['node']:10s}          {e['t'] - t0:6.2f} s  {message}")
    print(f"    (run_finished at {lines[-1]['t'] - t0:.2f} s)")


if __name__ == "__main__":
    main()
