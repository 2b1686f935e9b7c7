"""TLS mistakes fail fast and say what to fix (issue 18): ``https`` to a plain relay, plain to a TLS relay,
a private CA (``Client(ssl=...)``, ``simulate --cacert``). Real sockets: the relay, and a TLS front
terminating TLS in front of it with a certificate from a CA made here."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wslarkbot import AsyncClient, Bot
from wslarkbot.relay import run_relay
from wslarkbot.relay.runner import RunningRelay
from wslarkbot.relay.testing import test_config
from wslarkbot.sim import SimApp
from wslarkbot.sim.simulate import simulate

pytestmark = pytest.mark.timeout(60)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_server_cert(tmp: Path) -> tuple[Path, Path, Path]:
    """(CA file, server cert file, server key file): a private CA and a certificate for 127.0.0.1."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("wslarkbot test CA"))
        .issuer_name(_name("wslarkbot test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, cert_file, key_file


class TlsFront:
    """A TLS listener on 127.0.0.1 forwarding the decrypted bytes to ``backend_port`` (what nginx or Caddy
    does in front of the relay)."""

    def __init__(self, backend_port: int, cert: Path, key: Path) -> None:
        self.backend_port = backend_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> TlsFront:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def relay() -> AsyncIterator[RunningRelay]:
    async with run_relay(test_config()) as r:
        yield r


def _client(port: int, protocol: str, **kwargs: object) -> AsyncClient:
    bot = Bot("cli_tls", app_secret="s", verification_token="t")
    return AsyncClient(
        bot, server=f"127.0.0.1:{port}", protocol=protocol, reconnect_delays=lambda: iter([30.0]), **kwargs
    )


async def _first_failure(client: AsyncClient) -> tuple[float, str]:
    started = time.monotonic()
    task = asyncio.ensure_future(client.run())
    try:
        failed = await asyncio.to_thread(client.status.wait_for, lambda s: s.failures >= 1, 15)
        assert failed, "the client neither connected nor failed"
        return time.monotonic() - started, client.status.last_error
    finally:
        await client.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_https_to_a_plain_relay_fails_at_once_naming_the_mismatch_and_the_relay_logs_it(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wslarkbot.relay")
    took, error = await _first_failure(_client(relay.port, "https"))
    assert took < 2.0, error
    assert "does not speak TLS" in error and "protocol='http'" in error
    assert any(
        "TLS handshake from 127.0.0.1 on the relay's plain HTTP port" in r.getMessage()
        for r in caplog.records
    )


async def test_plain_to_a_tls_relay_fails_at_once_naming_the_mismatch(
    relay: RunningRelay, tmp_path: Path
) -> None:
    _ca, cert, key = make_ca_and_server_cert(tmp_path)
    async with TlsFront(relay.port, cert, key) as front:
        took, error = await _first_failure(_client(front.port, "http"))
    assert took < 2.0, error
    assert "protocol='https'" in error


async def test_a_private_ca_is_refused_with_a_hint_then_trusted_with_client_ssl(
    relay: RunningRelay, tmp_path: Path
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    async with TlsFront(relay.port, cert, key) as front:
        took, error = await _first_failure(_client(front.port, "https"))
        assert took < 2.0 and "certificate" in error and "Client(ssl=" in error, error
        client = _client(front.port, "https", ssl=str(ca))
        async with client:
            assert await client.wait_ready(10), client.status.last_error
            assert client.status.protocol == 2


async def test_simulate_names_an_untrusted_certificate_and_trusts_cacert(
    relay: RunningRelay, tmp_path: Path
) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    app = SimApp.random()
    async with TlsFront(relay.port, cert, key) as front:
        url = f"https://127.0.0.1:{front.port}/hook/{app.app_id}"
        refused = await simulate(app, url, "text")
        trusted = await simulate(app, url, "text", cacert=str(ca))
    assert "--cacert" in (refused.hint or "") and "not trusted" in (refused.hint or ""), refused
    # trusted: the TLS part works; the relay answers (503: no bot connected for this app)
    assert trusted.attempts and trusted.attempts[0].status == 503, trusted


async def test_a_wrong_app_secret_is_reported_at_start_and_a_missing_one_warned(
    relay: RunningRelay, caplog: pytest.LogCaptureFixture
) -> None:
    from wslarkbot.sim import FakeOpenAPI

    caplog.set_level(logging.WARNING, logger="wslarkbot.client")
    with FakeOpenAPI() as openapi:
        openapi.add_app("cli_right", "the-secret")
        wrong = Bot("cli_right", app_secret="not-the-secret", verification_token="t", host=openapi.url)
        no_secret = Bot("cli_nosecret", verification_token="t", host=openapi.url)
        client = AsyncClient(wrong, no_secret, server=f"127.0.0.1:{relay.port}", protocol="http")
        async with client:
            assert await client.wait_ready(10)

            def reported() -> bool:
                return any(
                    "Feishu refused the credentials of cli_right" in r.getMessage() for r in caplog.records
                )

            deadline = time.monotonic() + 10
            while not reported() and time.monotonic() < deadline:  # the check runs in the background
                await asyncio.sleep(0.05)
        await wrong.aclose()
        await no_secret.aclose()
    assert reported()
    assert any("bot cli_nosecret has no app_secret" in r.getMessage() for r in caplog.records)
