"""Wall time of `heiti nodes` and `heiti validate` in fresh processes. Goal <= 0.5 s each."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRAPH = ROOT / "resources" / "graphs" / "digits_compare.json"


def wall(args: list[str], runs: int = 5) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "heiti.engine.cli", *args], cwd=ROOT, env=env, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    bare = wall(["--help"])
    print(f"python + argparse (heiti --help)  {bare * 1000:6.0f} ms")
    for label, args in [("heiti nodes", ["nodes"]), ("heiti nodes --json", ["nodes", "--json"]),
                        (f"heiti validate {GRAPH.name}", ["validate", str(GRAPH)])]:
        if "validate" in label and not GRAPH.exists():
            continue
        t = wall(args)
        print(f"{label:34s}{t * 1000:6.0f} ms   goal <= 500 ms   ratio to goal {t / 0.5:.2f}")


if __name__ == "__main__":
    main()
