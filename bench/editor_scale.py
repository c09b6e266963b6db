"""Editor scale: open a generated 1,000-node graph (load, validate, build the scene) and pan over it.

Prints the time of each opening step (goal: load + validate + scene <= 1 s), the frame time while
panning at 100% zoom and zoomed out to the whole graph, and the cost of one edit (add a node and
wire it, with the re-validation that follows). Runs offscreen; asserts nothing.

    .venv/bin/python bench/editor_scale.py [--nodes 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from heiti.engine.graph import Graph, load_graph  # noqa: E402
from heiti.engine.registry import Registry  # noqa: E402
from heiti.engine.validate import validate  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from tests import testnodes  # noqa: E402


def generate(n_nodes: int) -> Graph:
    """Chains of model -> compile -> pass-through, and sources feeding adders, laid out in rows."""
    graph = Graph(name=f"scale-{n_nodes}")
    i = 0
    row = 0
    while i < n_nodes:
        y = row * 160
        if row % 2 == 0:
            chain = [("test.model", {"fmt": "onnx"}), ("test.tvm", {}), ("test.pass", {}), ("test.pass", {}),
                     ("test.pass", {})]
            port_out, port_in = "model", "model"
        else:
            chain = [("test.source", {"value": row}), ("test.add", {}), ("test.add", {"offset": 1}),
                     ("test.add", {}), ("test.add", {})]
            port_out, port_in = "out", "values"
        prev = None
        for col, (kind, params) in enumerate(chain):
            if i >= n_nodes:
                break
            node = graph.add_node(kind, f"n{i}", params=params, ui={"pos": [col * 260, y]})
            if prev is not None:
                graph.connect((prev, port_out), (node.id, port_in))
            prev = node.id
            i += 1
        row += 1
    return graph


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def pan_frames(app: QApplication, view, steps: int, dx: int, dy: int) -> list[float]:
    times = []
    for k in range(steps):
        sign = 1 if (k // 50) % 2 == 0 else -1  # back and forth, staying over the graph
        t = time.perf_counter()
        view.pan_pixels(sign * dx, sign * dy)
        view.viewport().repaint()
        app.processEvents()
        times.append(time.perf_counter() - t)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[int(len(ordered) * 0.95)]
    return f"mean {statistics.mean(times) * 1000:6.2f} ms, p95 {p95 * 1000:6.2f} ms, max {ordered[-1] * 1000:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()

    app = QApplication.instance() or QApplication([])
    from heiti.app.document import GraphDocument
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme

    apply_theme(app)
    registry = Registry()
    for cls in testnodes.ALL:
        registry.register(cls)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.json"
        generate(args.nodes).save(path)
        size_kb = path.stat().st_size / 1024

        window = MainWindow(registry, recovery_dir=Path(tmp) / "recovery")
        window.resize(1400, 860)
        window.show()
        app.processEvents()

        t0 = time.perf_counter()
        graph = load_graph(path)
        t1 = time.perf_counter()
        result = validate(graph, registry)
        t2 = time.perf_counter()
        doc: GraphDocument = window.doc
        doc.replace_graph(graph, path)  # re-validates inside, then the scene rebuilds from the signal
        t3 = time.perf_counter()
        window.view.fit_all()
        app.processEvents()
        t4 = time.perf_counter()

        print(f"graph: {len(graph.nodes)} nodes, {len(graph.edges)} wires, {size_kb:.0f} KB, valid={result.ok}")
        print(f"load (parse JSON, build model)       {ms(t1 - t0)}")
        print(f"validate                              {ms(t2 - t1)}")
        print(f"document + scene (validate + items)   {ms(t3 - t2)}")
        print(f"first paint (fit to the whole graph)  {ms(t4 - t3)}")
        total = t4 - t0
        print(f"open total                            {ms(total)}   goal <= 1000 ms: ratio {total / 1.0:.2f}")
        print(f"scene items: {len(window.scene.items())} ({len(window.scene.nodes)} nodes, {len(window.scene.wires)} wires)")

        fit_zoom = window.view.zoom
        frames_fit = pan_frames(app, window.view, args.frames, 12, 6)
        window.view.reset_zoom()
        window.view.centerOn(window.scene.nodes["n0"])
        app.processEvents()
        frames_100 = pan_frames(app, window.view, args.frames, 12, 6)
        print(f"pan, zoomed out to all ({fit_zoom:.2f}x):     {summary(frames_fit)}")
        print(f"pan, 100% zoom:                      {summary(frames_100)}")
        print(f"frames per second at 100% (mean):    {1 / statistics.mean(frames_100):.0f}")

        starts = []
        for k in range(10):
            port = window.scene.port_item((f"n{k * 10}", "model" if (k * 10) % 10 < 5 else "out", "out"))
            t = time.perf_counter()
            window.scene.start_wire(port)
            starts.append(time.perf_counter() - t)
            window.scene.cancel_wire()
        print(f"start a wire drag (light up ports):  {summary(starts)}")

        edits = []
        for k in range(20):
            t = time.perf_counter()
            node = doc.add_node("test.pass", (k * 40.0, -400.0))
            doc.connect(("n0", "model"), (node, "model"))
            app.processEvents()
            edits.append(time.perf_counter() - t)
        print(f"add a node + wire it (2 validations): {summary(edits)}")
        t = time.perf_counter()
        while doc.undo_stack.canUndo():
            doc.undo_stack.undo()
        app.processEvents()
        print(f"undo all {len(edits) * 2} edits:                 {ms(time.perf_counter() - t)}")
        doc.undo_stack.setClean()
        window.close()


if __name__ == "__main__":
    main()
