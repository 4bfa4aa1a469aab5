"""Seed the tuning of one workload with the schedules tuned for its neighbours.

A sweep tunes `conv(c=32)`, `conv(c=33)`, ...: each count is a new MetaSchedule workload, but
the best schedules of count 32 are good starting points for 33. Here the best records of the
nearest tuned neighbours (same PrimFunc, one size different) are replayed on the new workload,
their tile sizes refitted to the new loop extents, and the candidates are built, MEASURED on the
new workload and committed with their own run times. The evolutionary search that follows picks
its initial population from the database's best records, so it starts from them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_INTEGER = re.compile(r"\d+")
FAILED_RUN_SECS = 1e10  # what MetaSchedule commits for a candidate that failed to build or run


@dataclass(frozen=True)
class Transfer:
    measured: int  # candidates replayed, built, run and committed (valid run time)
    failed: int  # replayed but failed to build or run (committed as failures, as MetaSchedule does)
    sources: tuple[int, ...]  # the changed size in each neighbour used, e.g. its channel count


def shape_signature(mod) -> tuple[str, tuple[int, ...]]:
    """The module's TVMScript with every integer masked, and those integers in order.

    Two workloads with the same masked text have the same structure (ops, blocks, loop nests)
    and differ only in their integers: shapes, extents, constants.
    """
    text = mod.script()
    return _INTEGER.sub("#", text), tuple(int(number) for number in _INTEGER.findall(text))


def changed_size(old: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, int] | None:
    """(old, new) when exactly one size changed (every differing integer goes from old to new,
    as output channels 64 -> 65 do in the weight, the output and the loop extents); else None."""
    pairs = {(a, b) for a, b in zip(old, new) if a != b}
    return next(iter(pairs)) if len(old) == len(new) and len(pairs) == 1 else None


def neighbour_records(database, mod, limit: int, sizes: set[int] | None = None) -> list[tuple[object, int]]:
    """The best records of the database's neighbours of `mod` (only those whose differing size is
    in `sizes`, if given): (record, neighbour's size), nearest neighbours first, and among equally
    near ones (64 and 66 for 65) alternating by rank."""
    signature, numbers = shape_signature(mod)
    found = []
    # one entry per workload: a Workload hashes and compares by identity within one database
    for workload in dict.fromkeys(record.workload for record in database.get_all_tuning_records()):
        other_signature, other_numbers = shape_signature(workload.mod)
        change = changed_size(other_numbers, numbers) if other_signature == signature else None
        if change and (sizes is None or change[0] in sizes):
            found.append((abs(change[1] - change[0]), change[0], workload))
    found.sort(key=lambda item: item[:2])
    ranked = []
    for distance, size, workload in found[:4]:  # farther ones are unlikely to be reached
        ranked += [(distance, rank, size, record)
                   for rank, record in enumerate(database.get_top_k(workload, limit))]
    ranked.sort(key=lambda item: item[:3])
    return [(record, size) for _distance, _rank, size, record in ranked]


def nearest_tiling(old: list[int], extent: int, max_innermost: int) -> list[int]:
    """`old` if its factors still multiply to `extent`, else the factorisation of `extent` into as
    many factors that is closest to `old` in log scale (so 4 stays near 4, 16 near 16), keeping
    the innermost factor within `max_innermost` as SamplePerfectTile does.

    (TVM itself, given a stale decision, keeps inner factors that divide and puts the whole rest
    into the first one that does not: 64's [2, 2, 4, 4] becomes [1, 1, 1, 65] for 65, an
    innermost loop of 65 that is rarely a good schedule.)"""
    if math.prod(old) == extent:
        return old
    limit = max_innermost if max_innermost > 0 else extent
    candidates = [t for t in _factorisations(extent, len(old)) if t[-1] <= limit]
    return list(min(candidates, key=lambda t: sum(abs(math.log(a / b)) for a, b in zip(t, old))))


def _factorisations(extent: int, n: int):
    if n == 1:
        yield (extent,)
        return
    for factor in (d for d in range(1, extent + 1) if extent % d == 0):
        for rest in _factorisations(extent // factor, n - 1):
            yield (factor, *rest)


def replay(trace, mod, postprocs):
    """The trace applied to `mod` with refitted tile sizes, then the tuning's postprocessors (as
    MetaSchedule does to database records before evolving them); None if it does not apply."""
    from tvm.s_tir import Schedule

    sch = Schedule(mod, debug_mask="none", error_render_level="none")

    def refit(instruction, inputs, attrs, decision):
        if instruction.kind.name != "SamplePerfectTile" or decision is None:
            return decision  # unroll, compute-at location, categorical choices: kept as they were
        extent = sch.get(inputs[0]).extent
        return nearest_tiling([int(f) for f in decision], int(extent), int(attrs[1]))

    try:
        trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=refit)
        sch.enter_postproc()
        return sch if all(postproc.apply(sch) for postproc in postprocs) else None
    except Exception:  # a schedule primitive that no longer applies to this shape: skip the candidate
        return None


def transfer_to(database, task, target, count: int, builder, runner, sizes: set[int] | None = None) -> Transfer:
    """Replay up to `count` neighbour records (of the neighbours of those `sizes`, if given) on
    `task`'s workload, measure them with `builder` and `runner`, and commit them to `database`
    with their measured run times."""
    from tvm.s_tir import meta_schedule as ms
    from tvm_ffi import structural_hash

    mod = task.dispatched[0]
    if count <= 0:
        return Transfer(0, 0, ())
    # the postprocessors tuning would use for this task and target
    context = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply", task_name=task.task_name)
    postprocs = context.space_generator.postprocs
    schedules, sources, seen = [], [], set()
    for record, size in neighbour_records(database, mod, count, sizes):
        sch = replay(record.trace, mod, postprocs)
        key = None if sch is None else structural_hash(sch.mod)
        if key is None or key in seen:  # two records can refit to the same schedule: measure it once
            continue
        seen.add(key)
        schedules.append(sch)
        sources.append(size)
        if len(schedules) == count:
            break
    if not schedules:
        return Transfer(0, 0, ())
    run_secs = measure(schedules, target, builder, runner)
    workload = database.commit_workload(mod)
    for sch, secs in zip(schedules, run_secs):
        database.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, workload, secs or [FAILED_RUN_SECS], target,
            ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)))
    measured = sum(secs is not None for secs in run_secs)
    return Transfer(measured, len(schedules) - measured, tuple(sorted(set(sources))))


def measure(schedules, target, builder, runner) -> list[list[float] | None]:
    """Run times (seconds) of each schedule, built and run as MetaSchedule's tuning does; None
    for one that failed to build or run."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for sch in schedules])
    runnable = [i for i, result in enumerate(built) if result.error_msg is None]
    device = "cpu" if target.kind.name in ("llvm", "c") else target.kind.name  # the runner wants a device name
    futures = runner.run([
        ms.runner.RunnerInput(built[i].artifact_path, device,
                              ms.arg_info.ArgInfo.from_entry_func(schedules[i].mod, remove_preproc=True))
        for i in runnable])
    run_secs: list[list[float] | None] = [None] * len(schedules)
    for i, future in zip(runnable, futures):
        result = future.result()
        if result.error_msg is None:
            run_secs[i] = [float(s) for s in result.run_secs]
        ms.utils.remove_build_dir(built[i].artifact_path)
    return run_secs
