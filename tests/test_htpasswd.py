"""htpasswd parsing and verification against entries written by Apache's real `htpasswd` command."""

from __future__ import annotations

import pathlib
import subprocess

import pytest

from system_programs import require
from wslarkbot.relay.auth import parse_basic_auth
from wslarkbot.relay.htpasswd import Htpasswd, apr1_crypt, verify_entry


def htpasswd_hash(flag: str, password: str) -> str:
    require("htpasswd")
    out = subprocess.run(["htpasswd", flag, "user", password], check=True, capture_output=True, text=True)
    return out.stdout.strip().split(":", 1)[1]


@pytest.mark.parametrize("flag", ["-nbB", "-nbm", "-nbs"], ids=["bcrypt", "apr1", "sha"])
@pytest.mark.parametrize("password", ["secret", "pässwörd ✓", "x" * 60, ""])
def test_entries_from_the_htpasswd_command_verify_only_their_password(flag: str, password: str) -> None:
    hashed = htpasswd_hash(flag, password)
    assert verify_entry(hashed, password)
    assert not verify_entry(hashed, password + "x")


def test_apr1_matches_a_known_vector() -> None:
    """Vector computed with `openssl passwd -apr1 -salt saltsalt password`."""
    assert apr1_crypt(b"password", b"saltsalt") == "$apr1$saltsalt$yAAkm4libquA.ZWLHbSBq/"


@pytest.mark.parametrize("flag", ["-nbp", "-nbd"], ids=["plain", "crypt"])
def test_plain_and_crypt_entries_never_verify(flag: str) -> None:
    hashed = htpasswd_hash(flag, "secret")
    assert not verify_entry(hashed, "secret")


def test_file_parsing_skips_comments_bad_lines_and_refused_entries(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(
        f"# comment\n\nno-colon-here\norg_a:{htpasswd_hash('-nbs', 'pw')}\norg_plain:secret-text\n"
    )
    users = Htpasswd(path)
    assert "org_a" in users and "org_plain" not in users
    assert users.verify("org_a", "pw") and not users.verify("org_plain", "secret-text")
    assert not users.verify("nobody", "pw")
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "org_plain" in messages and "secret-text" not in messages


def test_missing_file_at_start_raises() -> None:
    with pytest.raises(OSError):
        Htpasswd("/nonexistent/htpasswd")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic dXNlcjpwYTpzcw==", ("user", "pa:ss")),
        ("basic dXNlcjo=", ("user", "")),
        ("Bearer abc", None),
        ("Basic !!!", None),
        ("Basic dXNlcg==", None),
        (None, None),
    ],
)
def test_parse_basic_auth(header: str | None, expected: tuple[str, str] | None) -> None:
    assert parse_basic_auth(header) == expected


def test_an_unknown_user_costs_a_bcrypt_check_like_a_known_one(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19: equal work for known and unknown users, so timing does not tell which org names exist."""
    import bcrypt

    path = tmp_path / "htpasswd"
    path.write_text("org_acme:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(5)).decode() + "\n")
    table = Htpasswd(path)
    checked: list[bytes] = []
    real = bcrypt.checkpw

    def counting(pw: bytes, hashed: bytes) -> bool:
        checked.append(hashed[:7])
        return real(pw, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    assert not table.verify("org_nobody", "pw")
    assert not table.verify("org_acme", "wrong")
    assert table.verify("org_acme", "pw")
    assert checked == [b"$2b$05$"] * 3  # the unknown user too, at the file's cost
