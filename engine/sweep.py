"""Parameter sweeps: run the variants of one graph, sharing the cache, and record them.

A grid names values per `NODE.PARAM`; the variants are their combinations (all of them, or N
drawn at random). Each variant is the graph with those params set, run into
`<sweep>/variants/<NN>/`, so nodes whose inputs did not change come from the cache and only what a
param touches runs again. `sweep.json` lists the variants, their params, run folders and status;
the sweep report (heiti.nodes.reports.sweep) reads it with the measurements the runs wrote.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from heiti.engine.graph import Graph, atomic_write_text
from heiti.engine.paths import run_folder

SWEEP_FILE = "sweep.json"
MAX_VARIANTS = 10_000


class SweepError(ValueError):
    """A grid that cannot be run, with a message that says why."""


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def parse_grid(items: list[str], graph: Graph | None = None) -> dict[str, list[Any]]:
    """`NODE.PARAM=V1,V2` -> {"NODE.PARAM": [V1, V2]}; a JSON list after `=` gives its items.

    Values are JSON when they parse, else strings. With `graph`, nodes must exist.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        target, sep, raw = item.partition("=")
        node_id, dot, param = target.rpartition(".")
        if not sep or not dot or not node_id or not param or not raw.strip():
            raise SweepError(f"--grid {item!r}: expected NODE.PARAM=V1,V2,...")
        if graph is not None and not graph.has_node(node_id):
            known = ", ".join(n.id for n in graph.nodes)
            raise SweepError(f"--grid {item!r}: no node {node_id!r} in the graph (nodes: {known})")
        parsed = _value(raw) if raw.lstrip().startswith("[") else None
        values = parsed if isinstance(parsed, list) else [_value(v.strip()) for v in raw.split(",")]
        if not values:
            raise SweepError(f"--grid {item!r}: no values")
        grid.setdefault(f"{node_id}.{param}", []).extend(values)
    return grid


def variants(grid: dict[str, list[Any]], random_n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Every combination in grid order, or `random_n` distinct ones drawn with `seed`."""
    names = list(grid)
    total = 1
    for values in grid.values():
        total *= len(values)
    if random_n is not None:
        if random_n < 1:
            raise SweepError("--random must be at least 1")
        picks = sorted(random.Random(seed).sample(range(total), min(random_n, total)))
    else:
        if total > MAX_VARIANTS:
            raise SweepError(f"the grid has {total} variants; use --random N to draw some of them")
        picks = list(range(total))
    combos = []
    for index in picks:
        combo, rest = {}, index
        for name in reversed(names):  # mixed-radix digits: the last name varies fastest
            values = grid[name]
            combo[name] = values[rest % len(values)]
            rest //= len(values)
        combos.append({n: combo[n] for n in names})
    return combos


def apply_variant(graph: Graph, params: dict[str, Any]) -> Graph:
    variant = graph.copy_deep()
    for name, value in params.items():
        node_id, _, param = name.rpartition(".")
        variant.set_param(node_id, param, value)
    return variant


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


@dataclass
class VariantRecord:
    index: int
    params: dict[str, Any]
    run_dir: str
    status: str = "pending"  # ok | failed | cancelled | invalid | pending
    duration_s: float = 0.0
    error: str = ""


@dataclass
class SweepResult:
    out_dir: Path
    graph: str
    variants: list[VariantRecord] = field(default_factory=list)
    report: Path | None = None

    @property
    def status(self) -> str:
        states = {v.status for v in self.variants}
        if "cancelled" in states or "pending" in states:
            return "cancelled"
        return "ok" if states <= {"ok"} else "failed"

    def save(self) -> None:
        data = {"format": "heiti-sweep", "version": 1, "graph": self.graph,
                "variants": [asdict(v) for v in self.variants]}
        atomic_write_text(self.out_dir / SWEEP_FILE, json.dumps(data, indent=1, default=str))


def default_sweep_dir(graph: Graph, base: Path = Path("sweeps")) -> Path:
    return run_folder(graph.name, base, unnamed="sweep")


class SweepRunner:
    """Runs the variants; each variant's nodes run as its executor decides (in process, in worker
    processes, or on Ray). With `at_once` > 1 (for a cluster), the first variant runs alone, so the
    nodes every variant shares are computed once and cached, then up to `at_once` run together.
    `cancel()` stops the running variants and the rest."""

    def __init__(self, make_executor: Callable[[], Any], at_once: int = 1) -> None:
        self.make_executor = make_executor
        self.at_once = max(1, at_once)
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._current: set[Any] = set()
        self._subscribers: list[Callable[[Any], None]] = []

    def subscribe(self, fn: Callable[[Any], None]) -> None:
        """Every variant's run events go to `fn` too."""
        self._subscribers.append(fn)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()
        with self._lock:
            for executor in self._current:
                executor.cancel()

    def run(self, graph: Graph, combos: list[dict[str, Any]], out_dir: Path,
            on_variant: Callable[[VariantRecord], None] | None = None) -> SweepResult:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        graph.save(out_dir / "graph.json")
        width = max(2, len(str(len(combos))))
        result = SweepResult(out_dir=out_dir, graph=graph.name, variants=[
            VariantRecord(i, params, str(out_dir / "variants" / str(i).zfill(width)))
            for i, params in enumerate(combos)])
        result.save()

        def one(record: VariantRecord) -> None:
            if self._cancelled.is_set():
                return
            self._run_variant(graph, record)
            with self._lock:
                result.save()
            if on_variant is not None:
                on_variant(record)

        records = list(result.variants)
        if records:
            one(records[0])
        if self.at_once == 1:
            for record in records[1:]:
                one(record)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.at_once, thread_name_prefix="heiti-variant") as pool:
                list(pool.map(one, records[1:]))
        return result

    def _run_variant(self, graph: Graph, record: VariantRecord) -> None:
        from heiti.engine.executor import InvalidGraph

        executor = self.make_executor()
        for fn in self._subscribers:
            executor.subscribe(fn)
        with self._lock:
            self._current.add(executor)
        try:
            run = executor.run(apply_variant(graph, record.params), Path(record.run_dir))
            record.status, record.duration_s = run.status, run.duration_s
            record.error = "; ".join(f"{n}: {e}" for n, e in run.errors.items())[:2000]
        except InvalidGraph as err:
            record.status, record.error = "invalid", str(err)[:2000]
        finally:
            with self._lock:
                self._current.discard(executor)


def read_sweep(out_dir: Path) -> dict[str, Any]:
    data = json.loads((Path(out_dir) / SWEEP_FILE).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != "heiti-sweep":
        raise ValueError(f"{out_dir}: not a sweep folder (no heiti-sweep {SWEEP_FILE})")
    return data


def cli_main(args: Any) -> int:
    """`heiti sweep`: exit 0 when every variant ran, 1 for a bad grid or graph, 2 when some failed."""
    import signal

    from heiti.engine import collector
    from heiti.engine.cli import EXIT_CANCELLED, EXIT_FAILED, EXIT_INVALID, EXIT_OK, _jobs, _load

    if _jobs(args) > 1 and args.ray is None:
        from heiti.engine.forkserver import start_fork_server

        start_fork_server()  # as `heiti run` does: its imports overlap this process's
    from heiti.engine.executor import Executor
    from heiti.engine.scheduler import ClusterUnavailable
    from rich.console import Console

    console = Console(stderr=True)
    graph = _load(args.graph, console)
    if graph is None:
        return EXIT_INVALID
    try:
        combos = variants(parse_grid(args.grid, graph), args.random, args.seed)
    except SweepError as err:
        console.print(f"[red]{err}[/]", markup=False)
        return EXIT_INVALID
    out_dir = Path(args.out) if args.out else default_sweep_dir(graph)
    jobs = _jobs(args)
    runner = SweepRunner(lambda: Executor(cache_dir=Path(args.cache) if args.cache else None,
                                          use_cache=not args.no_cache, jobs=jobs, ray_address=args.ray,
                                          interleave=args.interleave),
                         at_once=args.variants_at_once)

    def on_sigint(signum: int, frame: Any) -> None:
        if runner.cancelled:
            raise KeyboardInterrupt
        console.print("[magenta]stopping the sweep after the current step…[/]")
        runner.cancel()

    def on_variant(record: VariantRecord) -> None:
        colour = {"ok": "green", "cancelled": "magenta"}.get(record.status, "red")
        console.print(f"[{colour}]{record.status}[/] variant {record.index + 1}/{len(combos)} "
                      f"({record.duration_s:.1f}s): {describe(record.params)}", markup=True, highlight=False)

    console.print(f"sweep of {args.graph}: {len(combos)} variant(s) into [bold]{out_dir}[/]")
    previous = signal.signal(signal.SIGINT, on_sigint)
    collector.started()
    try:
        result = runner.run(graph, combos, out_dir, on_variant)
    except KeyboardInterrupt:
        console.print("[magenta]interrupted[/]")
        return EXIT_CANCELLED
    except ClusterUnavailable as err:
        console.print(str(err), style="bold red", markup=False)
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, previous)
    from heiti.nodes.reports.sweep import write_sweep_report

    report = write_sweep_report(out_dir, max_latency_ms=args.max_latency_ms, min_quality=args.min_accuracy)
    console.print(f"sweep report: [bold]{report.html}[/] (and {report.markdown.name})")
    if report.best is not None:
        console.print(f"best: variant {report.best['variant'] + 1} on {report.best['label']} — "
                      f"{describe(report.best['params'])}", markup=False)
    elif args.max_latency_ms is not None or args.min_accuracy is not None:
        console.print("[yellow]no variant meets the constraints[/]")
    if result.status == "cancelled":
        return EXIT_CANCELLED
    return EXIT_OK if result.status == "ok" else EXIT_FAILED
