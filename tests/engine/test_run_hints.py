"""The hint that a graph's last run left every node in the cache: kept, dropped, and obeyed."""

import json
import os
import subprocess
import sys
from pathlib import Path

from heiti.engine.run_hints import note_run, served_whole

ROOT = Path(__file__).resolve().parents[2]


def test_the_hint_holds_while_the_graph_and_its_files_are_as_they_were(tmp_path):
    graph, data = tmp_path / "g.json", tmp_path / "d.npz"
    graph.write_text('{"nodes": []}')
    data.write_bytes(b"x" * 10)
    cache = tmp_path / "cache"
    cache.mkdir()
    assert not served_whole(cache, graph)
    note_run(cache, graph, True, [str(data)])
    assert served_whole(cache, graph)
    os.utime(data, ns=(0, data.stat().st_mtime_ns + 10**9))  # the input changed
    assert not served_whole(cache, graph)
    note_run(cache, graph, True, [str(data)])
    graph.write_text('{"nodes": [], "name": "other"}')  # the graph changed
    assert not served_whole(cache, graph)
    graph.write_text('{"nodes": []}')
    assert served_whole(cache, graph)
    note_run(cache, graph, False, [])  # a run that left work undone drops it
    assert not served_whole(cache, graph)


def test_a_rerun_the_cache_serves_starts_no_fork_server(tmp_path):
    graph = tmp_path / "g.json"
    graph.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "hint", "edges": [], "nodes": [
        {"id": "digits", "kind": "dataset.digits", "params": {}}]}))
    code = ("import atexit, json, sys\nfrom multiprocessing import forkserver\n"
            "atexit.register(lambda: print('FORKSERVER', json.dumps(forkserver._forkserver._forkserver_pid is not None)))\n"
            "from heiti.engine.cli import main\n"
            f"sys.exit(main(['run', {str(graph)!r}, '--jobs', '2', '--cache', {str(tmp_path / 'cache')!r}, "
            "'--out', sys.argv[1]]))")

    def run(out):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / out)], capture_output=True, text=True,
                              cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("FORKSERVER "))
        return json.loads(line.split(" ", 1)[1])

    assert run("r1") is True  # nothing cached yet: the fork server started first thing
    assert run("r2") is False  # served whole: no worker machinery at all
    (tmp_path / "g.json").write_text(graph.read_text().replace('"hint"', '"hint2"'))
    assert run("r3") is True  # another graph file: the early start again
