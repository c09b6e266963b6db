"""Where runtimes run: this computer, or a device running `heiti serve` over TCP or a serial line.

A target node only describes the device (and checks that it answers); runtime nodes take the
TargetHandle on their optional `target` input and call `open_remote_session` for remote ones.
Remote targets are not cacheable: the device and its state live outside the graph.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.context import RunContext
from heiti.engine.files import file_sha256
from heiti.engine.node import Node, Out
from heiti.engine.payloads import ModelArtifact, TargetHandle
from heiti.nodes.devices.transport import parse_address
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # the client (numpy, the protocol) loads when a device is used, not when kinds are listed
    from heiti.nodes.devices.client import DeviceError, RemoteSession

__all__ = ["DeviceError", "LocalTarget", "SerialTarget", "TcpTarget", "open_remote_session", "pack_model"]


def __getattr__(name: str) -> Any:
    """`DeviceError` from the client module, imported on first use."""
    if name == "DeviceError":
        from heiti.nodes.devices.client import DeviceError

        return DeviceError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- nodes ------------------------------------------------------------------------------------------
class LocalTarget(Node):
    """Run in this process on this computer (the default when a runtime has no target)."""

    kind = "target.local"
    title = "This computer"
    category = "Targets"
    outputs = {"target": Out(TargetHandle, format="local")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return {"target": TargetHandle(kind="local")}


def _timeout_s() -> Any:
    return Field(10.0, gt=0, le=3600, description="longest silence allowed while waiting for the device")


def _retries() -> Any:
    return Field(2, ge=0, le=20, description="reconnect-and-retry attempts after a link failure")


def _probe(ctx: RunContext, handle: TargetHandle) -> TargetHandle:
    """Say HELLO once, so an unreachable device fails here with a clear message."""
    from heiti.nodes.devices.client import DeviceClient, DeviceError

    client = DeviceClient(handle)
    try:
        info = client.hello()
    except DeviceError as err:
        raise DeviceError(f"{err}. Is `heiti serve` running on the device?", err.code) from None
    finally:
        client.close()
    ctx.log(f"{client.name}: {info.get('hostname', '?')} ({info.get('system', '?')} {info.get('machine', '?')}), "
            f"runtimes: {', '.join(info.get('runtimes', [])) or 'none'}")
    handle.options["device"] = {k: info.get(k) for k in ("hostname", "system", "machine", "cpu_count", "mem_total_mb", "runtimes")}
    return handle


class TcpTarget(Node):
    """A device running `heiti serve --tcp HOST:PORT`, reached over the network."""

    kind = "target.tcp"
    title = "Device over TCP"
    category = "Targets"
    cacheable = False

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")

        address: str = Field("127.0.0.1:7070", description="HOST:PORT where `heiti serve --tcp` listens")
        token: str = Field("", description="shared token given to `heiti serve --token`; empty: $HEITI_TOKEN")
        timeout_s: float = _timeout_s()
        retries: int = _retries()

        @field_validator("address")
        @classmethod
        def _address(cls, value: str) -> str:
            host, port = parse_address(value)
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    outputs = {"target": Out(TargetHandle, format="tcp")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        p = self.params
        options: dict[str, Any] = {"timeout_s": p.timeout_s, "retries": p.retries}
        if p.token:
            options["token"] = p.token
        return {"target": _probe(ctx, TargetHandle(kind="tcp", address=p.address, options=options))}


class SerialTarget(Node):
    """A device running `heiti serve --serial PORT --baud N`, reached over a serial line (UART)."""

    kind = "target.serial"
    title = "Device over serial"
    category = "Targets"
    cacheable = False

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")

        port: str = Field("/dev/ttyUSB0", min_length=1, description="serial device on this computer")
        baud: int = Field(115200, ge=300, le=16_000_000, description="must match the device's --baud")
        timeout_s: float = _timeout_s()
        retries: int = _retries()

    outputs = {"target": Out(TargetHandle, format="serial")}

    def run(self, ctx: RunContext) -> dict[str, Any]:
        p = self.params
        options = {"baud": p.baud, "timeout_s": p.timeout_s, "retries": p.retries}
        return {"target": _probe(ctx, TargetHandle(kind="serial", address=p.port, options=options))}


# --- the client entry point ---------------------------------------------------------------------------
def open_remote_session(
    target: TargetHandle,
    runtime: str,
    model: ModelArtifact,
    options: dict[str, Any] | None = None,
    on_stats: Callable[[dict[str, Any]], None] | None = None,
) -> RemoteSession:
    """Connect, HELLO, upload the model (skipped when the device has its SHA-256), LOAD it.

    The returned session follows the Session contract (inputs, outputs, run, close) and adds
    `last_device_ms` and `device_info`. `on_stats` receives the device's STATS as dicts
    {t, cpu_percent, rss_mb, mem_percent, temp_c, freq_mhz} (sensors None where unreadable) with `t` on this host's time.perf_counter() clock.
    """
    from heiti.nodes.devices.client import DeviceClient, RemoteSession

    bundle = pack_model(Path(model.path), model.model_format)
    client = DeviceClient(target, on_stats)
    try:
        return RemoteSession(client, bundle, runtime, dict(options or {})).start()
    except BaseException:
        client.drop()
        bundle.cleanup()
        raise


# --- packing a model for upload -----------------------------------------------------------------------
@dataclass
class UploadBundle:
    """What goes over the wire: one file (the model itself, or a tar of its files)."""

    path: Path
    size: int
    sha256: str
    name: str
    packing: str  # "file" or "tar"
    entry: str  # the path to open on the device, relative to the unpacked upload
    tmpdir: Path | None = None

    def cleanup(self) -> None:
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


def _plain_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "._+-" else "_" for c in name).lstrip("._-+")
    return (cleaned or "model")[:120]


def _sidecars(path: Path, model_format: str) -> list[Path]:
    """Files a single-file model needs beside it: OpenVINO's .bin, ONNX external data."""
    if model_format == "openvino" or path.suffix == ".xml":
        weights = path.with_suffix(".bin")
        return [weights] if weights.exists() else []
    if path.suffix == ".onnx":
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - the runtime will report a broken file itself
            return []
        found: set[Path] = set()
        for tensor in proto.graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                for entry in tensor.external_data:
                    if entry.key == "location":
                        found.add((path.parent / entry.value).resolve())
        return sorted(found)
    return []


def pack_model(path: Path, model_format: str) -> UploadBundle:
    """A model file as is, or a folder / a file with side files packed as a deterministic tar
    (sorted, zero times and owners), so the same model always has the same SHA-256."""
    import tarfile

    from heiti.nodes.devices.client import DeviceError

    path = Path(path)
    if not path.exists():
        raise DeviceError(f"model {path} does not exist")
    if path.is_file():
        sidecars = _sidecars(path, model_format)
        if not sidecars:
            name = _plain_name(path.name)
            return UploadBundle(path, path.stat().st_size, file_sha256(path), name, "file", name)
        base = path.parent.resolve()
        members = [(path.name, path)]
        for extra in sidecars:
            try:
                members.append((extra.relative_to(base).as_posix(), extra))
            except ValueError:
                raise DeviceError(f"{path.name} refers to {extra}, outside its folder") from None
        entry = path.name
    else:
        members = [(f"{path.name}/{f.relative_to(path).as_posix()}", f) for f in path.rglob("*") if f.is_file()]
        entry = path.name
    tmpdir = Path(tempfile.mkdtemp(prefix="heiti-upload-"))
    archive = tmpdir / (_plain_name(path.stem) + ".tar")
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for arcname, source in sorted(members):
            info = tarfile.TarInfo(arcname)
            info.size = source.stat().st_size
            info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
            with open(source, "rb") as f:
                tar.addfile(info, f)
    return UploadBundle(archive, archive.stat().st_size, file_sha256(archive), archive.name, "tar", entry, tmpdir)
