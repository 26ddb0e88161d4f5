"""`gateway serve` with mutual TLS: no connection without a client certificate from the configured CA."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.api.app import create_app
from gateway.cli.servers import server
from gateway.config import Settings
from tests.harness import default_counterparts, free_port

Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _issue(name: str, *, issuer: Issued | None = None, ca: bool = False, usage=None, ip: str | None = None) -> Issued:  # noqa: ANN001
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
               .not_valid_after(now + timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if ip is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    return cert, key


def _write(tmp: Path, name: str, issued: Issued, password: bytes | None = None) -> tuple[Path, Path]:
    cert, key = issued
    cert_path, key_path = tmp / f"{name}.crt.pem", tmp / f"{name}.key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    return cert_path, key_path


@pytest.fixture
def mtls(tmp_path: Path):  # noqa: ANN201
    ca = _issue("probation-gateway test CA", ca=True)
    ca_file, _ = _write(tmp_path, "ca", ca)
    server_cert, server_key = _write(tmp_path, "server", _issue("gateway", issuer=ca, ip="127.0.0.1",
                                                                   usage=ExtendedKeyUsageOID.SERVER_AUTH),
                                     password=b"tls key passphrase")  # an encrypted key, as deployed
    client = _write(tmp_path, "client", _issue("probation-is", issuer=ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    rogue_ca = _issue("someone else's CA", ca=True)
    rogue = _write(tmp_path, "rogue", _issue("probation-is", issuer=rogue_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    port = free_port()
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", port=port,
                        counterparts_file=default_counterparts(tmp_path), worker=False, tls_cert_file=server_cert,
                        tls_key_file=server_key, tls_client_ca_file=ca_file,
                        tls_key_password="tls key passphrase")
    srv = server(create_app(settings), host="127.0.0.1", port=port, tls_cert=settings.tls_cert_file,
                 tls_key=settings.tls_key_file, client_ca=settings.tls_client_ca_file,
                 tls_key_password=settings.tls_key_password.get_secret_value())
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the TLS gateway did not start"
        time.sleep(0.01)
    yield settings, ca_file, client, rogue
    srv.should_exit = True
    thread.join(timeout=15)


def _client(ca_file: Path, cert: tuple[Path, Path] | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.Client(verify=context, timeout=10)


def test_a_client_certificate_from_the_ca_is_required(mtls) -> None:  # noqa: ANN001
    settings, ca_file, client, rogue = mtls
    assert settings.base_url.startswith("https://")
    with _client(ca_file, client) as http:
        assert http.get(f"{settings.base_url}/healthz").status_code == 200
        # The certificate opens the connection; it is not an identity: an unsigned call is still refused.
        refused = http.get(f"{settings.base_url}/v1/deliveries")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
    for cert in (None, rogue):
        with _client(ca_file, cert) as http, pytest.raises(httpx.TransportError):
            http.get(f"{settings.base_url}/healthz")


def test_base_url_of_an_ipv6_host_is_bracketed() -> None:
    assert Settings(host="::1", port=8443).base_url == "http://[::1]:8443"


def test_half_a_tls_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert_file and tls_key_file go together"):
        Settings(tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="needs tls_cert_file"):
        Settings(tls_client_ca_file=tmp_path / "ca.pem")
