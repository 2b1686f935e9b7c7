"""Apache htpasswd files: parse and verify entries. No network I/O; reads the file on (re)load.

Supported entries, as Apache's ``htpasswd`` writes them:

* bcrypt ``$2y$`` (``htpasswd -B``; also ``$2a$``/``$2b$``), verified with the ``bcrypt`` package;
* ``$apr1$`` Apache MD5-crypt (``htpasswd -m``, the default), implemented below;
* ``{SHA}`` base64 SHA-1 (``htpasswd -s``).

Plain-text and DES ``crypt()`` entries (``htpasswd -p`` / ``-d``) are refused: they are logged once at load
time and never match. All comparisons are constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable

__all__ = ["Htpasswd", "apr1_crypt", "verify_entry"]

log = logging.getLogger("wslarkbot.relay.auth")

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BCRYPT_PREFIXES = ("$2y$", "$2a$", "$2b$")


def _to64(value: int, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def apr1_crypt(password: bytes, salt: bytes, magic: bytes = b"$apr1$") -> str:
    """Apache's MD5-crypt: Poul-Henning Kamp's FreeBSD ``crypt_md5`` (1994) with the ``$apr1$`` magic.

    Reference: APR ``crypto/apr_md5.c`` ``apr_md5_encode`` (the algorithm of FreeBSD
    ``lib/libcrypt/crypt-md5.c``):
    an MD5 over password, magic and salt mixed with MD5(password+salt+password), then 1000 rounds that
    alternate password/previous digest/salt, and a custom base-64 of a byte permutation of the digest.
    """
    salt = salt[:8]
    alt = hashlib.md5(password + salt + password).digest()
    ctx = password + magic + salt
    n = len(password)
    while n > 0:
        ctx += alt[: min(16, n)]
        n -= 16
    i = len(password)
    while i:
        # The C code appends one byte of a zeroed buffer for a 1 bit, else the password's first byte.
        ctx += b"\0" if i & 1 else password[:1]
        i >>= 1
    final = hashlib.md5(ctx).digest()
    for r in range(1000):
        step = password if r & 1 else final
        if r % 3:
            step += salt
        if r % 7:
            step += password
        step += final if r & 1 else password
        final = hashlib.md5(step).digest()
    f = final
    encoded = (
        _to64((f[0] << 16) | (f[6] << 8) | f[12], 4)
        + _to64((f[1] << 16) | (f[7] << 8) | f[13], 4)
        + _to64((f[2] << 16) | (f[8] << 8) | f[14], 4)
        + _to64((f[3] << 16) | (f[9] << 8) | f[15], 4)
        + _to64((f[4] << 16) | (f[10] << 8) | f[5], 4)
        + _to64(f[11], 2)
    )
    return magic.decode() + salt.decode("ascii", "replace") + "$" + encoded


def entry_scheme(hashed: str) -> str | None:
    """``bcrypt``, ``apr1``, ``sha`` or None (plain text / crypt(): refused)."""
    if hashed.startswith(_BCRYPT_PREFIXES):
        return "bcrypt"
    if hashed.startswith("$apr1$"):
        return "apr1"
    if hashed.startswith("{SHA}"):
        return "sha"
    return None


def verify_entry(hashed: str, password: str) -> bool:
    """Whether ``password`` matches the htpasswd hash ``hashed`` (False for refused schemes)."""
    pw = password.encode("utf-8")
    scheme = entry_scheme(hashed)
    if scheme == "bcrypt":
        import bcrypt  # the relay extra

        try:
            return bool(bcrypt.checkpw(pw, hashed.encode("ascii")))
        except ValueError:
            return False
    if scheme == "apr1":
        parts = hashed.split("$")
        if len(parts) != 4:
            return False
        computed = apr1_crypt(pw, parts[2].encode("ascii", "replace"))
        return hmac.compare_digest(computed.encode(), hashed.encode())
    if scheme == "sha":
        computed = "{SHA}" + base64.b64encode(hashlib.sha1(pw).digest()).decode()
        return hmac.compare_digest(computed.encode(), hashed.encode())
    return False


class Htpasswd:
    """Users and hashes from an htpasswd file, reloaded when the file's mtime changes.

    Example::

        users = Htpasswd("/etc/wslarkbot/htpasswd")
        users.verify("org_acme", "secret")   # -> bool
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._entries: dict[str, str] = {}
        self._decoy_hash: str | None = None  # see _decoy; reset when the file is re-read
        self._mtime: float | None = None
        self.reload_if_changed()

    @classmethod
    def parse(cls, lines: Iterable[str], *, source: str = "<htpasswd>") -> dict[str, str]:
        """``user -> hash`` for each usable line; refused or malformed lines are logged (user only)."""
        entries: dict[str, str] = {}
        for lineno, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not user:
                log.warning("htpasswd %s:%d: not 'user:hash', line ignored", source, lineno)
                continue
            if entry_scheme(hashed) is None:
                log.warning(
                    "htpasswd %s:%d: user %s has a plain-text or crypt() entry, refused; "
                    "recreate it with `htpasswd -B`",
                    source,
                    lineno,
                    user,
                )
                continue
            entries[user] = hashed
        return entries

    def reload_if_changed(self) -> None:
        """Re-read the file if its mtime changed. A missing file keeps the old users."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            if self._mtime is None:
                raise
            log.warning("htpasswd %s: cannot stat (%s); keeping %d users", self.path, exc, len(self._entries))
            return
        if mtime == self._mtime:
            return
        with open(self.path, encoding="utf-8") as fh:
            self._entries = self.parse(fh, source=self.path)
        self._decoy_hash = None
        if self._mtime is not None:
            log.info("htpasswd %s reloaded: %d users", self.path, len(self._entries))
        self._mtime = mtime

    def __contains__(self, user: object) -> bool:
        return user in self._entries

    def verify(self, user: str, password: str) -> bool:
        """Whether ``user`` exists and ``password`` matches its entry."""
        self.reload_if_changed()
        hashed = self._entries.get(user)
        if hashed is None:
            # As much work as for a known user (the file's costliest entry), so the answer's timing does
            # not tell which users (org names) exist.
            verify_entry(self._decoy(), password)
            return False
        return verify_entry(hashed, password)

    def _decoy(self) -> str:
        """A hash like the file's slowest entry (bcrypt at its highest cost, else any), for unknown users;
        worked out once per version of the file."""
        if self._decoy_hash is None:
            entries = list(self._entries.values())
            costs = [e.split("$")[2] for e in entries if entry_scheme(e) == "bcrypt"]
            if costs:
                import bcrypt  # the relay extra

                cost = max(int(c) if c.isdigit() else 10 for c in costs)
                self._decoy_hash = bcrypt.hashpw(b"decoy", bcrypt.gensalt(cost)).decode()
            else:
                self._decoy_hash = entries[0] if entries else ""
        return self._decoy_hash
