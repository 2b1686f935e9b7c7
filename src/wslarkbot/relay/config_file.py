"""``wslarkbot serve --config relay.toml``: every :class:`~.config.RelayConfig` field as a top-level key of
the same name, checked at start (docs/deploy.md "Production"). No I/O but reading the files named.

Order, lowest first: defaults, the file, ``WSLARKBOT_*`` variables, flags. A secret may come from a file
instead of the config (``admin_password_file = "/run/secrets/admin_password"``, likewise ``redis_url_file``;
or the variables ``WSLARKBOT_ADMIN_PASSWORD_FILE``, ``WSLARKBOT_REDIS_FILE``): its content, without the
trailing newline. An unknown key, a value of the wrong type or an unreadable secret file stops the start
with the key, its line and what is allowed; no message ever quotes a value.

:func:`example_config` writes the example with every key (``deploy/relay.example.toml`` is its output, and a
test keeps the two equal), so the example cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import pathlib
import re
import sys
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError
from .config import env_name, field_kind, option_fields
from .tenants import parse_tenants

__all__ = ["SECRET_FIELDS", "example_config", "load_config_file", "read_secret_files", "toml_loads"]

#: Fields that may be read from a file (``<field>_file``): they are secrets and never shown.
SECRET_FIELDS = ("admin_password", "redis_url")
#: Example values for fields whose default is unset, written commented out in the example config.
_EXAMPLES = {
    "htpasswd": "/etc/wslarkbot/htpasswd",
    "admin_user": "admin",
    "admin_password": "",
    "gateway_config": "/etc/wslarkbot/gateway.toml",
    "redis_url": "redis://127.0.0.1:6379/0",
    "buffer": "cli_*,org_*",
}


def toml_loads(text: str) -> dict[str, Any]:
    """Parse TOML with the standard library (Python 3.11+) or ``tomli`` (3.10, the relay extra)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _line_of(text: str, key: str) -> int | None:
    """The line (1-based) where top-level ``key`` is set, if it can be found."""
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("["):
            return None  # past the top-level keys
        if pattern.match(line):
            return number
    return None


def _where(path: pathlib.Path, text: str, key: str) -> str:
    line = _line_of(text, key)
    return f"{path}:{line}" if line is not None else str(path)


def _typed(f: dataclasses.Field[Any], value: Any) -> Any:
    """``value`` if it has the field's type (an int where a float is wanted is fine), else None."""
    kind = field_kind(f)
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "int":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "float":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return value if isinstance(value, str) else None


def _read_secret(path_text: str, what: str) -> str:
    try:
        return pathlib.Path(path_text).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigurationError(f"{what}: cannot read {path_text}: {reason}") from None


def load_config_file(path: str | pathlib.Path) -> dict[str, Any]:
    """The field values set in the TOML file ``path``.

    Raises:
        ConfigurationError: unreadable or invalid TOML, an unknown key, a value of the wrong type, a secret
            given both inline and as a file, or a secret file that cannot be read.
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigurationError(f"cannot read config {path}: {reason}") from None
    try:
        data = toml_loads(text)
    except ValueError as exc:
        # Only the position: a parser message could quote the line, and the file may hold secrets.
        at = re.search(r"\(at line \d+, column \d+\)", str(exc))
        position = f" {at.group()}" if at else ""
        raise ConfigurationError(f"config {path} is not valid TOML{position}") from None
    fields = {f.name: f for f in option_fields()}
    allowed = sorted([*fields, "tenants", *(f"{name}_file" for name in SECRET_FIELDS)])
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = functools.partial(_where, path, text, key)  # the key's line, looked up for an error only
        if key == "tenants":
            values["tenants"] = parse_tenants(value, str(path))
            continue
        if key.endswith("_file") and key[: -len("_file")] in SECRET_FIELDS:
            name = key[: -len("_file")]
            if name in data:
                raise ConfigurationError(f"{where()}: set {name} or {key}, not both")
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"{where()}: {key} must be the path of a file")
            try:
                values[name] = _read_secret(value, key)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where()}: {exc}") from None
            continue
        f = fields.get(key)
        if f is None:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(
                f"{where()}: unknown key {key!r}{hint}; the keys are RelayConfig's fields, listed with "
                "`wslarkbot serve --example-config`"
            )
        typed = _typed(f, value)
        if typed is None:
            kind = field_kind(f)
            article = "an" if kind == "int" else "a"
            raise ConfigurationError(
                f"{where()}: {key} must be {article} {kind} ({f.metadata.get('help', '')}), "
                f"not a {type(value).__name__}"
            )
        values[key] = typed
    return values


def read_secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    """Secrets named by ``WSLARKBOT_<FIELD>_FILE`` variables (e.g. ``WSLARKBOT_ADMIN_PASSWORD_FILE``).

    Raises:
        ConfigurationError: the file cannot be read.
    """
    out: dict[str, str] = {}
    for name in SECRET_FIELDS:
        variable = env_name(name) + "_FILE"
        if environ.get(variable):
            out[name] = _read_secret(environ[variable], variable)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string for these values


def example_config() -> str:
    """A config file with every key, its help as a comment and its default (unset ones commented out)."""
    lines = [
        "# wslarkbot relay configuration: `wslarkbot serve --config relay.toml`.",
        "# Every key is a RelayConfig field; WSLARKBOT_* variables and flags override what is set here.",
        "# Generated by `wslarkbot serve --example-config` (a test keeps this file equal to its output).",
        "# Secrets may come from files instead: admin_password_file, redis_url_file.",
        "",
    ]
    for f in option_fields():
        help_text = " ".join(str(f.metadata.get("help", "")).split())
        lines.append(f"# {help_text}")
        if f.default is None:
            lines.append(f"#{f.name} = {_toml_value(_EXAMPLES.get(f.name, ''))}")
        else:
            lines.append(f"{f.name} = {_toml_value(f.default)}")
        lines.append("")
    lines.append('# admin_password_file = "/run/secrets/wslarkbot_admin_password"')
    lines.append('# redis_url_file = "/run/secrets/wslarkbot_redis_url"')
    lines += [
        "",
        '# Per-tenant limits (relay/tenants.py): one table per channel (an org_* or an app id), "*" for',
        "# every channel without one. Over the rate: 429 + Retry-After; over max_subscribers: 503.",
        '#[tenants."*"]',
        "#events_per_second = 20",
        "#max_subscribers = 10",
        "#",
        "#[tenants.org_acme]",
        "#events_per_second = 200",
    ]
    return "\n".join(lines) + "\n"
