"""The `heiti` command: run, validate, nodes, schema, report, serve, device, board, edit.

Sub-commands that need big modules (the editor, the report renderer, the device server) are
imported only when called, so `heiti nodes` and `heiti validate` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_INVALID, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 2, 130


def _parse_set(items: list[str]) -> list[tuple[str, str, Any]]:
    """`node.param=value` -> (node, param, value); value is JSON when it parses, else a string."""
    out = []
    for item in items:
        target, sep, raw = item.partition("=")
        node_id, dot, param = target.rpartition(".")
        if not sep or not dot or not node_id or not param:
            raise ValueError(f"--set {item!r}: expected NODE.PARAM=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.append((node_id, param, value))
    return out


def _load(path: str, console: Any) -> Any:
    from heiti.engine.graph import GraphLoadError, load_graph

    try:
        return load_graph(path)
    except GraphLoadError as err:
        console.print(f"[bold red]cannot load {err.source}[/]")
        for problem in err.problems:
            console.print(f"  • {problem}", markup=False)
        return None


def _names_a_file(kind: str, param: str) -> bool:
    """True for a path param: `--set data.path=x.npz` means x.npz of the current folder."""
    from heiti.engine.registry import default_registry

    registry = default_registry()
    return kind in registry and param in registry.get(kind).path_params


def _print_problems(problems: list[Any], console: Any) -> None:
    for p in problems:
        colour = "red" if p.severity == "error" else "yellow"
        console.print(f"[{colour}]{p.severity}[/] ", end="")
        console.print(str(p), markup=False)


# --- sub-commands -------------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from heiti.engine.graph import GraphLoadError, load_graph
    from heiti.engine.validate import validate
    from rich.console import Console

    console = Console(stderr=False)
    try:
        graph = load_graph(args.graph)
    except GraphLoadError as err:
        if args.json:
            print(json.dumps({"ok": False, "load_errors": err.problems, "problems": []}, indent=2))
        else:
            console.print(f"[bold red]cannot load {err.source}[/]")
            for problem in err.problems:
                console.print(f"  • {problem}", markup=False)
        return EXIT_INVALID
    result = validate(graph)
    if args.json:
        print(json.dumps({"ok": result.ok, "problems": [p.to_dict() for p in result.problems]}, indent=2))
    else:
        if result.ok:
            console.print(f"[green]✓[/] {args.graph}: {len(graph.nodes)} nodes, {len(graph.edges)} wires, valid")
        else:
            console.print(f"[bold red]{args.graph}: {len(result.problems)} problem(s)[/]")
        _print_problems(result.problems, console)
    return EXIT_OK if result.ok else EXIT_INVALID


def _cache_dir(args: argparse.Namespace) -> Path | None:
    from heiti.engine.paths import default_cache_dir

    return None if args.no_cache else Path(args.cache) if args.cache else default_cache_dir()


def cmd_run(args: argparse.Namespace) -> int:
    from heiti.engine.run_hints import whole_run_keys

    cache_dir = _cache_dir(args)
    keys = whole_run_keys(cache_dir, args.graph) if cache_dir is not None and not args.set else None
    whole = keys is not None
    if whole and keys and args.ray is None:  # its files are copied while this command starts
        from heiti.engine import prefetch

        return _run(args, prefetch.start(cache_dir, args.graph, args.out, keys))
    if _jobs(args) > 1 and args.ray is None and not whole:  # a run the cache will serve needs no worker
        from heiti.engine.forkserver import start_fork_server

        start_fork_server()  # first: its imports overlap this process's, and the loading and validation below
        if not args.set:  # the first node's framework import begins as soon as the server is up
            from heiti.engine import head_start

            head_start.begin(args.graph, use_cache=not args.no_cache, cache_dir=args.cache)
            try:
                return _run(args)
            finally:
                head_start.release()  # not taken: the graph was invalid or the run never started
    return _run(args)


def _run(args: argparse.Namespace, prefetch: Any = None) -> int:
    """`prefetch` (engine.prefetch): the run folder it copies into is this run's; removed again
    if the run does not start."""
    try:
        code = _run_with(args, prefetch)
    except BaseException:
        if prefetch is not None and not (prefetch.out_dir / "events.jsonl").exists():
            prefetch.discard()
        raise
    if code == EXIT_INVALID and prefetch is not None:
        prefetch.discard()
    return code


def _run_with(args: argparse.Namespace, prefetch: Any) -> int:
    from heiti.engine import collector
    from heiti.engine.console import RunView
    from heiti.engine.executor import Executor, InvalidGraph
    from heiti.engine.scheduler import ClusterUnavailable
    from rich.console import Console

    console = Console(stderr=True)
    graph = _load(args.graph, console)
    if graph is None:
        return EXIT_INVALID
    try:
        for node_id, param, value in _parse_set(args.set or []):
            if not graph.has_node(node_id):
                console.print(f"[red]--set: no node {node_id!r} in the graph[/]")
                return EXIT_INVALID
            if isinstance(value, str) and value and _names_a_file(graph.node(node_id).kind, param):
                value = str(Path(value).expanduser().absolute())  # typed in the shell: from the cwd
            graph.set_param(node_id, param, value)
    except ValueError as err:
        console.print(f"[red]{err}[/]")
        return EXIT_INVALID

    if args.interleave and (_jobs(args) < 2 or args.ray is not None):
        console.print("[yellow]--interleave needs worker processes on this machine (--jobs 2 or more, no --ray): "
                      "the runtimes run one after the other[/]")
    executor = Executor(cache_dir=Path(args.cache) if args.cache else None, use_cache=not args.no_cache,
                        jobs=_jobs(args), ray_address=args.ray, interleave=args.interleave, prefetch=prefetch)
    view = RunView(console, verbose=args.verbose)
    executor.subscribe(view)

    def on_sigint(signum: int, frame: Any) -> None:
        if executor.token.cancelled:
            raise KeyboardInterrupt
        console.print("[magenta]stopping after the current step (Ctrl-C again to interrupt it)…[/]")
        executor.cancel()

    previous = signal.signal(signal.SIGINT, on_sigint)
    collector.started()
    try:
        with view:
            result = executor.run(graph, Path(args.out) if args.out else prefetch.out_dir if prefetch else None)
    except InvalidGraph as err:
        console.print(f"[bold red]{args.graph}: the graph is not valid[/]")
        _print_problems(err.result.problems, console)
        return EXIT_INVALID
    except ClusterUnavailable as err:
        console.print(str(err), style="bold red", markup=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        console.print("[magenta]interrupted[/]")
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGINT, previous)
    if executor.cache is not None and not args.set:
        from heiti.engine.run_hints import note_run

        note_run(executor.cache.root, args.graph, result.cache_holds_all, result.input_files, result.keys)
    console.print(view.summary_table())
    from heiti.engine.console import measurements_table

    comparison = measurements_table(result.out_dir)
    if comparison is not None:
        out = Console()
        if not out.is_terminal:
            out.width = max(out.width, 120)  # logs and CI: the table is for people, do not truncate it
        out.print(comparison)
    colour = {"ok": "green", "failed": "red", "cancelled": "magenta"}[result.status]
    console.print(f"[{colour}]{result.status}[/] in {result.duration_s:.1f}s — results in [bold]{result.out_dir}[/]")
    report = result.out_dir / "report.html"
    if report.exists():
        console.print(f"report: [bold]{report}[/]")
    return result.exit_code


def _jobs(args: argparse.Namespace) -> int:
    """--jobs, else the core count; on Ray, as many as the cluster takes (it schedules by resources)."""
    import os

    if args.jobs is not None:
        return max(1, args.jobs)
    return 1024 if args.ray is not None else (os.cpu_count() or 1)


def _add_scaling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="nodes run at once, in worker processes (default: the core count; 1 = in this "
                        "process, one after the other). Measuring nodes always run alone")
    p.add_argument("--interleave", action="store_true",
                   help="runtimes ready together are timed in turns, block by block, so that a machine whose "
                        "speed drifts (a shared VM) affects each alike (needs --jobs 2 or more)")
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="run nodes as tasks on a Ray cluster (default address: auto); needs heiti[cluster]")


def cmd_nodes(args: argparse.Namespace) -> int:
    from heiti.engine.catalog import catalog, catalog_markdown
    from heiti.engine.registry import default_registry

    registry = default_registry()
    if args.json:
        print(json.dumps(catalog(registry), indent=2, default=str))
    elif args.markdown:
        print(catalog_markdown(registry), end="")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="node kinds")
        for col in ("kind", "category", "inputs", "outputs", "params"):
            table.add_column(col, overflow="fold")
        for item in catalog(registry):
            ins = ", ".join(p["name"] + (f"[{'|'.join(p['formats'])}]" if p["formats"] else "") for p in item["inputs"])
            outs = ", ".join(p["name"] + (f"[{p['format']}]" if p["format"] else "") for p in item["outputs"])
            params = ", ".join(f"{n}={v.get('default', '?')}" for n, v in item["params"].items())
            table.add_row(item["kind"], item["category"], ins, outs, params)
        Console().print(table)
    for problem in default_registry().load_errors:
        print(f"warning: {problem}", file=sys.stderr)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from heiti.engine.catalog import full_graph_schema
    from heiti.engine.registry import default_registry

    print(json.dumps(full_graph_schema(default_registry()), indent=2))
    return EXIT_OK


def _lazy(target: str) -> Any:
    """`module:function`, imported on call: keeps heavy sub-commands out of start-up."""

    def call(args: argparse.Namespace) -> int:
        module, _, name = target.partition(":")
        return int(getattr(importlib.import_module(module), name)(args) or 0)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="heiti", description="Deploy deep-learning models to edge devices: one graph, every AI stack, measured.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="run a graph headlessly", description="Run a graph file; results go to --out.")
    p.add_argument("graph", help="graph file (.json)")
    p.add_argument("--out", help="output folder (default runs/<graph-name>-<time>)")
    p.add_argument("--no-cache", action="store_true", help="execute every node, ignoring cached results")
    p.add_argument("--cache", help="cache folder (default .heiti/cache or $HEITI_CACHE)")
    p.add_argument("--set", action="append", metavar="NODE.PARAM=VALUE", help="override a param (JSON value)")
    p.add_argument("-v", "--verbose", action="store_true", help="show logs and tracebacks")
    _add_scaling_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sweep", help="run the variants of a graph and compare them",
                       description="Run a graph once per combination of parameter values, sharing the cache, "
                                   "and write a sweep report (table, Pareto front, best variant).")
    p.add_argument("graph", help="graph file (.json)")
    p.add_argument("--grid", action="append", required=True, metavar="NODE.PARAM=V1,V2",
                   help="values to try for a param (JSON values; a JSON list is one value per item); repeatable")
    p.add_argument("--random", type=int, metavar="N", help="run N variants drawn at random from the grid")
    p.add_argument("--seed", type=int, default=0, help="seed of --random")
    p.add_argument("--out", help="sweep folder (default sweeps/<graph-name>-<time>)")
    p.add_argument("--max-latency-ms", type=float, help="best variant: mean latency at most this")
    p.add_argument("--min-accuracy", type=float, help="best variant: quality (accuracy or mAP@0.5) at least this")
    p.add_argument("--variants-at-once", type=int, default=1, metavar="K",
                   help="variants run together after the first (for a Ray cluster; default 1)")
    p.add_argument("--no-cache", action="store_true", help="execute every node, ignoring cached results")
    p.add_argument("--cache", help="cache folder (default .heiti/cache or $HEITI_CACHE)")
    _add_scaling_args(p)
    p.set_defaults(func=_lazy("heiti.engine.sweep:cli_main"))

    p = sub.add_parser("validate", help="check a graph and list every problem")
    p.add_argument("graph")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("nodes", help="list node kinds with ports, formats and params")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true")
    g.add_argument("--markdown", action="store_true", help="the node catalogue as Markdown")
    p.set_defaults(func=cmd_nodes)

    p = sub.add_parser("schema", help="print the graph file's JSON Schema")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("report", help="render a report from one or more run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--baseline", help="node id or run folder to compare against (default: the native framework)")
    p.add_argument("--out", default="report.html", help="HTML file to write (a .md twin is written beside it)")
    p.add_argument("--title", help="page title")
    p.add_argument("--statistic", choices=["mean", "median"], default="mean", help="latency figure that ranks runtimes")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="largest accepted accuracy drop against the baseline, as a fraction (0.01 = 1 point)")
    p.set_defaults(func=_lazy("heiti.nodes.reports.cli:main"))

    p = sub.add_parser("serve", help="serve runtimes to a host over TCP or a serial line (run this on the device)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP (default host 127.0.0.1)")
    where.add_argument("--serial", metavar="PORT", help="serve over a serial device, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=115200, help="serial baud rate")
    p.add_argument("--token", help="shared secret clients must present (required off loopback)")
    p.add_argument("--workdir", help="folder for uploaded models (default: a temporary folder)")
    p.add_argument("--stats-period", type=float, default=0.5, help="seconds between STATS messages")
    p.add_argument("--allow-native", action="store_true",
                   help="load native modules (TVM .so/.tar) for clients without a token; "
                        "by default only a client that presented --token may")
    p.add_argument("--hello-timeout", type=float, help="seconds a new link has to say HELLO (default 10)")
    p.add_argument("--frame-timeout", type=float,
                   help="seconds a frame may go without a byte; it must also complete within this plus "
                        "its length at 64 KiB/s of its first byte (default 5)")
    p.set_defaults(func=_lazy("heiti.nodes.devices.server:main"))

    p = sub.add_parser("device", help="talk to a device running `heiti serve`")
    device = p.add_subparsers(dest="device_command", metavar="COMMAND", required=True)
    q = device.add_parser("info", help="say HELLO and PING; print the device's description and round trip")
    q.add_argument("address", help="tcp://HOST:PORT or serial:PORT@BAUD")
    q.add_argument("--token", help="the device's token (default: $HEITI_TOKEN)")
    q.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the device")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_lazy("heiti.nodes.devices.info:main"))

    p = sub.add_parser("board", help="an emulated Arm board on this machine (qemu-user + Debian arm64), serving on 127.0.0.1")
    board = p.add_subparsers(dest="board_command", metavar="COMMAND", required=True)
    for name, text in (("up", "build (once, cached) and start it"), ("status", "is it built, running, what it runs"),
                       ("down", "stop its server")):
        q = board.add_parser(name, help=text)
        q.add_argument("--arch", default="aarch64", choices=["aarch64"], help="board architecture")
        q.add_argument("--dir", help="board folder (default ~/.cache/heiti/boards/ARCH or $HEITI_BOARDS/ARCH)")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "up":
            q.add_argument("--port", type=int, default=7080, help="TCP port of its server on 127.0.0.1")
            q.add_argument("--rebuild", action="store_true", help="build the root file system again")
        q.set_defaults(func=_lazy("heiti.nodes.devices.board:main"))

    p = sub.add_parser("monitor", help="watch a device's CPU, memory, temperature and frequency live")
    p.add_argument("address", help="local, tcp://HOST:PORT or serial:PORT@BAUD (a device running `heiti serve`)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--period", type=float, default=0.5, help="sampling period for local (a device uses its own)")
    p.add_argument("--token", help="the device's token (default: $HEITI_TOKEN)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the device")
    p.set_defaults(func=_lazy("heiti.nodes.devices.monitor:main"))

    p = sub.add_parser("edit", help="open the desktop editor")
    p.add_argument("graph", nargs="?", help="graph file to open")
    p.set_defaults(func=_lazy("heiti.app.main:main"))
    return parser


def _parse(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices drown the progress view
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    return parser, parser.parse_args(argv or ["edit"])


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_OK
    return int(args.func(args))


def main(argv: list[str] | None = None) -> int:
    return _dispatch(*_parse(argv))


#: commands that end with the process: the interpreter's teardown is skipped after them
QUICK_EXIT = frozenset({"run", "sweep", "validate", "nodes", "schema", "report"})


def entry() -> int:
    """The `heiti` console command: `main` with the start-up collector policy of engine.collector,
    and, after a command of QUICK_EXIT, a quick exit (`exit_now`)."""
    from heiti.engine import collector

    collector.begin()
    parser, args = _parse(None)
    try:
        code = _dispatch(parser, args)
    finally:
        collector.ending()
    if getattr(args, "command", None) in QUICK_EXIT:
        exit_now(code)
    return code


def exit_now(code: int) -> None:
    """End the process once its exit handlers ran and its output is flushed, without the
    interpreter's teardown: freeing every module and object one by one took 0.1-0.3 s after each
    command (pydantic's schemas, networkx, the node kinds), a sixth of a cached re-run. Files are
    closed by then (the commands use `with`); atexit handlers (multiprocessing's, weakref
    finalizers, logging) still run, as at any exit."""
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said on it
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(entry())
