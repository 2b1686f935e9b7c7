"""The measurements, each run against one server. Every function returns plain numbers and the CPU use
of the server, the load generator and the subscriber during the run (to tell who was saturated)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .loadgen import HERE, SubscriberProc, Wrk, wait_unreaped
from .procstat import CpuMeter, pids_of, wait_rss_stable
from .servers import Server, taskset

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


def cpu_text(cpu: dict[str, float]) -> str:
    parts = [
        f"{name} {pct:.0f}%{' SATURATED' if pct >= SATURATED and name != 'others' else ''}"
        for name, pct in cpu.items()
    ]
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


def sustained(ctx: Ctx, steps: list[float]) -> dict[str, Any]:
    """Offered-rate steps to one subscriber; the best rate with every 2xx-answered event delivered."""
    path = "/hook/cli_sustained"
    sub = SubscriberProc(ctx.server.ws_url, "/sub/cli_sustained", cpus=ctx.client_cpus)
    best = 0.0
    runs = []
    try:
        sub.wait_probed(ctx.server.url, path, 1)
        for rate in steps:
            res, cpu, stats = _publish_run(ctx, sub, path, rate)
            lost = max(0, res.accepted - stats["unique"])
            achieved = res.accepted / res.seconds
            ctx.note(
                f"sustained offered {rate:.0f}/s: sent {res.rate:.0f}/s, 2xx {res.accepted}, "
                f"non-2xx {res.errors['status']}, received {stats['unique']}, lost {lost}, "
                f"dup {stats['duplicates']}, HTTP p50/p99 {res.http_p50_ms:.2f}/{res.http_p99_ms:.2f} ms; "
                f"{cpu_text(cpu)}"
            )
            runs.append({"offered": rate, "achieved": achieved, "lost": lost, "cpu": cpu, **res.errors})
            if lost == 0 and res.errors["status"] == 0:
                best = max(best, achieved)
            # Stop at the first loss or refusal, when the server no longer keeps up with the offered
            # rate, or when the client side is saturated (the figure would then measure the client).
            if lost > 0 or res.errors["status"] > 0 or res.rate < 0.8 * rate:
                break
            if max(cpu["wrk"], cpu["subscriber"]) >= SATURATED:
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
    """Caller -> relay -> subscriber -> POST /sub/<request_id> -> relay -> caller."""
    path = "/hook/cli_challenge"
    sub = SubscriberProc(
        ctx.server.ws_url, "/sub/cli_challenge", reply_url=ctx.server.url, cpus=ctx.client_cpus
    )
    out: dict[str, Any] = {}
    try:
        sub.wait_probed(ctx.server.url, path, 1)
        for k in concurrencies:
            cmd = [
                sys.executable,
                "-m",
                "bench.challenge",
                "--url",
                ctx.server.url,
                "--path",
                path,
                "--concurrency",
                str(k),
                "--seconds",
                str(ctx.seconds),
            ]
            proc = subprocess.Popen(
                taskset(ctx.client_cpus, cmd), stdout=subprocess.PIPE, text=True, cwd=HERE.parent
            )
            meter = CpuMeter(
                {
                    "server": ctx.server.pids,
                    "callers": pids_of(proc.pid),
                    "subscriber": lambda: [sub.pid],
                }
            )
            wait_unreaped(proc, ctx.seconds + 60)
            cpu = meter.stop()
            stdout, _ = proc.communicate()
            res = json.loads(stdout.strip().splitlines()[-1])
            ctx.note(
                f"challenge x{k}: {res['ok']} ok, {res['bad']} failed, {res['rate']:.0f}/s, "
                f"p50 {res['p50']:.2f} ms, p99 {res['p99']:.2f} ms; {cpu_text(cpu)}"
            )
            out[f"chal_p50_{k}"] = res["p50"]
            out[f"chal_p99_{k}"] = res["p99"]
            out[f"chal_rate_{k}"] = res["rate"]
            out[f"chal_bad_{k}"] = res["bad"]
    finally:
        sub.close()
    return out


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
