"""Reloading a running relay's configuration (``SIGHUP``; docs/deploy.md "Production").

The new configuration is read the way the relay started (config file, ``WSLARKBOT_*`` variables, flags).
What can change live is applied at once: the htpasswd file and the auth options, the timeouts, the limits,
``retry_after``, the log level, and the gateway's app list (its file re-read). What cannot (the listening
address, the fast path, Redis, buffers, the admin credentials, JSON logs) is left as it runs and logged as
"needs a restart". A configuration that does not load or check is refused whole: the relay keeps running
with the old one and logs why.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from ..exceptions import ConfigurationError
from .auth import AccessPolicy
from .config import RelayConfig
from .state import RelayState
from .tenants import TenantGate

__all__ = ["RESTART_FIELDS", "apply_config", "reload"]

log = logging.getLogger("wslarkbot.relay")

#: Fields a running relay cannot change: a new value waits for the next start.
RESTART_FIELDS = frozenset(
    {
        "host",
        "port",
        "fast_path",
        "redis_url",
        "buffer",
        "buffer_size",
        "buffer_ttl",
        "log_json",
        "admin_user",
        "admin_password",
        "metrics_auth",
        "gateway_config",
    }
)


def apply_config(state: RelayState, new: RelayConfig) -> tuple[list[str], list[str]]:
    """Apply the live part of ``new`` to a running relay; returns ``(applied, needs_restart)`` field names.

    Raises:
        ConfigurationError: the new auth options or htpasswd file do not load (nothing is applied).
    """
    old = state.config
    names = [f.name for f in dataclasses.fields(RelayConfig)]
    changed = [name for name in names if getattr(old, name) != getattr(new, name)]
    restart = [name for name in changed if name in RESTART_FIELDS]
    applied = [name for name in changed if name not in RESTART_FIELDS]
    config = old.replace(**{name: getattr(new, name) for name in applied})
    access = AccessPolicy(config)  # re-reads the htpasswd file; raises before anything changes
    state.config = config
    state.access = access
    state.hub.fanout.max_subscribers_per_channel = config.max_subscribers_per_channel
    state.hub.pending.limit = config.max_pending_replies
    if "tenants" in applied:
        state.tenants = TenantGate(config.tenants)
    if "log_level" in applied:
        level = logging.getLevelName(config.log_level.upper())
        logging.getLogger().setLevel(level if isinstance(level, int) else logging.INFO)
    for name in restart:
        log.warning("configuration: %s changed; needs a restart (the running value is kept)", name)
    return applied, restart


def reload(state: RelayState, load: Callable[[], RelayConfig]) -> bool:
    """Load a new configuration with ``load()`` (a ``RelayConfig``) and apply it; whether it was applied.

    Logs one line either way; a refused configuration leaves the relay as it runs.
    """
    try:
        new = load()
        applied, restart = apply_config(state, new)
        gateway_reloaded = _reload_gateway(state)
    except ConfigurationError as exc:
        log.error("configuration reload refused, the running configuration is kept: %s", exc)
        return False
    log.info(
        "configuration reloaded: %s%s%s",
        ", ".join(applied) or "nothing changed",
        "; gateway apps re-read" if gateway_reloaded else "",
        f"; needs a restart: {', '.join(restart)}" if restart else "",
    )
    return True


def _reload_gateway(state: RelayState) -> bool:
    if state.gateway is None or not state.config.gateway_config:
        return False
    state.gateway.reload_config(state.config.gateway_config)
    return True
