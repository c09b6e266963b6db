"""The model requests of a `heiti serve` link: UPLOAD_MODEL (chunks into the model store, checked by
SHA-256) and LOAD (options checked, native code only for a trusted client, a TVM archive linked
here). A mix-in of server_link.Link, kept apart because it is the half that touches files and
frameworks.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from heiti.nodes.devices.model_store import ModelStore, StoreError, extract_flat
from heiti.nodes.devices.protocol import Channel, ErrorCode, Message, MsgType, error_fields
from heiti.nodes.devices.server_limits import NATIVE_RUNTIMES
from heiti.nodes.devices.server_limits import say as _say

_STORE_CODES = {"bad_request": ErrorCode.BAD_REQUEST, "mismatch": ErrorCode.UPLOAD_MISMATCH,
                "unsafe": ErrorCode.UNSAFE_ARCHIVE, "too_large": ErrorCode.TOO_LARGE, "no_model": ErrorCode.NO_MODEL}


class ModelRequests:
    """UPLOAD_MODEL and LOAD; the link supplies channel, server, session and the reply helpers."""

    # set by server_link.Link, as are _reply, _error, _busy, _send_stats and _close_session
    server: Any  # server.DeviceServer (not imported: it imports this module)
    channel: Channel
    session: Any
    steps: tuple[Any, Any, Any, Any]
    authenticated: bool
    name: str
    _stats_sent: int

    def _upload(self, msg: Message) -> None:
        f, store = msg.fields, self.server.store
        sha = f.get("sha256")
        try:
            size, name, packing = f.get("size"), f.get("name"), f.get("packing", "file")
            if msg.data is None:
                complete, offset = store.begin(sha, size, name, packing)
                self._reply(msg, MsgType.OK, {"complete": complete, "offset": offset})
                return
            if name is None:
                raise StoreError("bad_request", "an upload chunk needs the model's name")
            complete, _ = store.begin(sha, size, name, packing)
            if complete:
                self._reply(msg, MsgType.OK, {"complete": True, "offset": size})
                return
            offset = store.append(sha, size, f.get("offset"), msg.data)
            if offset == size:
                self._busy(lambda: store.finish(sha, name, packing, size))
                _say(f"{self.name}: model {sha[:12]}… stored ({size} bytes)", kind="stored")
                self._reply(msg, MsgType.OK, {"complete": True, "offset": offset})
            else:
                self._reply(msg, MsgType.OK, {"complete": False, "offset": offset})
        except StoreError as err:
            fields = error_fields(_STORE_CODES.get(err.kind, ErrorCode.BAD_REQUEST), str(err))
            if isinstance(sha, str) and len(sha) == 64:
                try:
                    fields["offset"] = store.offset(sha)
                except StoreError:
                    pass
            self.channel.send(MsgType.ERROR, fields, seq=msg.seq, reply=True, timeout=self.server.write_timeout)

    def _load(self, msg: Message) -> None:
        from heiti.nodes.devices.load_options import validate_options, with_model_meta
        from heiti.nodes.runtimes.backends import BackendUnavailable, available_runtimes, open_session

        self._close_session()
        f = msg.fields
        runtime = f.get("runtime")
        if not isinstance(runtime, str):
            self._error(msg.seq, ErrorCode.BAD_REQUEST, f"runtime must be a name, got {runtime!r}")
            return
        if runtime not in available_runtimes():
            self._error(msg.seq, ErrorCode.RUNTIME_UNAVAILABLE,
                        f"runtime {runtime!r} is not installed on this device (it has: {', '.join(available_runtimes()) or 'none'})")
            return
        if runtime in NATIVE_RUNTIMES and not (self.authenticated or self.server.allow_native):
            self._error(msg.seq, ErrorCode.NATIVE_REFUSED,
                        f"{runtime} models are native code: this device loads them only for a client that "
                        "presented its token (start it with --token) or when started with --allow-native")
            _say(f"{self.name}: refused to load native code for a client without a token", kind="native refused")
            return
        try:
            options = validate_options(runtime, f.get("options"))
        except ValueError as err:
            self._error(msg.seq, ErrorCode.BAD_REQUEST, str(err))
            return
        try:
            path = self.server.store.entry_path(ModelStore.check_sha(f.get("sha256")), f.get("entry"))
        except StoreError as err:
            self._error(msg.seq, _STORE_CODES.get(err.kind, ErrorCode.BAD_REQUEST), str(err))
            return
        try:
            options = with_model_meta(runtime, path, options)
        except ValueError as err:
            self._error(msg.seq, ErrorCode.BAD_REQUEST, str(err))
            return
        started = time.perf_counter()
        try:
            session = self._busy(lambda: open_session(runtime, str(_link_tvm_archive(path) if runtime == "tvm" else path), options))
        except Exception as err:  # noqa: BLE001 - reported to the client
            code = ErrorCode.RUNTIME_UNAVAILABLE if isinstance(err, BackendUnavailable) else ErrorCode.LOAD_FAILED
            self._error(msg.seq, code, f"{runtime} could not load {path.name}: {type(err).__name__}: {err}")
            return
        self.session = session
        self.steps = _session_steps(self.session)
        load_ms = (time.perf_counter() - started) * 1e3
        _say(f"{self.name}: loaded {path.name} on {runtime} in {load_ms:.0f} ms")
        self._reply(msg, MsgType.OK, {"inputs": _jsonable(self.session.inputs), "outputs": _jsonable(self.session.outputs),
                                      "load_ms": load_ms, "time": time.monotonic()})
        # every session gets at least one device sample, however short its measurement is
        self.server.sampler.ready.wait(2 * self.server.sampler.period)
        self._stats_sent = -1
        self._send_stats()


def _session_steps(session: Any) -> tuple[Any, Any, Any, Any]:
    """(prepare, stage, run, finish) as the host's measurement loop splits them; run-only otherwise."""
    try:
        from heiti.nodes.runtimes.backends import session_steps
    except ImportError:
        return (lambda inputs: inputs), None, session.run, None
    return session_steps(session)


def _link_tvm_archive(path: Path) -> Path:
    """A TVM module cross-compiled as a .tar of object files is linked here, on the device it was
    built for, with this device's C compiler (once: the .so is kept beside the archive)."""
    if path.suffix != ".tar":
        return path
    linked = path.with_name(path.stem + ".linked.so")
    if linked.exists():
        return linked
    objects = path.with_name(path.stem + ".objects")
    shutil.rmtree(objects, ignore_errors=True)
    partial = linked.with_suffix(".partial.so")
    try:
        try:
            files = extract_flat(path, objects, max_bytes=path.stat().st_size)
        except StoreError as err:
            raise ValueError(f"the TVM archive is refused: {err}") from None
        from tvm.support import cc

        cc.create_shared(str(partial), sorted(str(f) for f in files))
        os.replace(partial, linked)
    finally:
        shutil.rmtree(objects, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return linked


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))

