"""Graph files and path params: size caps that hold for special files, no hang on FIFOs, paths
taken from the graph's folder, missing files found by validation, bounded hashing."""

from __future__ import annotations

import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from heiti.engine import cache
from heiti.engine.cli import main
from heiti.engine.executor import Executor, InvalidGraph
from heiti.engine.graph import MAX_FILE_BYTES, Graph, GraphLoadError, load_graph
from heiti.engine.paths import PathProblem, read_capped, rebase_graph_paths, relative_if_under
from heiti.engine.registry import Registry
from heiti.engine.validate import validate

from tests.nodes.data_h1 import real_registry


def _in_thread(fn, timeout: float = 20.0):
    """Call fn in a thread; fail (instead of hanging the suite) if it blocks."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:  # noqa: BLE001 - handed back to the test
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"blocked for {timeout} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def _graph_file(folder: Path, nodes: list[dict], name: str = "g.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "p", "nodes": nodes, "edges": []}))
    return path


def _npz_node(path: str, node_id: str = "d") -> dict:
    return {"id": node_id, "kind": "dataset.npz", "params": {"path": path, "test_fraction": 0.25}}


def _arrays(path: Path, n: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.random((n, 4), dtype=np.float32), y=np.repeat(np.arange(2), n // 2))


# --- graph files --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["validate", "run"])
def test_dev_zero_as_the_graph_is_refused_unread(command, capsys):
    code = _in_thread(lambda: main([command, "/dev/zero"]))
    assert code == 1
    out = capsys.readouterr()
    assert "is a character device, not a graph file" in out.out + out.err
    assert "Traceback" not in out.out + out.err


def test_a_fifo_as_the_graph_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "g.json"
    os.mkfifo(fifo)
    with pytest.raises(GraphLoadError, match=r"named pipe \(FIFO\), not a graph file"):
        _in_thread(lambda: load_graph(fifo))
    assert _in_thread(lambda: main(["validate", str(fifo)])) == 1
    assert "named pipe (FIFO)" in capsys.readouterr().out


def test_a_folder_and_a_kernel_file_as_the_graph(tmp_path):
    with pytest.raises(GraphLoadError, match="is a folder, not a graph file"):
        load_graph(tmp_path)
    with pytest.raises(GraphLoadError, match=r"cannot read \(Input/output error\)"):
        load_graph("/proc/self/mem")  # a "regular" file of size 0 that fails on read


def test_graph_size_cap_holds_for_a_sparse_file(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(GraphLoadError, match=f"is {MAX_FILE_BYTES + 1} bytes; the limit is {MAX_FILE_BYTES}"):
        load_graph(big)


def test_read_capped_stops_at_the_cap_when_the_size_lies():
    """/proc files report size 0: the cap holds on the bytes read, not the size stat gave."""
    data = read_capped("/proc/self/status", 1 << 20)
    assert data.startswith(b"Name:")
    with pytest.raises(OSError, match="larger than the limit of 16 bytes"):
        read_capped("/proc/self/status", 16)


# --- path params: paths from the graph's folder ----------------------------------------------------
def test_relative_paths_resolve_against_the_graph_folder_from_any_cwd(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    _graph_file(project, [_npz_node("data/arrays.npz")])
    (project / "data").mkdir()
    _arrays(project / "data" / "arrays.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["--cache", str(tmp_path / "cache")]
    assert main(["validate", "../project/g.json"]) == 0
    assert main(["run", "../project/g.json", "--out", str(tmp_path / "r1"), *args]) == 0
    as_run = json.loads((tmp_path / "r1" / "graph.json").read_text())
    assert as_run["nodes"][0]["params"]["path"] == str(project / "data" / "arrays.npz")  # re-runnable anywhere
    assert main(["run", "../project/g.json", "--out", str(tmp_path / "r2"), *args]) == 0
    assert "node_cached" in [json.loads(line)["type"] for line in (tmp_path / "r2" / "events.jsonl").open()]
    _arrays(project / "data" / "arrays.npz", seed=1)  # the key hashes the resolved file: a change re-runs
    assert main(["run", "../project/g.json", "--out", str(tmp_path / "r3"), *args]) == 0
    types = [json.loads(line)["type"] for line in (tmp_path / "r3" / "events.jsonl").open()]
    assert "node_finished" in types and "node_cached" not in types
    assert not (elsewhere / "data").exists()


def test_set_on_the_command_line_takes_paths_from_the_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    graph_file = _graph_file(project, [_npz_node("missing.npz")])
    monkeypatch.chdir(tmp_path)
    _arrays(tmp_path / "mine.npz")
    code = main(["run", str(graph_file), "--set", "d.path=mine.npz", "--out", str(tmp_path / "r"),
                 "--cache", str(tmp_path / "cache")])
    assert code == 0
    as_run = json.loads((tmp_path / "r" / "graph.json").read_text())
    assert as_run["nodes"][0]["params"]["path"] == str(tmp_path / "mine.npz")


def test_validation_reports_missing_files_and_folders_on_their_node(tmp_path, capsys):
    graph_file = _graph_file(tmp_path / "p", [
        _npz_node("nowhere.npz"),
        {"id": "images", "kind": "dataset.image_folder", "params": {"path": "pictures"}},
        {"id": "ok", "kind": "dataset.digits"},
    ])
    assert main(["validate", str(graph_file), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    by_node = {p["node"]: p for p in problems}
    assert set(by_node) == {"d", "images"}
    folder = tmp_path / "p"
    assert by_node["d"]["message"] == f"dataset file {folder / 'nowhere.npz'} does not exist"
    assert by_node["images"]["message"] == f"dataset folder {folder / 'pictures'} does not exist"
    assert by_node["images"]["field"] == "path" and "graph file's folder" in by_node["images"]["suggestion"]
    (folder / "pictures").write_text("not a folder")
    result = validate(load_graph(graph_file), real_registry())
    assert [p.message for p in result.for_node("images")] == [f"dataset folder {folder / 'pictures'} is a file, not a folder"]


@pytest.mark.parametrize("special, message", [
    ("/dev/zero", "/dev/zero is a kernel character device (under /proc, /sys or /dev), not a data file"),
    ("/proc/self/mem", "/proc/self/mem is a kernel file (under /proc, /sys or /dev), not a data file"),
])
def test_special_files_as_path_params_are_validation_problems(tmp_path, special, message):
    graph = Graph()
    graph.add_node("dataset.npz", "d", {"path": special})
    result = validate(graph, real_registry())
    assert [p.message for p in result.for_node("d")] == [f"dataset file {message}"]


def test_a_fifo_as_a_path_param_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "arrays.npz"
    os.mkfifo(fifo)
    graph = Graph()
    graph.add_node("dataset.npz", "d", {"path": str(fifo)})
    with pytest.raises(InvalidGraph) as caught:
        _in_thread(lambda: Executor(real_registry(), cache_dir=tmp_path / "c").run(graph, tmp_path / "r"))
    assert str(caught.value) == f"node d: dataset file {fifo} is a named pipe (FIFO), not a file or folder"
    with pytest.raises(PathProblem, match="named pipe"):
        _in_thread(lambda: cache.hash_path(fifo))


# --- path params: bounded hashing, inside the node's error handling -----------------------------------
def _folder_registry() -> Registry:
    """A node kind reading a folder param (stands for any dataset folder)."""
    from heiti.engine import Node, Out
    from heiti.engine.payloads import Value
    from pydantic import BaseModel, Field

    class CountFiles(Node):
        kind = "test.count_files"
        path_params = ("folder",)

        class Params(BaseModel):
            folder: str = Field(description="folder of files")

        outputs = {"out": Out(Value)}

        def run(self, ctx):
            return {"out": Value(value=len(os.listdir(self.params.folder)))}

    registry = Registry()
    registry.register(CountFiles)
    return registry


def test_root_as_a_folder_param_fails_that_node_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_FOLDER_ENTRIES", 2000)  # the default, 200,000, takes seconds on /
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("a")
    graph = Graph()
    graph.add_node("test.count_files", "root", {"folder": "/"})
    graph.add_node("test.count_files", "fine", {"folder": str(tmp_path / "small")})
    events = []
    executor = Executor(_folder_registry(), cache_dir=tmp_path / "c")
    executor.subscribe(events.append)
    result = executor.run(graph, tmp_path / "r")
    assert result.states == {"root": "failed", "fine": "done"}  # the bad path is that node's failure only
    assert result.errors["root"] == ("folder / holds more than 2000 files and folders; a path param names one "
                                     "dataset or model folder (HEITI_MAX_FOLDER_ENTRIES raises the limit)")
    failed = [e for e in events if e.type == "node_failed"]
    assert [(e.node, e.error_type, e.traceback) for e in failed] == [("root", "PathProblem", "")]


def test_folder_hash_follows_contents_when_small_and_stat_when_large(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.bin").write_bytes(b"1234")
    os.mkfifo(folder / "pipe")  # listed by name, never opened
    first = _in_thread(lambda: cache.hash_path(folder))
    stamp = os.stat(folder / "sub" / "a.bin")
    (folder / "sub" / "a.bin").write_bytes(b"5678")
    os.utime(folder / "sub" / "a.bin", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert cache.hash_path(folder) != first  # same size and mtime: contents tell them apart
    monkeypatch.setattr(cache, "CONTENT_HASH_LIMIT", 2)  # now the folder is "large"
    by_stat = cache.hash_path(folder)
    (folder / "sub" / "a.bin").write_bytes(b"9999")
    os.utime(folder / "sub" / "a.bin", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert cache.hash_path(folder) == by_stat  # documented trade-off: above the limit, size + mtime
    os.utime(folder / "sub" / "a.bin", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    assert cache.hash_path(folder) != by_stat


def test_a_symlink_loop_in_a_folder_param_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_FOLDER_ENTRIES", 500)
    (tmp_path / "loop").mkdir()
    for i in range(20):
        (tmp_path / "loop" / f"{i}.png").write_bytes(b"x")
    (tmp_path / "loop" / "again").symlink_to(tmp_path / "loop")  # ~40 levels deep before ELOOP: 800+ names
    with pytest.raises(PathProblem, match="holds more than 500 files and folders"):
        _in_thread(lambda: cache.hash_path(tmp_path / "loop"))


# --- dataset.npz: headers checked before allocating ---------------------------------------------------
def _npz_with_declared_shape(path: Path, shape: tuple[int, ...]) -> None:
    """An .npz whose x header declares `shape` (float32) over a few bytes of data: a zip bomb's promise."""
    from io import BytesIO

    header = BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    labels = BytesIO()
    np.lib.format.write_array(labels, np.zeros(4, dtype=np.int64))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(64))
        archive.writestr("y.npy", labels.getvalue())


def test_npz_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    bomb = tmp_path / "bomb.npz"
    _npz_with_declared_shape(bomb, (1 << 38, 4))  # 4 TiB declared in a file of a few hundred bytes
    assert bomb.stat().st_size < 4096
    graph = Graph()
    graph.add_node("dataset.npz", "d", {"path": str(bomb)})
    result = Executor(real_registry(), cache_dir=tmp_path / "c").run(graph, tmp_path / "r")
    assert result.states["d"] == "failed"
    message = result.errors["d"]
    assert "bomb.npz" in message and "would take 4096.00 GiB in memory" in message
    assert "pickle" not in message


def test_npz_promising_far_more_than_its_size_is_refused_as_a_bomb(tmp_path):
    """Below read_npz's memory cap, but 320 MiB declared in a file of a few hundred bytes."""
    bomb = tmp_path / "bomb.npz"
    _npz_with_declared_shape(bomb, (20 << 20, 4))
    graph = Graph()
    graph.add_node("dataset.npz", "d", {"path": str(bomb)})
    result = Executor(real_registry(), cache_dir=tmp_path / "c").run(graph, tmp_path / "r")
    assert result.states["d"] == "failed"
    assert result.errors["d"].startswith(f"{bomb}: its arrays would take 0.31 GiB in memory, ")
    assert "refused as a possible zip bomb" in result.errors["d"] and "pickle" not in result.errors["d"]


def test_compressed_zeros_are_capped_by_read_npz(tmp_path):
    from heiti.engine.files import NpzError, read_npz

    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((16, 1024, 1024), dtype=np.uint8))  # 16 MiB of zeros in ~16 KB
    assert path.stat().st_size < 100_000
    with pytest.raises(NpzError) as caught:
        read_npz(path, max_bytes=1 << 20)
    assert str(caught.value) == f"{path}: its arrays would take 16.0 MiB in memory, above the limit of 1.0 MiB"
    assert read_npz(path, max_bytes=32 << 20)["x"].shape == (16, 1024, 1024)


def test_a_file_that_is_not_an_npz_is_named_so(tmp_path):
    fake = tmp_path / "arrays.npz"
    fake.write_text("x,y\n1,2\n")
    graph = Graph()
    graph.add_node("dataset.npz", "d", {"path": str(fake)})
    result = Executor(real_registry(), cache_dir=tmp_path / "c").run(graph, tmp_path / "r")
    message = result.errors["d"]
    assert result.states["d"] == "failed" and "not an .npz" in message and "arrays.npz" in message
    assert "pickle" not in message


# --- the editor writes paths relative under the graph's folder ---------------------------------------------
def test_relative_if_under():
    base = Path("/work/project")
    assert relative_if_under("/work/project/data/x.npz", base) == "data/x.npz"
    assert relative_if_under("/elsewhere/x.npz", base) == "/elsewhere/x.npz"
    assert relative_if_under("data/x.npz", base) == "data/x.npz"
    assert relative_if_under("../project/data/x.npz", base) == "data/x.npz"


def test_saving_elsewhere_keeps_naming_the_same_files(tmp_path):
    registry = real_registry()
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    _arrays(project / "data" / "a.npz")
    graph = load_graph(_graph_file(project, [_npz_node("data/a.npz"), _npz_node(str(project / "data" / "a.npz"), "abs")]))
    assert rebase_graph_paths(graph, registry, tmp_path) is True  # save as one folder up
    assert [s.params["path"] for s in graph.nodes] == ["project/data/a.npz", "project/data/a.npz"]
    assert graph.base_dir == tmp_path.resolve() and graph.copy_deep().base_dir == tmp_path.resolve()
    graph.save(tmp_path / "up.json")
    assert validate(load_graph(tmp_path / "up.json"), registry).ok
    other = tmp_path / "other"
    rebase_graph_paths(graph, registry, other)
    assert [s.params["path"] for s in graph.nodes] == [str(project / "data" / "a.npz")] * 2


def test_a_new_run_folder_is_named_after_the_graph_and_numbered_when_taken(tmp_path):
    from heiti.engine.paths import run_folder

    first = run_folder("My graph: v2!", tmp_path)
    assert first.parent == tmp_path and first.name.startswith("My-graph-v2-")
    first.mkdir()
    second = run_folder("My graph: v2!", tmp_path)
    if second.name.startswith(first.name):  # the same second: numbered, the time kept
        assert second.name == f"{first.name}-2"
    assert run_folder("???", tmp_path, unnamed="sweep").name.startswith("sweep-")
