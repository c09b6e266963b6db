"""Parallel runs and the cache on the demo graph (resources/graphs/digits_compare.json).

Three `heiti run` processes in one session, each timed from start to exit with its own peak RSS
(the `heiti` process alone, sampled every 50 ms; workers are separate processes):
1. --jobs 1 --no-cache         today's order, in one process
2. --jobs 2, empty cache       independent nodes in two worker processes; fills the cache
3. --jobs 2, same cache        everything restored
Figures: (2)/(1), goal <= 0.7; (3)/(2), goal <= 0.05. The machine's load is printed beside them:
on a shared machine the ratios are only as good as the quiet they ran in.

    .venv/bin/python bench/parallel.py [--graph resources/graphs/digits_compare.json] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def compile_bytecode() -> None:
    """Heiti's modules compiled to bytecode first, as an installed package has them: an editable
    install under PYTHONDONTWRITEBYTECODE=1 would otherwise compile ~130 modules in every process
    of every run (~0.5 s of CPU), which no user's installed copy pays."""
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "compileall", "-q",
                    *(str(ROOT / d) for d in ("engine", "nodes", "app"))], check=True, stdout=subprocess.DEVNULL)


#: wall-clock (epoch) start and end of the last timed_run: where its events.jsonl begins and ends within it
LAST_SPAN: tuple[float, float] = (0.0, 0.0)


def timed_run(graph: Path, out: Path, args: list[str]) -> tuple[float, float, int]:
    """Wall seconds, the heiti process's peak RSS in MB (sampled every 50 ms), exit code. The end is
    seen as soon as the process exits (a wait, not a sleep between polls)."""
    global LAST_SPAN
    cmd = [str(ROOT / ".venv" / "bin" / "heiti"), "run", str(graph), "--out", str(out), *args]
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watch = psutil.Process(proc.pid)
    peak = 0
    while True:
        try:
            peak = max(peak, watch.memory_info().rss)
        except psutil.Error:
            pass
        try:
            proc.wait(timeout=0.05)
            break
        except subprocess.TimeoutExpired:
            continue
    seconds = time.perf_counter() - t0
    LAST_SPAN = (started, started + seconds)
    return seconds, peak / 2**20, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", default=str(ROOT / "resources" / "graphs" / "digits_compare.json"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    graph = Path(args.graph)
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="heiti-bench-parallel-") as tmp:
        work = Path(tmp)
        cache = ["--cache", str(work / "cache")]
        print(f"{graph.name} on {os.cpu_count()} cores; before: {load()}", flush=True)
        runs = [("--jobs 1, no cache", ["--jobs", "1", "--no-cache"]),
                (f"--jobs {args.jobs}, empty cache", ["--jobs", str(args.jobs), *cache]),
                (f"--jobs {args.jobs}, cached re-run", ["--jobs", str(args.jobs), *cache])]
        figures, codes = [], []
        for i, (name, extra) in enumerate(runs):
            seconds, peak_mb, code = timed_run(graph, work / f"run{i}", extra)
            figures.append(seconds)
            codes.append(code)
            print(f"{name:32s} {seconds:7.2f} s   heiti process peak {peak_mb:6.0f} MB   exit {code}   ({load()})",
                  flush=True)
        print(f"parallel / serial  : {figures[1] / figures[0]:.2f}   (goal <= 0.70)")
        print(f"cached / full      : {figures[2] / figures[1]:.3f}  (goal <= 0.05)")
        if any(codes):
            print("A RUN FAILED (exit codes above): these figures compare unequal work and do not count")
    sys.exit(1 if any(codes) else 0)


if __name__ == "__main__":
    main()
