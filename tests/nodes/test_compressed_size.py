"""The compressed model size in the measurements file: gzip level 6 of the model's files."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
from heiti.nodes.runtimes.modelfacts import model_facts, model_gzip_bytes


def test_a_file_of_one_block_is_gzipped_exactly_as_gzip_does(tmp_path):
    data = np.random.default_rng(0).standard_normal(50_000).astype(np.float32).tobytes()
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    assert model_gzip_bytes(path) == len(gzip.compress(data, compresslevel=6, mtime=0))


def test_a_big_file_is_one_valid_gzip_stream_compressed_on_all_cores_as_small_as_serial_gzip(tmp_path):
    """Blocks primed with deflate's whole 32 KiB window lose no match at a boundary; each boundary
    costs a sync flush (an empty stored block, 5 bytes) and a fresh block header with its Huffman
    tables (a few hundred bytes at most): 512 bytes per boundary bound the difference."""
    from heiti.nodes.runtimes.gzipsize import BLOCK

    rng = np.random.default_rng(2)
    weights = np.round(rng.standard_normal(int(3.5 * BLOCK) // 4), 2).astype(np.float32)  # compressible, like real weights
    data = weights.tobytes()
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    kept: list[bytes] = []
    size = model_gzip_bytes(path, keep=kept)
    assert size == len(kept[0]) and gzip.decompress(kept[0]) == data
    serial = len(gzip.compress(data, compresslevel=6, mtime=0))
    boundaries = -(-len(data) // BLOCK) - 1
    assert abs(size - serial) <= 512 * boundaries, (size, serial)


def test_shared_weights_compress_and_random_ones_do_not(tmp_path):
    """Clustering leaves few distinct values: gzip sees it; random fp32 weights barely shrink."""
    rng = np.random.default_rng(1)
    weights = rng.standard_normal(100_000).astype(np.float32)
    centroids = np.sort(rng.standard_normal(16)).astype(np.float32)
    clustered = centroids[np.abs(weights[:, None] - centroids[None, :]).argmin(axis=1)]
    (tmp_path / "dense.bin").write_bytes(weights.tobytes())
    (tmp_path / "clustered.bin").write_bytes(clustered.tobytes())
    dense, shared = model_gzip_bytes(tmp_path / "dense.bin"), model_gzip_bytes(tmp_path / "clustered.bin")
    assert dense > 0.85 * weights.nbytes  # fp32 mantissas are noise to gzip
    assert shared < 0.5 * dense  # 16 values: 4 bits of information per 32-bit weight, plus gzip's overhead


def test_several_files_are_one_tar(tmp_path):
    """An OpenVINO .xml + .bin (or a folder) counts as a tar of its files, the same wherever it lies."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "m.xml").write_text("<net/>" * 100)
        (tmp_path / folder / "m.bin").write_bytes(bytes(200_000))
    first = model_gzip_bytes(tmp_path / "a" / "m.xml")
    assert first == model_gzip_bytes(tmp_path / "b" / "m.xml")
    assert 0 < first < 2000  # 200 kB of zeros
    assert model_gzip_bytes(tmp_path / "a") == model_gzip_bytes(tmp_path / "b")
    assert model_gzip_bytes(tmp_path / "missing.onnx") is None

    kept: list[bytes] = []  # look inside the stream that was counted
    assert model_gzip_bytes(tmp_path / "a" / "m.xml", keep=kept) == len(kept[0]) == first
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(kept[0]))) as tar:
        assert sorted(tar.getnames()) == ["m.bin", "m.xml"]


def test_model_facts_keep_how_it_was_made_and_drop_bulk():
    facts = model_facts({"quantization": "int8", "tuned_trials": 64, "tune_time_s": 120.5, "class_names": ["a"] * 10,
                         "history": [{"loss": 1.0}], "pipeline": [{"node": "x"}], "plugin_blob": "x" * 5000})
    assert facts == {"quantization": "int8", "tuned_trials": 64, "tune_time_s": 120.5}
