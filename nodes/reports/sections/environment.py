"""Where the numbers come from: CPU, cores, OS and every framework version, per distinct machine."""

from __future__ import annotations

from typing import Any

from heiti.nodes.reports.blocks import Group, Section, Table, Text
from heiti.nodes.reports.collect import Entry, Report

#: nested dicts under these keys hold package versions: shown by package name alone
VERSION_KEYS = ("versions", "frameworks", "packages", "libraries")
#: what a device says about the link rather than itself
LINK_KEYS = {"protocol", "max_payload", "stats_period", "time", "server", "token"}
FIRST = ("target", "cpu", "cpu_model", "processor", "machine", "cores", "cpu_count", "cores_logical", "logical_cores",
         "cores_physical", "physical_cores", "memory", "memory_gb", "ram_gb", "os", "platform", "system", "release",
         "python")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{key} version" if prefix in VERSION_KEYS else key if not prefix else f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flatten(value, key if not prefix else name))
        elif isinstance(value, list | tuple):
            out[name] = ", ".join(str(v) for v in value)
        elif value is not None and value != "":
            out[name] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def environment_of(entry: Entry) -> dict[str, str]:
    target = entry.data.target
    device = {k: v for k, v in flatten(target.device).items() if k not in LINK_KEYS}
    if target.kind not in ("", "local") and device:
        env = device  # it ran on the device: the host's own set-up does not describe it
    else:
        env = {**device, **flatten(entry.data.environment)}
    env["target"] = f"{target.kind} {target.address}".strip()
    return env


def build(report: Report) -> Section | None:
    if not report.entries:
        return None
    machines: list[tuple[dict[str, str], list[str]]] = []  # (machine description, entry names)
    versions: dict[str, dict[str, list[str]]] = {}  # package -> version -> entry names
    for e in report.entries:
        env = environment_of(e)
        for key in [k for k in env if k.endswith(" version")]:
            versions.setdefault(key.removesuffix(" version"), {}).setdefault(env.pop(key), []).append(e.name)
        if len(env) <= 1:
            continue
        for known, names in machines:
            if known == env:
                names.append(e.name)
                break
        else:
            machines.append((env, [e.name]))
    if not machines and not versions:
        return Section("environment", "Environment", [Text("No environment recorded in the measurements.", "muted")])
    blocks: list = []
    if machines:
        keys: list[str] = []
        for env, _ in machines:
            keys += [k for k in env if k not in keys]
        keys.sort(key=lambda k: (k.startswith("host "), FIRST.index(k) if k in FIRST else len(FIRST), k))
        columns = ["", *(", ".join(names) if len(machines) > 1 else "value" for _, names in machines)]
        rows = [[key.replace("_", " ")] + [env.get(key, "—") for env, _ in machines] for key in keys]
        blocks.append(Table.build(columns, rows, numeric_from=len(columns)))
    if versions:
        everyone = len(report.entries)
        rows = []
        for package in sorted(versions, key=str.lower):
            for version, names in versions[package].items():
                used = "all runtimes" if len(names) == everyone else ", ".join(names)
                rows.append([package, version, used])
        blocks.append(Table.build(["package", "version", "recorded by"], rows, numeric_from=3,
                                  caption="Versions of the frameworks each runtime used."))
    intro = [Text("The runtimes ran on different machines or set-ups: one column each.", "muted")] \
        if len(machines) > 1 else []
    alone = Text("Each runtime measured alone: when nodes run in parallel (heiti run --jobs), nothing else "
                 "of the run runs while a runtime measures. Other programs on the machine may: the table "
                 "below says how busy they kept it.", "muted")
    if any(e.data.turns is not None for e in report.entries):
        alone = Text("Runtimes ready at the same time were timed in turns (heiti run --interleave): blocks of calls "
                     "alternating between them, each block alone on the machine, so that every runtime sampled "
                     "the same stretch of time and a machine whose speed drifts affected each alike. Other "
                     "programs on the machine may have run: the table below says how busy they kept it.", "muted")
    return Section("environment", "Environment", [*intro, Group("", blocks, layout="columns"), alone,
                                                  *machine_load_table(report)])


def machine_load_table(report: Report) -> list[Table]:
    """Per runtime: the cores other programs kept busy and the steal while it was timed."""
    from heiti.nodes.runtimes.contention import OTHER_CORES_LIMIT, STEAL_LIMIT, load_warnings

    rows = []
    for e in report.entries:
        load = e.data.machine_load
        if not load:
            continue
        verdict = "busy: compare with care" if load_warnings(load) else "quiet"
        rows.append([e.name, f"{load['other_cores']:.2f} of {load['cores']:g}", f"{load['steal_percent']:.1f} %",
                     f"{load['seconds']:.1f} s", verdict])
    if not rows:
        return []
    return [Table.build(["runtime", "cores others kept busy", "steal", "timed for", "machine"], rows, numeric_from=1,
                        caption=f"While each runtime was timed: CPU cores other programs kept busy on average (from "
                                f"the kernel's counters, all cores' busy time less the runtime's own) and CPU time the "
                                f"hypervisor gave to other guests. Loops shorter than 0.5 s get no figure. Past "
                                f"{OTHER_CORES_LIMIT} cores or {STEAL_LIMIT:g} % steal the runtime's figures "
                                f"carry a warning.")]
