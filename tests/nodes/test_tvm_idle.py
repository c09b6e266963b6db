"""An idle TVM thread pool leaves the cores to whatever is timed next (heiti/nodes/__init__.py)."""

from __future__ import annotations

import os
import subprocess
import sys

#: a parallel TVM kernel run for 0.3 s, then the process's CPU seconds over half a second of idling
CODE = """
import os, time, numpy as np, psutil
{setup}
import tvm, tvm.s_tir
from tvm import te
n = 1 << 20
A = te.placeholder((n,), name="A", dtype="float32")
B = te.compute((n,), lambda i: A[i] * 2.0 + 1.0, name="B")
sch = tvm.s_tir.Schedule(te.create_prim_func([A, B]))
(i,) = sch.get_loops(sch.get_sblock("B"))
sch.parallel(i)
lib = tvm.compile(sch.mod, target="llvm")
dev = tvm.cpu(0)
a, b = tvm.runtime.tensor(np.ones(n, np.float32), dev), tvm.runtime.tensor(np.zeros(n, np.float32), dev)
t = time.perf_counter()
while time.perf_counter() - t < 0.3:
    lib(a, b)
p = psutil.Process(); c = sum(p.cpu_times()[:2]); time.sleep(0.5)
print(sum(p.cpu_times()[:2]) - c)
"""


def idle_cpu(setup: str) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TVM_THREAD_POOL_SPIN_COUNT"}
    env["TVM_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", CODE.format(setup=setup)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_an_idle_tvm_pool_in_a_heiti_process_stops_spinning_at_once():
    """As it comes, TVM's workers keep spinning ~0.5 s after the last call: 0.20 s of CPU in this
    test on the 2-core machine it was written on (setup ""). In a Heiti process the spin ends within
    ~10 ms; the bound is ten ticks of the CPU counters (0.01 s each)."""
    assert idle_cpu("import heiti.nodes") < 0.1
