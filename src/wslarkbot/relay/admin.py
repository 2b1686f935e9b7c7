"""Operator routes: ``GET /metrics`` (Prometheus) and ``GET /dashboard`` (+ its JSON API and assets).

``install(app)`` (called by ``create_app``) wires the metrics and dashboard observers into the relay state
and adds the routes:

* ``GET /metrics`` — Prometheus text format. **Open by default**, like most exporters: it carries counts,
  latencies and label values from small fixed sets (no channel names, request ids or bodies), and
  scrapers are usually restricted at the network level. ``--metrics-auth`` requires the admin credentials.
* ``GET /dashboard`` (HTML), ``GET /dashboard/api`` (JSON, polled every second by the page),
  ``GET /dashboard/static/<file>`` — always behind the admin credentials (HTTP basic auth, RFC 7617):
  ``--admin-user`` and ``--admin-password`` (better: ``WSLARKBOT_ADMIN_PASSWORD``), the password either in
  plain text or as an htpasswd hash (``htpasswd -nbB admin secret``). Without them the dashboard answers
  404. Wrong or missing credentials: 401 with ``WWW-Authenticate``; comparisons are constant time and the
  password is never logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib.resources
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector

from ..exceptions import ConfigurationError
from .answer import error_answer
from .auth import parse_basic_auth
from .config import RelayConfig
from .dashboard import DashboardObserver
from .htpasswd import entry_scheme, verify_entry
from .metrics import MetricsObserver, RelayCollector, render
from .observe import Observers
from .routes import STATE_KEY, to_response

__all__ = ["ADMIN_KEY", "ADMIN_REALM", "Admin", "AdminCredentials", "install"]

log = logging.getLogger("wslarkbot.relay.admin")

ADMIN_REALM = "wslarkbot admin"

#: Files served under /dashboard/static/ (a fixed list: no paths from the URL reach the file system).
_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class AdminCredentials:
    """One admin user; the password in plain text or as an htpasswd hash (bcrypt, apr1, SHA).

    Plain passwords are compared as SHA-256 digests with :func:`hmac.compare_digest` (constant time, and
    the length is not leaked). Hashes are checked with :func:`verify_entry`; successful checks are cached
    (digest of the header) so the dashboard's polling does not cost a bcrypt round per second.
    """

    def __init__(self, user: str, password: str) -> None:
        self.user = user
        self._user_digest = _digest(user)
        self._hashed = entry_scheme(password) is not None
        self._secret = password if self._hashed else ""
        self._password_digest = b"" if self._hashed else _digest(password)
        self._verified: set[bytes] = set()

    def __repr__(self) -> str:
        return f"AdminCredentials(user={self.user!r})"

    @classmethod
    def from_config(cls, config: RelayConfig) -> AdminCredentials | None:
        """The configured admin, or None when neither user nor password is set.

        Raises:
            ConfigurationError: only one of the two is set, or ``metrics_auth`` without them.
        """
        if bool(config.admin_user) != bool(config.admin_password):
            raise ConfigurationError("--admin-user and --admin-password go together")
        if config.admin_user and config.admin_password:
            return cls(config.admin_user, config.admin_password)
        if config.metrics_auth:
            raise ConfigurationError("--metrics-auth needs --admin-user and --admin-password")
        return None

    async def check(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries this admin's credentials."""
        creds = parse_basic_auth(authorization)
        if creds is None:
            return False
        user, password = creds
        user_ok = hmac.compare_digest(_digest(user), self._user_digest)
        if not self._hashed:
            password_ok = hmac.compare_digest(_digest(password), self._password_digest)
            return user_ok & password_ok
        key = _digest(f"{user}\0{password}")
        if key in self._verified:
            return user_ok
        # bcrypt takes tens of milliseconds: keep it off the event loop.
        password_ok = await asyncio.to_thread(verify_entry, self._secret, password)
        if user_ok and password_ok:
            if len(self._verified) >= 16:
                self._verified.clear()
            self._verified.add(key)
        return user_ok & password_ok


@dataclass
class Admin:
    """What the operator routes need, stored as ``app[ADMIN_KEY]``."""

    credentials: AdminCredentials | None
    registry: CollectorRegistry
    metrics: MetricsObserver
    dashboard: DashboardObserver
    metrics_auth: bool = False


ADMIN_KEY: web.AppKey[Admin] = web.AppKey("wslarkbot_relay_admin", Admin)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _authorized(request: web.Request, admin: Admin) -> web.Response | None:
    """None when the request may proceed, else the refusal (404 dashboard off, 401 bad credentials)."""
    creds = admin.credentials
    if creds is None:
        return to_response(error_answer(404, "dashboard disabled: set --admin-user and --admin-password"))
    if await creds.check(request.headers.get("Authorization")):
        return None
    if "Authorization" in request.headers:
        log.warning(
            "admin auth refused for %s %s from %s", request.method, request.path[:100], request.remote
        )
    return to_response(
        error_answer(
            401,
            "admin credentials required",
            {"WWW-Authenticate": f'Basic realm="{ADMIN_REALM}", charset="UTF-8"'},
        )
    )


def _admin_only(handler: _Handler) -> _Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        refusal = await _authorized(request, request.app[ADMIN_KEY])
        return refusal if refusal is not None else await handler(request)

    guarded.__doc__ = handler.__doc__
    return guarded


async def _metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: the app's registry in Prometheus text format."""
    admin = request.app[ADMIN_KEY]
    if admin.metrics_auth:
        refusal = await _authorized(request, admin)
        if refusal is not None:
            return refusal
    body, content_type = render(admin.registry, request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _static_text(name: str) -> str:
    return importlib.resources.files("wslarkbot.relay").joinpath("static").joinpath(name).read_text("utf-8")


async def _page(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard``: the page (it loads its script and polls ``dashboard/api``)."""
    return web.Response(text=_static_text("dashboard.html"), content_type="text/html", headers=_PAGE_HEADERS)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard/``: a permanent redirect to ``/dashboard`` (where the page's relative links work)."""
    raise web.HTTPPermanentRedirect("/dashboard")


async def _asset(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard/static/<name>``: the page's script and style sheet."""
    name = request.match_info["name"]
    content_type = _ASSETS.get(name)
    if content_type is None:
        return to_response(error_answer(404, "not found"))
    return web.Response(text=_static_text(name), content_type=content_type, headers=_PAGE_HEADERS)


async def _api(request: web.Request) -> web.StreamResponse:
    """``GET /dashboard/api``: the live view as JSON (metadata only; see :mod:`.dashboard`)."""
    state = request.app[STATE_KEY]
    extra: dict[str, object] = {"hub": state.hub.describe()}
    if state.gateway is not None:
        extra["gateway"] = state.gateway.counts()
    data = request.app[ADMIN_KEY].dashboard.snapshot(state.hub, extra)
    return web.json_response(data, headers={"Cache-Control": "no-store"})


def install(app: web.Application) -> Admin:
    """Add ``/metrics`` and ``/dashboard*`` to a relay app and attach their observers to its state.

    Call it after ``app[STATE_KEY]`` is set and before the catch-all ``/{org}/{app_id}`` route.

    Raises:
        ConfigurationError: inconsistent admin options (see :meth:`AdminCredentials.from_config`).
    """
    state = app[STATE_KEY]
    credentials = AdminCredentials.from_config(state.config)
    registry = CollectorRegistry()
    cap = state.config.metrics_channel_cap if state.config.metrics_per_channel else None
    metrics = MetricsObserver(registry, channel_cap=cap)
    registry.register(RelayCollector(app))
    ProcessCollector(registry=registry)
    dashboard = DashboardObserver()
    admin = Admin(credentials, registry, metrics, dashboard, metrics_auth=state.config.metrics_auth)
    app[ADMIN_KEY] = admin
    # The dashboard only serves an admin; without one, recording for it would cost every webhook for nothing.
    state.observer = Observers((metrics, dashboard)) if credentials is not None else metrics
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/dashboard", _admin_only(_page))
    app.router.add_get("/dashboard/", _to_dashboard)  # the page's relative links need /dashboard
    app.router.add_get("/dashboard/api", _admin_only(_api))
    app.router.add_get("/dashboard/static/{name}", _admin_only(_asset))
    return admin
