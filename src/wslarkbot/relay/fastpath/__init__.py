"""The relay's fast path: its own HTTP/1.1 + WebSocket protocol for the hot routes, in front of aiohttp.

Webhook POSTs, ``POST /sub/<request_id>`` replies and subscriber WebSockets are served by
:class:`~.connection.FastConnection` on the event loop's transports directly (no aiohttp request, response
or writer task per message); every other request, and anything unusual about a hot one, is handed to aiohttp
on the same socket. Both run the same relay logic (:mod:`..publish`, :mod:`..subscribe`), so answers, limits,
auth, buffering, groups, Redis and metrics are the same. ``--no-fast-path`` serves everything with aiohttp.
docs/performance.md has the measurements, docs/architecture.md the picture.
"""

from __future__ import annotations

from .front import FastFront, FastSite

__all__ = ["FastFront", "FastSite"]
