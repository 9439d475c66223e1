"""The workloads a scenario can inject into: CoE batches, CoE serving, TP generations, all-reduces.

Each drives :class:`~sn40l_emu.inject.runner.ScenarioRunner` the same way:
at every request boundary ``runner.boundary()`` fires what is due; a fault
stops a step with a typed error; the runner recovers and the stopped
requests run again (up to ``MAX_ATTEMPTS``) or fail with their reason.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sn40l_emu.errors import FAULT_ERRORS
from sn40l_emu.inject.driver import MAX_ATTEMPTS
from sn40l_emu.inject.driver import FaultDriver as ScenarioRunner
from sn40l_emu.trace import TraceEvent

if TYPE_CHECKING:
    from sn40l_emu.coe.coordinator import CoECoordinator, RequestResult
    from sn40l_emu.coe.workload import Request


def _dead_reason(r: ScenarioRunner) -> str:
    s = min(r.manual_dead)
    return f"socket {s} is dead or unreachable: killed and not restarted"


# ---- CoE batches --------------------------------------------------------------
def _coordinator(r: ScenarioRunner) -> CoECoordinator:
    from sn40l_emu.coe.cache import CachePolicy
    from sn40l_emu.coe.coordinator import CoECoordinator, CoESetup
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.workload import load_model

    w = r.sc.workload
    coord = CoECoordinator(r.node, CoESetup(load_model(w.model), w.experts, w.batch, w.prompt_len, w.tokens,
                                            CachePolicy(w.policy)), book=LayerPrograms(ProgramBook()),
                           reuse=CostReuse(r.node, exact=r.fast))
    # one cost reuse for whole steps and decoder layers: off while an armed event lies ahead
    r.add_reuse_switch(lambda on: setattr(coord.reuse, "enabled", on))
    coord.load()
    r.arm()
    return coord


def run_batch_with_retries(r: ScenarioRunner, coord: CoECoordinator, batch: Sequence[Request]
                           ) -> tuple[list[RequestResult], list[int], int, Any]:
    """One batch to its end: (completed results, failed ids, attempts, the last BatchResult or None)."""
    from sn40l_emu.coe.coordinator import BatchInterrupted

    remaining = list(batch)
    done: list[RequestResult] = []
    failed: list[int] = []
    attempt = 0
    last = None
    while remaining:
        attempt += 1
        r.boundary()
        if r.needs_recovery:
            r.recover(coord.reload_after_failure)
            r.needs_recovery = False
        if r.manual_dead:
            failed = [q.id for q in remaining]
            r.count_failed(failed, _dead_reason(r), attempt)
            break
        try:
            last = coord.run_batch(remaining)
        except BatchInterrupted as exc:
            done += exc.done
            r.report.trace += exc.events
            r.count_completed([d.request for d in exc.done], attempt, [d.end_ns for d in exc.done])
            remaining = remaining[len(exc.done):]
            t_fail = max([getattr(exc.cause, "at_ns", 0) or 0, *r.node.clocks()])
            retry, recover = r.struck(exc.cause)
            if recover:
                r.recover(functools.partial(_reload_at, coord, t_fail))
            elif retry:
                coord.resume_after_fault()
            if not retry or attempt >= MAX_ATTEMPTS:
                failed = [q.id for q in remaining]
                r.count_failed(failed, str(exc.cause), attempt)
                break
            r.count_retry(len(remaining))
            continue
        done += last.requests
        r.report.trace += last.events
        r.count_completed([d.request for d in last.requests], attempt, [d.end_ns for d in last.requests])
        break
    return done, failed, attempt, last


def _reload_at(coord: CoECoordinator, t_fail_ns: int, back: list[int]) -> int:
    return coord.reload_after_failure(back, t_fail_ns)


def _swap(fn: Callable[[list[int], int], int]) -> Callable[[int, list[int]], int]:
    return lambda t, back: fn(back, t)


def run_coe(r: ScenarioRunner) -> None:
    from sn40l_emu.coe.workload import batches, parse_workload

    w = r.sc.workload
    coord = _coordinator(r)
    work = batches(parse_workload(w.workload), w.experts, w.batch, w.batches, w.prompt_len, w.tokens, w.seed)
    r.report.submitted = sum(len(b) for b in work)
    for k, batch in enumerate(work):
        done, failed, attempts, res = run_batch_with_retries(r, coord, batch)
        row: dict[str, Any] = {"batch": k, "attempts": attempts,
                               "status": "completed" if not failed else ("failed" if not done else "partial"),
                               "requests": [d.request for d in done]}
        if failed:
            row["failed_requests"] = failed
            row["error"] = next(o.reason for o in reversed(r.report.outcomes) if o.status == "failed")
        if res is not None and not failed:
            row.update({"total_ns": res.total_ns, "router_ns": res.router_ns, "switch_ns": res.switch_ns,
                        "program_load_ns": res.program_load_ns, "argument_load_ns": res.argument_load_ns,
                        "host_ns": res.host_ns,
                        "expert_ns": res.expert_ns, "hbm_hits": res.hits, "hbm_misses": res.misses})
            r.after_latency(res.total_ns)
        r.report.rows.append(row)


# ---- CoE serving ------------------------------------------------------------
def run_serve(r: ScenarioRunner) -> None:
    from sn40l_emu.coe.serving import BatchTiming, percentile_nearest_rank, simulate_serving
    from sn40l_emu.coe.workload import parse_workload, poisson_arrivals, requests

    w = r.sc.workload
    coord = _coordinator(r)
    t_ready = r.now()  # arrivals start once the composition is loaded
    arrivals = [t_ready + a for a in poisson_arrivals(w.rate_per_s, w.requests, w.seed)]
    reqs = requests(parse_workload(w.workload), w.experts, w.requests, w.prompt_len, w.tokens, w.seed, arrivals)
    r.report.submitted = len(reqs)
    failed_ids: set[int] = set()
    free = [t_ready]

    def serve(batch: list[Request]) -> BatchTiming:
        start = max(free[0], batch[0].arrival_ns)  # the queue's clock (see coe/serving.py)
        r.advance_all(start)
        t0 = r.now()
        done, failed, attempts, _ = run_batch_with_retries(r, coord, batch)
        failed_ids.update(failed)
        t1 = max(r.now(), t0 + 1)
        ends = {d.request: d.end_ns for d in done}
        r.report.rows.append({"batch": len(r.report.rows), "attempts": attempts, "start_ns": t0,
                              "total_ns": t1 - t0, "requests": sorted(ends), "failed_requests": failed})
        if not failed:
            r.after_latency(t1 - t0)
        free[0] = t1
        return BatchTiming(t1 - t0, tuple(min(ends.get(q.id, t1), t1) - t0 for q in batch))

    result = simulate_serving(reqs, w.batch, serve)
    recs = [x for x in result.records if x.request_id not in failed_ids]

    def stats(sel: list[Any]) -> dict[str, Any]:
        lat = [x.latency_ns for x in sel]
        return {"n": len(lat), "p50_ns": percentile_nearest_rank(lat, 50) if lat else None,
                "p99_ns": percentile_nearest_rank(lat, 99) if lat else None}

    for rep in r.report.events:
        if rep.applied_at_ns is None:
            continue
        t = rep.applied_at_ns
        t_back = (rep.struck_at_ns or t) + rep.recovery_ns
        rep.windows = {
            "before": stats([x for x in recs if x.completion_ns < t]),
            "during": stats([x for x in recs if x.completion_ns >= t and x.arrival_ns < max(t, t_back)]),
            "after": stats([x for x in recs if x.arrival_ns >= max(t, t_back)]),
        }
    r.report.serving = {"rate_per_s": w.rate_per_s, "throughput_per_s": result.throughput_per_s,
                        **{k: v for k, v in stats(recs).items() if k != "n"},
                        "completed": len(recs), "failed": len(failed_ids)}


# ---- TP generations -------------------------------------------------------------
def run_tp(r: ScenarioRunner) -> None:
    from sn40l_emu.coe.coordinator import default_mode
    from sn40l_emu.engine.layer_reuse import LayerPrograms
    from sn40l_emu.engine.program_book import ProgramBook
    from sn40l_emu.engine.reuse import CostReuse
    from sn40l_emu.program import CopyOp, Program, Tier
    from sn40l_emu.units import ceil_div
    from sn40l_emu.workload import Step, load_model, make_plan

    w = r.sc.workload
    n = r.node.n_sockets
    model = load_model(w.model)
    plan = make_plan(model, n, tuple(range(n)))
    mode = default_mode(r.node.profile.platform)
    node = r.node
    reuse, book = CostReuse(node, exact=r.fast), LayerPrograms(ProgramBook())
    r.add_reuse_switch(lambda on: setattr(reuse, "enabled", on))
    shard_bytes = ceil_div(model.weight_bytes, n)

    def reload(back: list[int], t_fail: int = 0) -> int:
        """A socket that comes back loads its weight shard from the host over its host link."""
        t = max([t_fail, *node.clocks()])
        node.advance_clocks(dict.fromkeys(range(n), t))
        if back:
            node.run_programs({s: Program.of("reload TP shard", [CopyOp("reload weights", Tier.HOST, Tier.HBM,
                                                                        shard_bytes)]) for s in back})
        t_back = max(node.clocks())
        node.advance_clocks(dict.fromkeys(range(n), t_back))
        return t_back - t

    r.arm()
    r.report.submitted = w.generations
    for g in range(w.generations):
        attempt = 0
        while True:
            attempt += 1
            r.boundary()
            if r.needs_recovery:
                r.recover(reload)
                r.needs_recovery = False
            if r.manual_dead:
                r.count_failed([g], _dead_reason(r), attempt)
                r.report.rows.append({"generation": g, "attempts": attempt, "status": "failed",
                                      "error": _dead_reason(r)})
                break
            try:
                t0 = max(node.clocks())
                res = reuse.run(book.group(model, plan, Step.prefill(w.batch, w.prompt_len), mode))
                events = [e for x in res.values() for e in x.events]
                for i in range(1, w.tokens):
                    reuse.run(book.group(model, plan, Step.decode(w.batch, w.prompt_len + i - 1), mode))
            except FAULT_ERRORS as exc:
                t_fail = max([getattr(exc, "at_ns", 0) or 0, *node.clocks()])
                retry, recover = r.struck(exc)
                if recover:
                    r.recover(functools.partial(_swap(reload), t_fail))
                elif retry:
                    reload([], t_fail)
                if not retry or attempt >= MAX_ATTEMPTS:
                    r.count_failed([g], str(exc), attempt)
                    r.report.rows.append({"generation": g, "attempts": attempt, "status": "failed",
                                          "error": str(exc)})
                    break
                r.count_retry(1)
                continue
            t1 = max(node.clocks())
            r.report.trace += events
            r.report.trace.append(TraceEvent(t0, t1 - t0, -1, "tp", f"generation {g}", {"attempt": attempt}))
            r.count_completed([g], attempt, [t1])
            r.report.rows.append({"generation": g, "attempts": attempt, "status": "completed",
                                  "time_ns": t1 - t0, "tokens_per_s": w.batch * w.tokens * 1e9 / (t1 - t0)})
            r.after_latency(t1 - t0)
            break


# ---- all-reduces ----------------------------------------------------------------
def run_allreduce(r: ScenarioRunner) -> None:
    from sn40l_emu.program import Algo, CollectiveKind, CollectiveOp, Program

    w = r.sc.workload
    group = tuple(range(w.sockets))
    op = CollectiveOp("allreduce", CollectiveKind.ALL_REDUCE, group, (w.size_bytes // 4,), "float32",
                      algo=Algo(w.algo), chunks=w.chunks)
    r.report.submitted = w.repeats
    r.arm()
    for k in range(w.repeats):
        attempt = 0
        while True:
            attempt += 1
            r.boundary()
            if r.needs_recovery:
                r.recover(lambda back: 0)  # nothing to reload: an all-reduce keeps no state
                r.needs_recovery = False
            if r.manual_dead:
                _fail_repeat(r, k, attempt, _dead_reason(r))
                break
            now = max(r.node.clocks())
            r.node.advance_clocks(dict.fromkeys(group, now))
            try:
                res = r.node.run_programs({s: Program.of(f"allreduce {k}", [op]) for s in group})
            except FAULT_ERRORS as exc:
                retry, recover = r.struck(exc)
                if recover:
                    r.recover(lambda back: 0)
                if not retry or attempt >= MAX_ATTEMPTS:
                    _fail_repeat(r, k, attempt, str(exc))
                    break
                r.count_retry(1)
                continue
            t = max(x.end_ns for x in res.values()) - now
            r.count_completed([k], attempt, [now + t])
            r.report.rows.append({"repeat": k, "attempts": attempt, "status": "completed", "time_ns": t,
                                  "busbw_gbps": w.size_bytes / t * 2 * (len(group) - 1) / len(group)})
            r.report.trace += [e for x in res.values() for e in x.events]
            r.after_latency(t)
            break


def _fail_repeat(r: ScenarioRunner, k: int, attempts: int, reason: str) -> None:
    r.count_failed([k], reason, attempts)
    r.report.rows.append({"repeat": k, "attempts": attempts, "status": "failed", "error": reason})

