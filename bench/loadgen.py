"""The client-side processes: wrk publishing webhooks (or calling with challenges), and bench/subscriber.py
receiving them (and answering the challenges)."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .servers import taskset

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "events.lua"
CHALLENGE_SCRIPT = HERE / "challenge.lua"
#: 900 random bytes in base64: the 1.2 KB "encrypt" value of an encrypted Feishu event.
PAD = base64.b64encode(os.urandom(900)).decode()
#: Connections per offered event/s: enough free connections to keep the schedule for 25 ms of latency.
BACKLOG_MS = 25
SIGNED_HEADERS = {
    "Content-Type": "application/json; charset=utf-8",
    "X-Lark-Request-Timestamp": "1700000000",
    "X-Lark-Request-Nonce": "bench-nonce",
    "X-Lark-Signature": "ab" * 32,
}


def wrk_missing() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (apt-get install wrk)"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    #: wrk's own view: request sent -> response (HTTP side only)
    http_p50_ms: float
    http_p99_ms: float
    pid: int = 0

    @property
    def accepted(self) -> int:
        """Requests answered 2xx (wrk counts other statuses as `status` errors)."""
        return self.requests - self.errors["status"]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


class _WrkRun:
    """One ``wrk -t1`` process running a Lua script that ends by printing ``BENCH_RESULT {json}``."""

    def __init__(
        self,
        script: Path,
        url: str,
        connections: int,
        seconds: float,
        cpus: str | None,
        env: dict[str, str],
        timeout: str,
    ) -> None:
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", timeout]
        cmd += ["-s", str(script), url]
        self.proc = subprocess.Popen(
            taskset(cpus, cmd), env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 600) -> None:
        """Wait for wrk to exit without reaping it, so its CPU time can still be read."""
        wait_unreaped(self.proc, timeout)

    def _bench_result(self) -> tuple[dict[str, Any], str]:
        """The ``BENCH_RESULT`` object and wrk's whole output."""
        out, _ = self.proc.communicate(timeout=600)
        text = out.decode(errors="replace")
        for line in text.splitlines():
            if line.startswith("BENCH_RESULT "):
                return json.loads(line[len("BENCH_RESULT ") :]), text
        raise RuntimeError(f"wrk gave no result:\n{text[-2000:]}")


class Wrk(_WrkRun):
    """One wrk run: ``rate`` events/s (``None``: as fast as it can) for ``seconds``."""

    def __init__(self, url: str, path: str, rate: float | None, seconds: float, cpus: str | None) -> None:
        connections = 64 if rate is None else max(4, math.ceil(rate * BACKLOG_MS / 1000))
        env = {"BENCH_PATH": path, "BENCH_PAD": PAD, "BENCH_RATE": str(rate or 0)}
        super().__init__(WRK_SCRIPT, url, connections, seconds, cpus, env, timeout="5s")

    def result(self) -> WrkResult:
        d, _ = self._bench_result()
        errors = {k: int(d[k]) for k in ("connect", "read", "write", "status", "timeout")}
        return WrkResult(
            d["requests"], d["duration_us"] / 1e6, errors, d["lat_p50_us"] / 1e3, d["lat_p99_us"] / 1e3
        )


class ChallengeWrk(_WrkRun):
    """One wrk run of ``connections`` closed-loop challenge callers (bench/challenge.lua) for ``seconds``.

    ``run_tag`` (letters, digits, '-') goes into every challenge and request id, so two runs against
    the same server never reuse one."""

    def __init__(
        self, url: str, path: str, connections: int, seconds: float, cpus: str | None, run_tag: str
    ) -> None:
        env = {"BENCH_PATH": path, "BENCH_RUN": run_tag}
        super().__init__(CHALLENGE_SCRIPT, url, connections, seconds, cpus, env, timeout="2s")

    def result(self) -> dict[str, Any]:
        """ok, bad, outstanding, requests, rate (good answers/s), wrk's error counters, p50/p90/p99/
        p99.9/max (ms) and ``notes``: whatever else wrk and the script printed (first bad answers)."""
        d, text = self._bench_result()
        d["seconds"] = d["duration_us"] / 1e6
        d["rate"] = d["ok"] / d["seconds"] if d["seconds"] else 0.0
        d["notes"] = [ln for ln in text.splitlines() if ln.startswith("challenge.lua:")]
        return d


class SubscriberProc:
    """``python -m bench.subscriber`` in its own process, driven over stdin/stdout."""

    def __init__(
        self,
        ws_url: str,
        path: str,
        *,
        count: int = 1,
        distinct: bool = False,
        reply_url: str | None = None,
        reply_ws: bool = False,
        uvloop: bool = False,
        cpus: str | None = None,
    ) -> None:
        self.connections = count
        cmd = [
            sys.executable,
            "-m",
            "bench.subscriber",
            "--url",
            ws_url,
            "--path",
            path,
            "--count",
            str(count),
        ]
        if distinct:
            cmd.append("--distinct")
        if reply_url:
            cmd += ["--reply", reply_url]
        if reply_ws:
            cmd.append("--reply-ws")
        if uvloop:
            cmd.append("--uvloop")
        self.proc = subprocess.Popen(
            taskset(cpus, cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=HERE.parent,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if line != "READY":
            self.close()
            raise RuntimeError(f"subscriber did not connect (exit {self.proc.poll()}): {line!r}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def wait_probed(self, server_url: str, path: str, count: int, timeout: float = 15.0) -> None:
        """Post probe events until every connection got one: the subscriptions are live."""
        deadline = time.monotonic() + timeout
        n = 0
        while self.stats()["probed_connections"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"subscriptions to {path} not live after {timeout} s")
            n += 1
            post(server_url + path, {"probe": n}, SIGNED_HEADERS)
            time.sleep(0.02)  # probe interval while polling the subscriber's count
        self.command("reset")

    def drain(self, expected: int, timeout: float = 10.0, quiet: float = 1.0) -> dict[str, Any]:
        """Stats once ``expected`` messages arrived, or nothing came for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            stats = self.stats()
            got = stats["received"]
            if got >= expected or time.monotonic() > deadline:
                return stats
            if got != last:
                last, last_change = got, time.monotonic()
            elif time.monotonic() - last_change > quiet:
                return stats
            time.sleep(0.05)  # polling the subscriber's count

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def wait_unreaped(proc: subprocess.Popen[Any], timeout: float = 600) -> None:
    """Block until ``proc`` exits, leaving it a zombie: /proc/<pid>/stat keeps its CPU times until
    ``wait()`` reaps it. (Output is small: the pipe cannot fill and block the child.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return
        time.sleep(0.01)  # polling the child's state with a deadline
    raise TimeoutError(f"{proc.args!r} still running after {timeout} s")


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
