"""``python -m bench``: our relay and the nginx + nchan relay, measured side by side in one run.

Each server runs alone, pinned to one CPU (``taskset -c 0``); the load generator (wrk) and the receiving
subscriber process share the other (``-c 1``). See docs/performance.md for the method and figures.

    python -m bench --quick                  # a seconds-long smoke run (CI)
    python -m bench                          # the full run
    python -m bench --idle-connections 10000 --servers nchan,wslarkbot --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import procstat, scenarios, servers
from .loadgen import wrk_missing

# (key, label, better): "higher" or "lower" is better; the ratio column is wslarkbot / nchan.
ROWS: list[tuple[str, str, str]] = [
    ("sustained_rate", "Lossless delivery, 1 subscriber (ev/s)", "higher"),
    ("lat_p50_200", "Latency p50 @200 ev/s (ms)", "lower"),
    ("lat_p99_200", "Latency p99 @200 ev/s (ms)", "lower"),
    ("lat_p50_1000", "Latency p50 @1000 ev/s (ms)", "lower"),
    ("lat_p99_1000", "Latency p99 @1000 ev/s (ms)", "lower"),
    ("lat_p50_3000", "Latency p50 @3000 ev/s (ms)", "lower"),
    ("lat_p99_3000", "Latency p99 @3000 ev/s (ms)", "lower"),
    ("chal_p50_1", "Challenge round trip p50, 1 caller (ms)", "lower"),
    ("chal_p99_1", "Challenge round trip p99, 1 caller (ms)", "lower"),
    ("chal_p50_16", "Challenge round trip p50, 16 callers (ms)", "lower"),
    ("chal_p99_16", "Challenge round trip p99, 16 callers (ms)", "lower"),
    ("chal_rate_16", "Challenges answered/s, 16 callers", "higher"),
    ("chal_cpu_16", "Challenge, 16 callers: CPU % server / client core", "-"),
    ("chal2_p50_1", "Challenge round trip p50, 1 caller, protocol 2 (ms)", "lower"),
    ("chal2_p99_1", "Challenge round trip p99, 1 caller, protocol 2 (ms)", "lower"),
    ("chal2_p50_16", "Challenge round trip p50, 16 callers, protocol 2 (ms)", "lower"),
    ("chal2_p99_16", "Challenge round trip p99, 16 callers, protocol 2 (ms)", "lower"),
    ("chal2_rate_16", "Challenges answered/s, 16 callers, protocol 2", "higher"),
    ("chal2_cpu_16", "Challenge, 16 callers, protocol 2: CPU % server / client core", "-"),
    ("chal_failed", "Challenge calls answered wrongly or not at all, all runs", "lower"),
    ("rss_per_ws_kib", "RSS per idle WebSocket (KiB)", "lower"),
    ("fanout_min_rate", "10 subscribers, 1 channel: slowest subscriber (ev/s)", "higher"),
    ("fanout_lost", "10 subscribers, 1 channel: messages lost", "lower"),
]


def raise_nofile(wanted: int) -> None:
    """Raise this process's open-file limit (inherited by the servers and clients) to ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"note: open files limited to {hard}; --idle-connections may fail", file=sys.stderr)


def machine_facts() -> str:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_gib:.0f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()} ({sys.executable}, which also runs wslarkbot serve)"
    )


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    head = ["Metric", *names] + (["wslarkbot / nchan"] if {"nchan", "wslarkbot"} <= set(names) else [])
    lines = [head]
    for key, label, better in ROWS:
        if all(results[n].get(key) is None for n in names):
            continue  # scenario not run
        row = [label] + [fmt(results[n].get(key)) for n in names]
        if len(head) > len(names) + 1:
            a, b = results["nchan"].get(key), results["wslarkbot"].get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a:
                row.append(f"{b / a:.2f}x ({better} is better)")
            else:
                row.append("-")
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def run_server(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cpus_server, cpus_client = pinning()
    if name == "nchan":
        ctx_mgr = servers.nchan(workdir, cpus=cpus_server, nofile=args.idle_connections + 4096)
    else:
        ctx_mgr = servers.wslarkbot(workdir, cpus=cpus_server, extra_args=args.relay_args)
    results: dict[str, Any] = {}
    if args.wait_quiet:
        busy = procstat.wait_quiet(args.wait_quiet)
        print(f"other processes use {busy:.0f}% of a core before the {name} run", file=sys.stderr)
    with ctx_mgr as server:
        ctx = scenarios.Ctx(server, cpus_server, cpus_client, args.seconds)
        print(
            f"== {name} on {server.url} (server CPU {cpus_server}, clients CPU {cpus_client})",
            file=sys.stderr,
        )
        for scenario in args.only:
            if scenario == "sustained":
                results.update(scenarios.sustained(ctx, args.steps, args.refine))
            elif scenario == "latency":
                results.update(scenarios.latency(ctx, args.latency_rates))
            elif scenario == "challenge":
                results.update(scenarios.challenge(ctx, [1, 16]))
            elif scenario == "rss":
                results.update(scenarios.idle_rss(ctx, args.idle_connections))
            elif scenario == "fanout":
                results.update(scenarios.fanout(ctx, args.fanout_rate))
        results["log"] = ctx.log
    return results


def pinning() -> tuple[str | None, str | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return str(cpus[0]), str(cpus[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (small steps, 1 s each)")
    parser.add_argument("--servers", default="nchan,wslarkbot", help="comma list: nchan, wslarkbot")
    parser.add_argument(
        "--only", default="sustained,latency,challenge,rss,fanout", help="comma list of scenarios to run"
    )
    parser.add_argument("--seconds", type=float, help="length of each measured run (default 10, quick 1)")
    parser.add_argument("--steps", help="offered rates for the lossless search, e.g. 1000,2000,4000")
    parser.add_argument(
        "--refine",
        type=int,
        help="after the first step that loses or refuses events, bisect this many more runs between it "
        "and the last clean step (default 2, quick 0)",
    )
    parser.add_argument("--idle-connections", type=int, help="WebSockets for the RSS figure (default 1000)")
    parser.add_argument("--fanout-rate", type=float, help="offered ev/s with 10 subscribers (default 1000)")
    parser.add_argument(
        "--relay-arg",
        dest="relay_args",
        action="append",
        default=[],
        help="argument for `wslarkbot serve` (repeatable; default: --log-level WARNING)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each server, wait up to SECONDS for other processes to go quiet (shared machines)",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if args.quick:
        args.seconds = args.seconds or 1.0
        args.steps = args.steps or "500,2000"
        args.refine = 0 if args.refine is None else args.refine
        args.idle_connections = args.idle_connections or 200
        args.fanout_rate = args.fanout_rate or 200
        args.latency_rates = [200, 1000]
    else:
        args.seconds = args.seconds or 10.0
        args.steps = args.steps or "1000,2000,4000,6000,8000,12000,16000,24000,32000"
        args.refine = 2 if args.refine is None else args.refine
        args.idle_connections = args.idle_connections or 1000
        args.fanout_rate = args.fanout_rate or 1000
        args.latency_rates = [200, 1000, 3000]
    args.steps = [float(s) for s in str(args.steps).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = wrk_missing()
    if missing:
        print(f"bench: {missing}", file=sys.stderr)
        return 2
    raise_nofile(2 * args.idle_connections + 8192)
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    if "wslarkbot" in names:
        why = servers.relay_available()
        if why:
            print(f"bench: skipping wslarkbot: {why}", file=sys.stderr)
            names.remove("wslarkbot")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
            results[name] = run_server(name, args, Path(tmp))
    print()
    print(f"Machine: {machine_facts()}")
    print(f"Each run {args.seconds:g} s; server pinned to one CPU, wrk + subscriber on the other.")
    print()
    print(table(results))
    print()
    print("Run log (CPU in percent of one core, sampled from /proc/<pid>/stat):")
    for res in results.values():
        for line in res.get("log", []):
            print(line)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine_facts(),
                    "args": vars(args) | {"json": str(args.json)},
                    "results": results,
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
