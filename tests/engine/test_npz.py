"""read_npz: the one safe way to open an .npz (datasets by handle, and by path params)."""

import zipfile

import numpy as np
import pytest
from heiti.engine.files import NpzError, npz_headers, read_npz


def test_reads_every_array_as_numpy_does(tmp_path):
    path = tmp_path / "a.npz"
    arrays = {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "y": np.array([3, 1], dtype=np.int64),
              "names": np.array(["cat", "dog"]), "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
              "empty": np.zeros((0, 5), dtype=np.uint8), "scalar": np.array(7, dtype=np.int16)}
    np.savez_compressed(path, **arrays)
    got = read_npz(path)
    assert set(got) == set(arrays)
    for name, want in arrays.items():
        assert got[name].dtype == want.dtype and got[name].shape == want.shape
        assert np.array_equal(got[name], want)
    assert got["f"].flags.f_contiguous
    assert list(read_npz(path, ["y"])) == ["y"]
    assert npz_headers(path)["x"] == ((2, 3, 4), np.dtype(np.float32))


def test_size_cap_is_checked_before_reading(tmp_path):
    path = tmp_path / "big.npz"
    np.savez(path, x=np.zeros((10, 10), dtype=np.float64))  # 800 bytes once read
    assert read_npz(path, max_bytes=800)["x"].shape == (10, 10)
    with pytest.raises(NpzError, match=r"big\.npz: its arrays would take 800 bytes in memory, above the limit of 799 bytes"):
        read_npz(path, max_bytes=799)


def test_a_header_promising_terabytes_is_refused_without_allocating(tmp_path):
    """A forged header (a 'zip bomb' of shape) must fail on the cap, not on a MemoryError."""
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    member = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode("latin1") + b"\x00" * 64
    path = tmp_path / "forged.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member)
    with pytest.raises(NpzError, match=r"forged\.npz: its arrays would take 7450\.58 GiB"):
        read_npz(path)


def test_truncated_member_is_an_error(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, x=np.arange(100, dtype=np.int64))
    with zipfile.ZipFile(path) as archive:
        data = archive.read("x.npy")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", data[:-8])
    with pytest.raises(NpzError, match=r"short\.npz: array 'x' is truncated"):
        read_npz(path)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(NpzError) as err:
        read_npz(path)
    assert "objects.npz" in str(err.value) and "Python objects" in str(err.value)
    assert "allow_pickle" not in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_not_an_npz_names_the_file(tmp_path, content):
    path = tmp_path / "data.npz"
    path.write_bytes(content)
    with pytest.raises(NpzError, match=r"data\.npz is not an \.npz file") as err:
        read_npz(path)
    assert "allow_pickle" not in str(err.value)


def test_missing_file_and_missing_key(tmp_path):
    with pytest.raises(NpzError, match="no such file"):
        read_npz(tmp_path / "nope.npz")
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    with pytest.raises(NpzError, match=r"no array 'y' \(arrays: x\)"):
        read_npz(tmp_path / "a.npz", ["y"])
