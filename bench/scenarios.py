"""The measurements, each run against one server. Every function returns plain numbers and the CPU use
of the server, the load generator and the subscriber during the run (to tell who was saturated)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from .loadgen import ChallengeWrk, SubscriberProc, Wrk
from .procstat import CpuMeter, pids_of, wait_rss_stable
from .servers import Server

SATURATED = 90.0  # percent of one core


@dataclass
class Ctx:
    server: Server
    server_cpus: str | None
    client_cpus: str | None
    seconds: float
    log: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        line = f"[{self.server.name}] {text}"
        self.log.append(line)
        print(line, file=sys.stderr, flush=True)


#: Other processes using more than this (percent of one core) during a run make its figures suspect.
BUSY_MACHINE = 20.0


def client_total(cpu: dict[str, float]) -> float:
    """CPU of the client-side processes together: they share one core."""
    return sum(pct for name, pct in cpu.items() if name not in ("server", "others"))


def saturated_side(cpu: dict[str, float]) -> str:
    """Which core ran out: "server", "client" (the figures then measure the load generator), "both",
    or "none"."""
    server = cpu.get("server", 0.0) >= SATURATED
    client = client_total(cpu) >= SATURATED
    return {(True, True): "both", (True, False): "server", (False, True): "client"}.get(
        (server, client), "none"
    )


def cpu_summary(cpu: dict[str, float]) -> str:
    """``server N% / clients M%`` for the report table, with the saturated side named."""
    side = saturated_side(cpu)
    return f"{cpu.get('server', 0.0):.0f} / {client_total(cpu):.0f}" + (
        "" if side == "none" else f" ({side} saturated)"
    )


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [
        f"{name} {pct:.0f}%{' SATURATED' if pct >= SATURATED and name != 'others' else ''}"
        for name, pct in cpu.items()
    ]
    clients = [name for name in cpu if name not in ("server", "others")]
    if len(clients) > 1:  # they share one core: together they can saturate it
        total = client_total(cpu)
        parts.append(f"client core {total:.0f}%{' SATURATED' if total >= SATURATED else ''}")
    if cpu.get("others", 0.0) > BUSY_MACHINE:
        parts.append("(machine busy with other processes: figures unreliable)")
    return "CPU " + ", ".join(parts)


def _publish_run(
    ctx: Ctx, sub: SubscriberProc, path: str, rate: float | None
) -> tuple[Any, dict[str, Any], dict]:
    sub.command("reset")
    wrk = Wrk(ctx.server.url, path, rate, ctx.seconds, ctx.client_cpus)
    meter = CpuMeter({"server": ctx.server.pids, "wrk": lambda: [wrk.pid], "subscriber": lambda: [sub.pid]})
    wrk.wait()
    cpu = meter.stop()
    res = wrk.result()
    return res, cpu, sub.drain(res.accepted * sub.connections)


def sustained(ctx: Ctx, steps: list[float], refine: int = 0) -> dict[str, Any]:
    """Offered-rate steps to one subscriber; the best rate with every 2xx-answered event delivered.

    A server that loses or refuses events below its CPU limit (nchan's shared memory) would otherwise be
    credited with the last step below that point, up to a whole step too low: after the first step with a
    loss or a refusal, ``refine`` more runs bisect between it and the last clean step.
    """
    path = "/hook/cli_sustained"
    sub = SubscriberProc(ctx.server.ws_url, "/sub/cli_sustained", cpus=ctx.client_cpus)
    best = 0.0
    runs: list[dict[str, Any]] = []

    def run(rate: float) -> tuple[bool, bool]:
        """One step: (clean: nothing lost or refused, go_on: worth trying a higher rate)."""
        nonlocal best
        res, cpu, stats = _publish_run(ctx, sub, path, rate)
        lost = max(0, res.accepted - stats["unique"])
        achieved = res.accepted / res.seconds
        ctx.note(
            f"sustained offered {rate:.0f}/s: sent {res.rate:.0f}/s, 2xx {res.accepted}, "
            f"non-2xx {res.errors['status']}, received {stats['unique']}, lost {lost}, "
            f"dup {stats['duplicates']}, late from the previous step {stats.get('stale', 0)}, "
            f"HTTP p50/p99 {res.http_p50_ms:.2f}/{res.http_p99_ms:.2f} ms; "
            f"{cpu_text(cpu)}"
        )
        runs.append({"offered": rate, "achieved": achieved, "lost": lost, "cpu": cpu, **res.errors})
        clean = lost == 0 and res.errors["status"] == 0
        if clean:
            best = max(best, achieved)
        # Stop when the server no longer keeps up with the offered rate, or when the client side is
        # saturated (the figure would then measure the client).
        go_on = res.rate >= 0.8 * rate and max(cpu["wrk"], cpu["subscriber"]) < SATURATED
        return clean, go_on

    try:
        sub.wait_probed(ctx.server.url, path, 1)
        last_clean = 0.0
        for rate in steps:
            clean, go_on = run(rate)
            if not clean:
                low, high = last_clean, rate
                for _ in range(refine):
                    mid = round((low + high) / 2 / 250) * 250  # 250 ev/s resolution at most
                    if not low < mid < high:
                        break
                    if run(mid)[0]:
                        low = mid
                    else:
                        high = mid
                break
            last_clean = rate
            if not go_on:
                break
    finally:
        sub.close()
    return {"sustained_rate": best, "sustained_runs": runs}


def latency(ctx: Ctx, rates: list[float]) -> dict[str, Any]:
    """Webhook sent -> WebSocket message received, p50/p99 at fixed offered rates."""
    path = "/hook/cli_latency"
    sub = SubscriberProc(ctx.server.ws_url, "/sub/cli_latency", cpus=ctx.client_cpus)
    out: dict[str, Any] = {}
    try:
        sub.wait_probed(ctx.server.url, path, 1)
        for rate in rates:
            res, cpu, stats = _publish_run(ctx, sub, path, rate)
            pct = sub.command("latency")
            lost = max(0, res.accepted - stats["unique"])
            ctx.note(
                f"latency @{rate:.0f}/s: sent {res.rate:.0f}/s, p50 {pct['p50']:.2f} ms, "
                f"p99 {pct['p99']:.2f} ms, max {pct['max']:.2f} ms, lost {lost}, "
                f"non-2xx {res.errors['status']}, HTTP p50 {res.http_p50_ms:.2f} ms; {cpu_text(cpu)}"
            )
            out[f"lat_p50_{rate:.0f}"] = pct["p50"]
            out[f"lat_p99_{rate:.0f}"] = pct["p99"]
            out[f"lat_lost_{rate:.0f}"] = lost
    finally:
        sub.close()
    return out


def challenge(ctx: Ctx, concurrencies: list[int]) -> dict[str, Any]:
    """Caller -> relay -> subscriber -> answer -> relay -> caller, with K closed-loop callers.

    Callers: wrk with bench/challenge.lua (C; each answer checked against the challenges it issued).
    Answers: the original protocol, ``POST /sub/<request_id>`` from bench/subscriber.py's keep-alive
    pool, for both servers (keys ``chal_*``); then, for our relay only, protocol 2: a ``reply`` frame on
    the subscriber's WebSocket (keys ``chal2_*``; nchan has no equivalent)."""
    modes = [("chal", False)] + ([("chal2", True)] if ctx.server.name == "wslarkbot" else [])
    out: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    for prefix, over_ws in modes:
        out.update(_challenge_mode(ctx, concurrencies, prefix, over_ws, runs))
    out["chal_failed"] = sum(v for key, v in out.items() if "_bad_" in key)
    out["chal_runs"] = runs
    return out


def _challenge_mode(
    ctx: Ctx, concurrencies: list[int], prefix: str, over_ws: bool, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    path = "/hook/cli_challenge"
    proto = "protocol 2" if over_ws else "POST /sub"
    sub = SubscriberProc(
        ctx.server.ws_url,
        "/sub/cli_challenge",
        reply_url=None if over_ws else ctx.server.url,
        reply_ws=over_ws,
        uvloop=True,  # the replier's CPU per challenge is about a quarter lower than on asyncio's loop
        cpus=ctx.client_cpus,
    )
    out: dict[str, Any] = {}
    try:
        sub.wait_probed(ctx.server.url, path, 1)
        for k in concurrencies:
            sub.command("reset")
            tag = f"{prefix}-{k}-{time.time_ns() % 10**12}"
            wrk = ChallengeWrk(ctx.server.url, path, k, ctx.seconds, ctx.client_cpus, tag)
            meter = CpuMeter(
                {"server": ctx.server.pids, "wrk": pids_of(wrk.pid), "replier": pids_of(sub.pid)}
            )
            try:
                wrk.wait(ctx.seconds + 60)
            except TimeoutError:
                wrk.proc.kill()
                raise
            cpu = meter.stop()
            res = wrk.result()
            replies = _replier_settled(sub)
            errors = {e: res[e] for e in ("connect", "read", "write", "timeout") if res[e]}
            # Bad: wrong or non-200 answers, plus requests wrk gave up on. `outstanding` (issued, not
            # answered well when wrk stopped) is at most K more than those: the calls in flight.
            bad = res["bad"] + sum(errors.values())
            lost = max(0, res["outstanding"] - k - bad)
            extra = f", wrk errors {errors}" if errors else ""
            if lost:
                extra += f", {lost} calls never answered"
            if replies.get("reply_failed") or replies.get("reply_ws_errors"):
                extra += (
                    f", replier: {replies.get('reply_failed')} POSTs failed "
                    f"{replies.get('reply_statuses')}, {replies.get('reply_ws_errors')} error frames"
                )
            side = saturated_side(cpu)
            ctx.note(
                f"challenge x{k} ({proto}): {res['ok']} ok, {bad} bad, {res['rate']:.0f}/s, "
                f"p50 {res['p50']:.2f} ms, p90 {res['p90']:.2f} ms, p99 {res['p99']:.2f} ms, "
                f"p99.9 {res['p99.9']:.2f} ms, max {res['max']:.2f} ms{extra}; {cpu_text(cpu)}; "
                f"saturated: {side}"
            )
            for note in res["notes"]:
                ctx.note(f"  {note}")
            out[f"{prefix}_p50_{k}"] = res["p50"]
            out[f"{prefix}_p99_{k}"] = res["p99"]
            out[f"{prefix}_rate_{k}"] = res["rate"]
            out[f"{prefix}_bad_{k}"] = bad + lost
            out[f"{prefix}_cpu_{k}"] = cpu_summary(cpu)
            runs.append(
                {
                    "protocol": 2 if over_ws else 1,
                    "callers": k,
                    "cpu": cpu,
                    "saturated": side,
                    "replier": replies,
                    **{key: v for key, v in res.items() if key != "notes"},
                }
            )
    finally:
        sub.close()
    return out


def _replier_settled(sub: SubscriberProc, timeout: float = 2.0) -> dict[str, Any]:
    """The replier's counters once every challenge it got was answered (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = sub.stats()
        done = stats.get("replied", 0) + stats.get("reply_failed", 0)
        if done >= stats.get("challenges", 0) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)  # polling the subscriber's counters


def idle_rss(ctx: Ctx, connections: int) -> dict[str, Any]:
    """Server RSS growth per idle WebSocket (each on its own channel, as one bot per app)."""
    before = wait_rss_stable(ctx.server.pids)
    sub = SubscriberProc(
        ctx.server.ws_url, "/sub/cli_idle_", count=connections, distinct=True, cpus=ctx.client_cpus
    )
    try:
        after = wait_rss_stable(ctx.server.pids)
    finally:
        sub.close()
    per = (after - before) / connections
    ctx.note(f"idle RSS: {before} KiB -> {after} KiB with {connections} WebSockets: {per:.1f} KiB each")
    return {"rss_per_ws_kib": per, "rss_connections": connections}


def fanout(ctx: Ctx, rate: float, subscribers: int = 10) -> dict[str, Any]:
    """``subscribers`` WebSockets on one channel; each should get every event."""
    path = "/hook/cli_fanout"
    sub = SubscriberProc(ctx.server.ws_url, "/sub/cli_fanout", count=subscribers, cpus=ctx.client_cpus)
    try:
        sub.wait_probed(ctx.server.url, path, subscribers)
        res, cpu, stats = _publish_run(ctx, sub, path, rate)
    finally:
        sub.close()
    per_conn = stats["per_conn"] or [stats["received"] / subscribers] * subscribers
    lost = max(0, res.accepted * subscribers - stats["received"])
    slowest = min(per_conn) / res.seconds
    ctx.note(
        f"fan-out x{subscribers} @{rate:.0f}/s: sent {res.rate:.0f}/s, "
        f"per-subscriber {min(per_conn)}..{max(per_conn)} messages, lost {lost}; {cpu_text(cpu)}"
    )
    return {"fanout_min_rate": slowest, "fanout_lost": lost, "fanout_offered": rate}
