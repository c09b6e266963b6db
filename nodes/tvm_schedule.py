"""Apache TVM 0.27 on a CPU: a schedule for every fused TIR function without measuring, and tuning.

TVM's relax pipeline (`tvm.compile` with the default cpu pipeline) legalizes operators to TIR and
applies no schedule: every fused function runs as naive single-threaded loops. This module gives
each function a schedule taken from MetaSchedule's own design space (the llvm rules: AutoInline,
MultiLevelTiling "SSRSRS", ParallelizeVectorizeUnroll, RandomComputeLocation, and their
postprocessors) with the sampling decisions chosen by a heuristic instead of by measurement:

- the innermost spatial axis (output channels in NHWC) is vectorised, and with the next spatial
  axes (pixels) forms a register tile of <= 8 vector accumulators (AVX2), near-full with the
  fewest loads per FMA;
- outer spatial tiles are parallel (enough chunks for every core), the output-channel tiles first
  where there are more channels than pixels; reductions are split at <= 64;
- a depthwise conv's zero padding is inlined (read in place, no padded copy);
- convolutions run in NHWC/HWIO (ConvertLayout), so the vectorised axis is the contiguous channel.

Tuning (heiti.nodes.tvm_tuning, re-exported here) starts from these schedules: they seed the
evolutionary search and are the floor of a tuned model.

Docs: docs/tvm.md. Heavy imports stay inside functions (importing tvm takes seconds).
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Any

SCHEDULE_VERSION = 3  # bump when the heuristic changes (cache keys of compiled models include it)


def light_tensor_intrin(target: Any = None) -> None:
    """Make `import tvm.s_tir.tensor_intrin` cheap.

    MetaSchedule's TuneContext and builders import that package, which registers the CUDA, ROCm,
    Hexagon and ARM tensor intrinsics too: 60-120 s on a busy 2-core machine (CUDA alone ~45 s).
    A CPU build needs at most the intrinsics of its own architecture, so the package is registered
    as an empty namespace and only x86 (or arm) is loaded. Submodules still import on demand.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        import tvm.s_tir

        package = types.ModuleType(name)
        package.__path__ = [os.path.join(os.path.dirname(tvm.s_tir.__file__), "tensor_intrin")]
        sys.modules[name] = package
    triple = str(target.attrs.get("mtriple", "")) if target is not None and hasattr(target, "attrs") else ""
    arch = "arm_cpu" if triple.startswith(("aarch64", "arm")) else "riscv_cpu" if triple.startswith("riscv") else "x86"
    importlib.import_module(f"{name}.{arch}")  # once per process; the rules of this target need them


# the Relax passes before scheduling live in tvm_pipeline (one module per concern); re-exported here
from heiti.nodes.tvm_pipeline import fold_constants_numpy, prepare  # noqa: E402, F401


# --- the heuristic ---------------------------------------------------------------------------------
def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _best_divisor(n: int, limit: int, multiple_of: int = 1) -> int:
    fits = [d for d in _divisors(n) if d <= max(1, limit)]
    good = [d for d in fits if d % multiple_of == 0]
    return max(good or fits)


@dataclass
class TileHeuristic:
    """Decisions for MetaSchedule's llvm design space, chosen from the loop extents alone."""

    lanes: int = 8  # float32 lanes of one SIMD register (AVX2: 8, AVX-512: 16, NEON: 4)
    cores: int = 2
    unroll: int = 16  # explicit unroll steps (0, 16, 64, 512): 16 compiles 3x faster than 512, same speed here
    accumulators: int = 8  # vector accumulators of the output tile (AVX2: 8 of 16 registers; 14 measured slower)
    max_vector_tile: int = 64  # lanes of the vectorised inner tile (ParallelizeVectorizeUnroll's limit)
    reduction_inner: int = 64
    # loads per FMA count a weight vector as this many input broadcasts. 1.25 is the smallest
    # weighting that flips 7x7 maps to 1 vector x 7 pixels (MobileNetV2's 1x1 expand convs on 7x7
    # 20-35% faster, weights pre-packed, 1 thread); every other tile of MobileNetV2 and of the
    # ResNet-style CNN stays as it was (2.0 would also flip 24 channels x 56x56 to 1 x 8: unmeasured)
    weight_load_cost: float = 1.25
    # a conv's zero padding read in place (a bounds test per pixel and tap, amortised over the
    # vectorised channels) instead of a padded copy of the whole input written by a pass of its own
    # first and read back (4.9 MB on MobileNetV2's first depthwise conv): depthwise convs 1.2-2x faster
    inline_padding: bool = True
    channels_outer: bool = True  # weights-heavy blocks: output-channel tiles outermost (see tile_block)
    write_cache: str = "global"  # MultiLevelTiling's write cache scope ("local": accumulate in registers)
    compute_location: int = 0  # producers not inlined (padding): 0 = under the outer (parallel) loop, -1 = root

    def register_tile(self, extents: list[int]) -> dict[int, int]:
        """{position in `extents`: inner tile} for the moving spatial axes, the last one vectorised.

        A tile of vectors x pixels within the accumulator budget with enough independent FMA
        chains to hide the FMA latency (2 pipes x 4 cycles on Zen 3: 8), and among those near
        the most the extents allow (>= 3/4) the fewest loads per FMA. The vector tile grows to
        several vectors where the pixel axes cannot: on a 7x7 map the former "<= 2 vectors, then
        pixels" rule left a 2-vector x 1-pixel tile (2 chains, latency bound: 13 GFLOP/s on
        MobileNetV2's last 1x1 convs); now 8 vectors x 1 pixel. A budget of 14 accumulators
        measured slower on most of MobileNetV2's tasks: the tile accumulates in the output buffer,
        and LLVM keeps only small tiles in registers.
        """
        vec = len(extents) - 1
        n_vec = extents[vec]
        if n_vec % self.lanes:
            return {vec: _best_divisor(n_vec, 2 * self.lanes, self.lanes)}
        candidates: list[tuple[int, int, int, int]] = []  # (accumulators, vectors, pixels w, pixels h)
        w_ext = extents[vec - 1] if vec >= 1 else 1
        h_ext = extents[vec - 2] if vec >= 2 else 1
        for v in _divisors(n_vec // self.lanes):
            if v * self.lanes > self.max_vector_tile:
                break
            for tw in _divisors(w_ext):
                for th in _divisors(h_ext) if tw == w_ext else [1]:
                    if v * self.lanes == n_vec and tw * th > 1:
                        # a tile over all channels and several pixels: the postprocessor fuses them
                        # into one vector loop, whose lanes then index different pixels (gathers)
                        continue
                    if v * tw * th <= self.accumulators:
                        candidates.append((v * tw * th, v, tw, th))
        most = max(c[0] for c in candidates)
        # near-full tiles, then the fewest loads per FMA: a conv loads P input broadcasts and V
        # weight vectors for V x P FMAs, (V + P) / (V P); 8 vectors x 1 pixel streams the weights
        # once per pixel (ResNet-style 3x3 convs 1.7x slower than 2 x 4), ties: more pixels
        # A weight vector costs a little more than an input broadcast (`weight_load_cost`): on a
        # 7x7 map that picks 1 vector x 7 pixels (every weight vector serves the whole row, from
        # L1) over 8 vectors x 1 pixel (a 64-channel weight panel re-read from L2 for every pixel)
        w_cost = self.weight_load_cost
        best = min((c for c in candidates if 4 * c[0] >= 3 * most),
                   key=lambda c: ((w_cost * c[1] + c[2] * c[3]) / c[0], -c[2] * c[3], -c[0]))
        _, v, tw, th = best
        tile = {vec: v * self.lanes}
        if vec >= 1:
            tile[vec - 1] = tw
        if vec >= 2:
            tile[vec - 2] = th
        return tile

    def tile_block(self, group: list[tuple[Any, int, int]]) -> dict[Any, list[int]]:
        """group: (instruction, n, extent) for the SamplePerfectTile calls of one block."""
        out: dict[Any, list[int]] = {}
        spatial = [(inst, n, extent) for inst, n, extent in group if n >= 3]
        reduction = [(inst, extent) for inst, n, extent in group if n < 3]
        moving = [k for k, (_, _, extent) in enumerate(spatial) if extent > 1]
        inner: dict[int, int] = {}
        if moving:
            tile = self.register_tile([spatial[k][2] for k in moving])
            inner = {moving[i]: t for i, t in tile.items()}
        wanted = self.cores * 4  # parallel chunks: a few per core evens out the load
        chunks = 1
        order = list(range(len(spatial)))
        if self.channels_outer and moving:
            # weights-heavy (deep layers: more output channels than pixels): the channel tiles become
            # the outer (parallel) loop and every pixel runs inside, so one tile's weights are read
            # once and stay in L2; pixels outermost re-streamed all weights (MobileNetV2's 1x1
            # 320->1280 on 7x7: 1.6 MB per pixel) for every pixel
            vec = moving[-1]
            if spatial[vec][2] > math.prod(spatial[k][2] for k in moving[:-1]):
                order = [vec] + [k for k in order if k != vec]
        tiles: dict[int, list[int]] = {}
        for k in order:
            inst, n, extent = spatial[k]
            t_inner = inner.get(k, 1)
            rest = extent // t_inner
            if chunks < wanted and rest > 1:
                t0 = rest if chunks * rest <= wanted * 8 else _best_divisor(rest, -(-wanted // chunks) * 4)
                chunks *= t0
            else:
                t0 = 1
            tiles[k] = [t0, rest // t0] + [1] * (n - 3) + [t_inner]
        for k, (inst, _, _) in enumerate(spatial):
            out[inst] = tiles[k]
        for inst, extent in reduction:
            t1 = _best_divisor(extent, self.reduction_inner)
            out[inst] = [extent // t1, t1]
        return out

    def decisions(self, trace: Any) -> dict[Any, Any]:
        """{instruction: decision} for one design-space trace."""
        dec: dict[Any, Any] = {}
        groups: list[list[tuple[Any, int, int]]] = []
        group: list[tuple[Any, int, int]] = []
        block_names: dict[Any, str] = {}
        # padding is inlined into depthwise/grouped convs only: a full conv broadcasts one input
        # value per FMA row, so the bounds test is paid per scalar (ResNet-style 3x3 convs 5% slower)
        grouped = any(inst.kind.name == "GetSBlock" and str(inst.attrs[0]).startswith(GROUPED_CONV_BLOCKS)
                      for inst in trace.insts)
        for inst in trace.insts:
            kind = inst.kind.name
            if kind == "SamplePerfectTile":
                n = int(inst.attrs[0])
                extent = math.prod(int(v) for v in trace.decisions[inst])
                if group and group[-1][1] < 3 <= n:  # a new block's spatial tiles after a reduction
                    groups.append(group)
                    group = []
                group.append((inst, n, extent))
            elif group and kind != "Split":
                groups.append(group)
                group = []
            if kind == "GetSBlock":
                block_names[inst.outputs[0]] = str(inst.attrs[0])
            if kind == "SampleComputeLocation":  # a random location can recompute a producer per tile
                padding = block_names.get(inst.inputs[0]) in PADDING_BLOCKS
                dec[inst] = INLINE if padding and grouped and self.inline_padding else self.compute_location
            if kind == "SampleCategorical":
                candidates = [int(c) for c in inst.attrs[0]]
                if self.unroll in candidates and len(candidates) == 4:
                    dec[inst] = candidates.index(self.unroll)
        if group:
            groups.append(group)
        for g in groups:
            dec.update(self.tile_block(g))
        return dec


def heuristic_for(target: Any) -> TileHeuristic:
    """Lanes from the target's CPU features (llvm_get_vector_width says 512 for AVX2-only znver3)."""
    import tvm

    lanes = 4  # SSE / NEON
    try:
        has = tvm.target.codegen.llvm_cpu_has_features
        lanes = 16 if has(["avx512f"], target) else 8 if has(["avx2"], target) or has(["avx"], target) else 4
    except Exception:  # noqa: BLE001, S110 - not an llvm target: keep 4
        pass
    cores = int(target.attrs.get("num-cores", 0) or 0) if hasattr(target, "attrs") else 0
    # 16 vector registers (SSE, AVX2) or 32 (AVX-512): half of them accumulate
    return TileHeuristic(lanes=lanes, cores=max(1, cores or os.cpu_count() or 1), accumulators=16 if lanes == 16 else 8)


def with_cores(target: Any, default: int = 4) -> Any:
    """MetaSchedule's rules need "num-cores"; cross targets (a board) rarely say it: assume 4."""
    import tvm

    if int(target.attrs.get("num-cores", 0) or 0) > 0:
        return target
    return tvm.target.Target({**dict(target.export()), "num-cores": default})


PADDING_BLOCKS = ("pad_temp", "PadInput", "data_pad")  # TOPI's names for a conv's zero padding
GROUPED_CONV_BLOCKS = ("group_conv2d", "depth_conv2d")  # TOPI's depthwise / grouped conv blocks
INLINE = -2  # SampleComputeLocation's decision for "compute_inline" (-1: the root, >= 0: a loop)


def space_generator(write_cache: str = "global") -> Any:
    """MetaSchedule's llvm design space; write_cache "local": the tile accumulates in a local buffer
    (registers) and is written back, epilogue applied, once per tile."""
    from tvm.s_tir import meta_schedule as ms

    if write_cache == "global":
        return "post-order-apply"
    rules = []
    for rule in ms.ScheduleRule.create("llvm"):
        if type(rule).__name__ == "MultiLevelTiling":
            rule = ms.schedule_rule.MultiLevelTiling(
                structure="SSRSRS", max_innermost_factor=64,
                reuse_write=ms.schedule_rule.ReuseType(req="must", levels=[2], scope=write_cache))
        rules.append(rule)
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="from-target", mutator_probs="from-target")


def schedule_task(task_mod: Any, target: Any, heuristic: TileHeuristic) -> Any | None:
    """One scheduled s_tir.Schedule for a task module, or None when no design space applies."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    light_tensor_intrin(target)
    from heiti.nodes import tvm_int8_avx2  # int16 -> int32 reductions (integer kernels): vpmaddwd on AVX2

    if tvm_int8_avx2.has_avx2(target) and (sch := tvm_int8_avx2.schedule_int16_task(task_mod)) is not None:
        return sch
    context = ms.TuneContext(mod=task_mod, target=target, space_generator=space_generator(heuristic.write_cache),
                             task_name="default", rand_state=1)
    try:
        spaces = context.generate_design_space()
    except Exception:  # noqa: BLE001 - a rule that cannot apply to this function (e.g. a fused pad): unscheduled
        return None
    postprocs = context.space_generator.postprocs
    # the last space fuses the epilogue deepest (RandomComputeLocation / reuse-write variants)
    for space in reversed(spaces):
        chosen = heuristic.decisions(space.trace)
        sch = tvm.s_tir.Schedule(task_mod)
        try:
            space.trace.apply_to_schedule(
                sch, remove_postproc=True,
                decision_provider=lambda inst, inputs, attrs, decision, chosen=chosen: chosen.get(inst, decision))
            # the marker lets a replay (tuning seeds, mutations) drop what the postprocs recorded
            # and redo them on the new loop nest; without it a mutated trace fails (docs/tvm.md)
            sch.enter_postproc()
            if all(p.apply(sch) for p in postprocs):
                return sch
        except Exception:  # noqa: BLE001, S112 - a space whose decisions do not fit: try the next one
            continue
    return None


@dataclass
class ScheduleStats:
    tasks: int = 0
    scheduled: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def default_schedule_database(mod: Any, target: Any, heuristic: TileHeuristic | None = None) -> tuple[Any, ScheduleStats]:
    """A MemoryDatabase holding one heuristic schedule per task of `mod` (from `prepare`)."""
    from tvm.s_tir import meta_schedule as ms

    t0 = time.perf_counter()
    target = with_cores(target)
    light_tensor_intrin(target)
    heuristic = heuristic or heuristic_for(target)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    database = ms.database.MemoryDatabase()
    stats = ScheduleStats(tasks=len(tasks))
    for task in tasks:
        task_mod = task.dispatched[0]
        sch = schedule_task(task_mod, target, heuristic)
        if sch is None:
            stats.failed.append(task.task_name)
            continue
        workload = database.commit_workload(task_mod)
        # a record without run_secs is "not measured" and MetaScheduleApplyDatabase skips it
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, [1.0], target, ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
        stats.scheduled += 1
    stats.seconds = time.perf_counter() - t0
    return database, stats


def apply_database(mod: Any, target: Any, database: Any, opt_level: int = 3) -> Any:
    """Each function replaced by its record's schedule; weight repacks the schedules placed at the
    top of their kernels (RewriteLayout, see tvm_prepack) evaluated into the constants."""
    import tvm
    from heiti.nodes import tvm_prepack
    from tvm import relax

    with target, tvm.transform.PassContext(opt_level=opt_level), database:
        mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    return tvm_prepack.fold(mod)[0]


# tuning lives in tvm_tuning; its names stay reachable here (compile.tvm, tests, bench use them)
TUNING_NAMES = frozenset(('RECORDS_FILE', 'TVM_LOGGER', 'TuneResult', '_mean_seconds', '_mean_seconds_record', '_weighted_ms', 'cost_model_name', 'default_tuning_dir', 'drop_unreplayable_records', 'foreign_log_handlers_detached', 'in_process_builder', 'target_key', 'tune', 'tuned_database'))


def __getattr__(name: str) -> Any:
    if name in TUNING_NAMES:
        from heiti.nodes import tvm_tuning

        return getattr(tvm_tuning, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
