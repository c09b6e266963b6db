"""Unchanged files are not read again: input digests remembered by identity, cache entries sealed."""

import os

import pytest
from heiti.engine import cache, digests
from heiti.engine.digests import DigestMemo
from heiti.engine.executor import Executor
from heiti.engine.files import file_sha256
from heiti.engine.graph import Graph


class CountingReads:
    def __init__(self, monkeypatch, module):
        self.paths = []
        real = module.file_sha256

        def counted(path):
            self.paths.append(os.fspath(path))
            return real(path)

        monkeypatch.setattr(module, "file_sha256", counted)


def rewrite_keeping_size_and_mtime(path, data):
    before = os.stat(path)
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_stable_file_is_read_once_and_its_digest_kept_across_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "STABLE_NS", 0)
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)
    reads = CountingReads(monkeypatch, digests)
    memo = DigestMemo(tmp_path / "memo.json")
    first = memo.sha256(data, os.stat(data))
    memo.save()
    again = DigestMemo(tmp_path / "memo.json").sha256(data, os.stat(data))  # a later run
    assert first == again == file_sha256(data)
    assert reads.paths == [str(data)]


def test_a_rewritten_file_is_read_again_even_with_its_size_and_mtime_restored(tmp_path, monkeypatch):
    monkeypatch.setattr(digests, "STABLE_NS", 0)
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)
    memo = DigestMemo(tmp_path / "memo.json")
    first = memo.sha256(data, os.stat(data))
    memo.save()
    rewrite_keeping_size_and_mtime(data, b"b" * 1000)  # ctime moves; user space cannot set it back
    assert DigestMemo(tmp_path / "memo.json").sha256(data, os.stat(data)) == file_sha256(data) != first


def test_a_file_changed_within_the_racy_window_is_not_remembered(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"a" * 1000)  # ctime: now, younger than STABLE_NS
    memo = DigestMemo(tmp_path / "memo.json")
    memo.sha256(data, os.stat(data))
    memo.save()
    assert not (tmp_path / "memo.json").exists()


def test_an_unreadable_memo_is_an_empty_one(tmp_path):
    (tmp_path / "memo.json").write_text("[not, json")
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    assert DigestMemo(tmp_path / "memo.json").sha256(data, os.stat(data)) == file_sha256(data)


def source_graph(value: float) -> Graph:
    g = Graph(name="one")
    g.add_node("test.source", "a", {"value": value})
    return g


def test_restoring_an_untouched_entry_reads_none_of_its_files(registry, tmp_path, monkeypatch):
    Executor(registry, cache_dir=tmp_path / "cache").run(source_graph(2), tmp_path / "x")
    reads = CountingReads(monkeypatch, cache)
    result = Executor(registry, cache_dir=tmp_path / "cache").run(source_graph(2), tmp_path / "y")
    assert result.states["a"] == "cached"
    assert reads.paths == []


def test_a_same_size_write_right_after_the_store_is_still_caught(tmp_path):
    """The write lands within microseconds of the store, where the coarse ctime clock may not
    have ticked: the entry must not be visible before it has."""
    store = cache.ArtifactCache(tmp_path / "cache")
    for round_ in range(20):
        work = tmp_path / f"w{round_}"
        work.mkdir()
        (work / "value.json").write_text("2")
        key = f"{round_:02d}" + "0" * 30
        store.store(key, "test.source", work, {}, {})
        rewrite_keeping_size_and_mtime(store.entry(key) / "files" / "value.json", b"7")
        with pytest.raises(cache.CorruptEntry, match="value.json changed"):
            store.verify(key)


def test_an_entry_without_seals_is_hashed_and_still_served(registry, tmp_path, monkeypatch):
    Executor(registry, cache_dir=tmp_path / "cache").run(source_graph(2), tmp_path / "x")
    seals = next((tmp_path / "cache").rglob("seals.json"))
    seals.chmod(0o644)
    seals.unlink()  # e.g. a cache folder written by an older Heiti
    reads = CountingReads(monkeypatch, cache)
    result = Executor(registry, cache_dir=tmp_path / "cache").run(source_graph(2), tmp_path / "y")
    assert result.states["a"] == "cached"
    assert [os.path.basename(p) for p in reads.paths] == ["value.json"]
