"""An AVX2 integer kernel for TVM: int16 pairs -> int32 with vpmaddwd, and the schedule using it.

AVX2 has no VNNI and TVM 0.27's x86 tensor intrinsics need AVX-512/VNNI; MetaSchedule's generic
schedule turns an int16 x int16 -> int32 convolution into vpmulld (int32 multiplies), slower than
float FMAs. The intrinsics here do 16 multiply-adds per vpmaddwd; `schedule_int16_task` applies
them to the integer convolutions/matmuls heiti.nodes.tvm_int8 creates, and
heiti.nodes.tvm_schedule.schedule_task asks it first on AVX2 targets. Docs: docs/tvm.md ("int8").
"""

from __future__ import annotations

from typing import Any

INTRIN_AVX2 = "heiti_dot_2x8_i16i16i32_avx2"
INTRIN_AVX2_PACKED = "heiti_dot_8x2_i16i16i32_avx2"  # weights interleaved in pairs: no shuffle
_registered: set[str] = set()


def register_intrinsics() -> str:
    """Register the AVX2 tensor intrinsic (once per process): C[8] += A[2] . B[2, 8] in int32.

    vpmaddwd multiplies 16 int16 pairs and adds each pair into an int32: with A's two int16
    (two consecutive input channels) broadcast and B's two weight rows interleaved, one
    instruction does 16 multiply-adds for 8 output channels. AVX2 has no VNNI; this is the
    integer instruction that beats plain int32 multiplies (vpmulld) here.
    """
    if INTRIN_AVX2 in _registered:
        return INTRIN_AVX2
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int16", strides=[s0, 1], offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:2, 0:8])
            T.writes(C[0:8])
            for k, i in T.grid(2, 8):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vk, vi], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        s0 = T.int32()
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (2, 8), "int16", strides=[s0, 1], offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:2, 0:8])
            T.writes(C[0:8])
            # one expression: named vector temporaries become local buffers, which a parallel
            # loop allocates from the workspace pool on every iteration
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8),
                              dtype="int16x16"),
                T.Shuffle([B.vload([0, 0], "int16x8"), B.vload([1, 0], "int16x8")],
                          [0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15]),
                dtype="int32x8")

    @T.prim_func(s_tir=True)
    def desc_packed(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (8, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            for k, i in T.grid(2, 8):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl_packed(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (2,), "int16", offset_factor=1)
        B = T.match_buffer(b, (8, 2), "int16", offset_factor=1)
        C = T.match_buffer(c, (8,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8),
                              dtype="int16x16"),
                B.vload([0, 0], "int16x16"), dtype="int32x8")

    TensorIntrin.register(INTRIN_AVX2, desc, impl)
    TensorIntrin.register(INTRIN_AVX2_PACKED, desc_packed, impl_packed)
    _registered.add(INTRIN_AVX2)
    return INTRIN_AVX2


def has_avx2(target: Any) -> bool:
    import tvm

    try:
        return bool(tvm.target.codegen.llvm_cpu_has_features(["avx2"], target))
    except Exception:  # noqa: BLE001 - not an x86 llvm target
        return False


def _int16_reduction(sch: Any) -> Any | None:
    """The block accumulating int32 from int16 operands (conv2d NHWC / matmul), if the function has one."""
    import tvm

    found = None
    for block in _all_blocks(sch):
        stmt = sch.get(block)
        if len(stmt.writes) != 1 or _region_dtype(stmt.writes[0]) != "int32":
            continue
        reduce = [v for v in stmt.iter_vars if v.iter_type == tvm.tirx.IterVar.CommReduce]
        reads = {_region_dtype(r) for r in stmt.reads}
        if reduce and "int16" in reads:
            if found is not None:
                return None  # two reductions in one function: leave it to the generic schedule
            found = block
    return found


def _region_buffer(region: Any) -> Any:
    return getattr(region, "buffer", None) or getattr(region, "source", None)


def _region_dtype(region: Any) -> str:
    return str(getattr(_region_buffer(region), "dtype", ""))


def _all_blocks(sch: Any) -> list[Any]:
    root = sch.get_sblock("root")
    return list(sch.get_child_blocks(root))


def schedule_int16_task(task_mod: Any, lanes: int = 8, strict: bool = False) -> Any | None:
    """A schedule tensorizing the int16 x int16 -> int32 reduction with vpmaddwd, or None.

    First with the weights repacked per call into channel pairs ([.., I/2, O, 2], so a weight
    vector is one load), else reading them in place (two loads and a shuffle): the repack was as
    fast or faster on every conv measured (a 3x3 64->64 conv 177 us vs 248 us), weights included.
    """
    for packed in (True, False):
        sch = _schedule_int16(task_mod, lanes, packed, strict and not packed)
        if sch is not None:
            return sch
    return None


def _schedule_int16(task_mod: Any, lanes: int, packed: bool, strict: bool) -> Any | None:
    """schedule_int16_task with or without the weight repack.

    Loops (NHWC conv: n, h, w, oc, ry, rx, rc; matmul: i, j, k): the output channel splits into
    tiles of 8 lanes (x2 when it divides), the pixel before it into a register tile of <= 8
    accumulators, the innermost reduction into pairs; the reduction runs around the register tile
    so accumulators stay in registers; outer spatial loops are one parallel loop; the epilogue
    (requantisation) is fused into it per tile.
    """
    import tvm

    intrin = register_intrinsics()
    try:
        sch = tvm.s_tir.Schedule(task_mod)
        block = _int16_reduction(sch)
        if block is None:
            return None
        stmt = sch.get(block)
        kinds = [v.iter_type == tvm.tirx.IterVar.CommReduce for v in stmt.iter_vars]
        n_spatial = kinds.index(True) if True in kinds else len(kinds)
        if any(not k for k in kinds[n_spatial:]) or n_spatial < 2:
            return None
        loops = sch.get_loops(block)
        if len(loops) != len(kinds):
            return None
        extents = [int(sch.get(lp).extent) for lp in loops]
        oc, rc = extents[n_spatial - 1], extents[-1]
        if oc % lanes or rc % 2:
            return None
        # elementwise consumers: inline all into the last, which then runs per output tile
        blocks = _all_blocks(sch)
        index = [sch.get(b).same_as(stmt) for b in blocks].index(True)
        pads = {sch.get(b).name_hint for b in sch.get_producers(block)}
        for b in blocks[:index]:  # elementwise producers of the epilogue (a residual's dequantize)
            if sch.get(b).name_hint not in pads:
                sch.compute_inline(b)
        after = blocks[index + 1:]
        for b in after[:-1]:
            sch.compute_inline(b)
        epilogue = _all_blocks(sch)[-1] if after else None
        spatial = loops[:n_spatial]
        reduction = loops[n_spatial:]
        pix = extents[n_spatial - 2]
        cache = None
        if packed:
            reads = list(sch.get(block).reads)
            w_index = next(i for i, r in enumerate(reads) if _region_dtype(r) == "int16"
                           and [int(v) for v in _region_buffer(r).shape][-2:] == [rc, oc])
            cache = sch.cache_read(block, w_index, "global")
            sch.transform_layout(block, ("read", w_index),
                                 lambda *i: (*i[:-2], i[-2] // 2, i[-1], i[-2] % 2))
            c_loops = sch.get_loops(cache)
            if len(c_loops) > 1:
                sch.parallel(sch.fuse(*c_loops[:-1]))
            intrin = INTRIN_AVX2_PACKED

        def pixels(t_oc: int) -> int:
            return max(d for d in range(1, min(pix, 8 // t_oc) + 1) if pix % d == 0)

        # the largest register tile of <= 8 accumulators (pixels x vectors of 8 channels), two
        # vectors when it ties: 2 x 4 beat 1 x 8, 1 x 12, 2 x 6 and 4 x 4 on ResNet/MobileNetV2
        # convs; a 7-wide map takes 1 x 7 (2 x 1 left the loop shuffling weights for each pixel)
        t_oc = max((t for t in (2, 1) if oc % (t * lanes) == 0), key=lambda t: (t * pixels(t), t))
        t_px = pixels(t_oc)
        oc_o, oc_t, oc_i = sch.split(spatial[-1], [None, t_oc, lanes])
        px_o, px_i = sch.split(spatial[-2], [None, t_px])
        rc_o, rc_i = sch.split(reduction[-1], [None, 2])
        outer = [*spatial[:-2], px_o, oc_o]
        sch.reorder(*outer, *reduction[:-1], rc_o, px_i, oc_t, rc_i, oc_i)
        fused = sch.fuse(*outer)
        sch.parallel(fused)
        if epilogue is not None:
            sch.reverse_compute_at(epilogue, fused)
            e_loops = sch.get_loops(epilogue)[1:]
            if e_loops:
                inner = sch.fuse(*e_loops) if len(e_loops) > 1 else e_loops[0]
                extent = int(sch.get(inner).extent)
                if extent % lanes == 0:
                    _, vec = sch.split(inner, [None, lanes])
                    sch.vectorize(vec)
        for producer in sch.get_producers(block):  # the padding: parallel over rows, vectorised channels
            if cache is not None and sch.get(producer).name_hint == sch.get(cache).name_hint:
                continue
            if "if_then_else" not in str(sch.get(producer).body):  # a 1x1 conv's "padding" is a copy
                sch.compute_inline(producer)
                continue
            p_loops = sch.get_loops(producer)
            if len(p_loops) >= 2:
                sch.parallel(sch.fuse(*p_loops[:-1]))
                sch.vectorize(p_loops[-1])
        init = sch.decompose_reduction(block, reduction[0] if len(reduction) > 1 else rc_o)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(rc_i, intrin)
        sch.unroll(px_i)
        sch.unroll(oc_t)
        sch.enter_postproc()  # the marker tuning expects on seed traces (tvm_schedule.drop_unreplayable_records)
        return sch
    except Exception:  # noqa: BLE001 - any shape this schedule does not fit: the generic default applies
        if strict:
            raise
        return None
