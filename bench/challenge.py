"""Challenge round trip, caller side: K concurrent url_verification POSTs in a loop for D seconds.

Each POST has no signature, so the relay pushes it to the subscriber (bench/subscriber.py --reply), which
answers with ``POST /sub/<request_id>``; the relay then answers the caller. Prints one JSON line.
Run as ``python -m bench.challenge --url http://H:P --path /hook/<app> --concurrency K --seconds D``.

``python -m bench`` no longer uses it: its callers are wrk with bench/challenge.lua, which costs a fraction
of this aiohttp client's CPU per call (this one saturates its core at ~1,200 calls/s). It is kept as an
independent cross-check of wrk's figures at low rates (e.g. one caller).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from array import array

import aiohttp

from .subscriber import percentiles


async def caller(session: aiohttp.ClientSession, url: str, until: float, lat: array, bad: list[int]) -> None:
    while time.monotonic() < until:
        challenge = uuid.uuid4().hex
        body = {"challenge": challenge, "token": "bench", "type": "url_verification"}
        start = time.monotonic_ns()
        async with session.post(url, json=body, headers={"X-Request-Id": f"chal-{challenge}"}) as resp:
            data = await resp.read()
            ok = resp.status == 200 and json.loads(data or b"null") == {"challenge": challenge}
        if ok:
            lat.append(time.monotonic_ns() - start)
        else:
            bad[0] += 1


async def amain(args: argparse.Namespace) -> None:
    lat: array = array("q")
    bad = [0]
    start = time.monotonic()
    until = start + args.seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency + 4)) as session:
        await asyncio.gather(
            *(caller(session, args.url + args.path, until, lat, bad) for _ in range(args.concurrency))
        )
    elapsed = time.monotonic() - start
    print(
        json.dumps({"ok": len(lat), "bad": bad[0], "rate": len(lat) / elapsed, **percentiles(lat)}),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5)
    asyncio.run(amain(parser.parse_args()))


if __name__ == "__main__":
    main()
