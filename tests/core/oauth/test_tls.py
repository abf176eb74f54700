"""The loopback listener's certificate: where and how it is kept, what it names, when it is remade."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import stat
from typing import TYPE_CHECKING, Final

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dashtam_cli.core.oauth.tls import listener_ssl_context

if TYPE_CHECKING:
    from pathlib import Path

CERT: Final = "listener-cert.pem"
KEY: Final = "listener-key.pem"


def load(cert_path: Path) -> x509.Certificate:
    """The certificate stored at ``cert_path``."""
    return x509.load_pem_x509_certificate(cert_path.read_bytes())


def handshake(server: ssl.SSLContext, cafile: Path, hostname: str) -> ssl.SSLObject:
    """Complete a TLS handshake in memory with a client that trusts only ``cafile``.

    Raises ``ssl.SSLCertVerificationError`` when the certificate does not
    match ``hostname``. Returns the client's side.
    """
    client_ctx = ssl.create_default_context(cafile=str(cafile))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_side = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server_side)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client
    msg = "the handshake did not finish"
    raise AssertionError(msg)


def write_cert(directory: Path, *, not_after: dt.datetime) -> bytes:
    """Write a self-signed certificate valid until ``not_after`` (and its key); return its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old listener")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / KEY).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / KEY).chmod(0o600)
    (directory / CERT).write_bytes(pem)
    (directory / CERT).chmod(0o600)
    return pem


def test_the_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    """The key and certificate are readable by the owner only, in a directory only they can enter."""
    directory = tmp_path / "deep" / "tls"
    _, cert_path = listener_ssl_context(directory)
    assert cert_path == directory / CERT
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) == 0o700
    for name in (CERT, KEY):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600


def test_the_certificate_names_both_loopback_addresses_and_localhost(tmp_path: Path) -> None:
    """SANs: IP 127.0.0.1 and ::1 and DNS localhost; a leaf for server authentication only."""
    _, cert_path = listener_ssl_context(tmp_path / "tls")
    cert = load(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_the_certificate_is_valid_now_for_about_a_year(tmp_path: Path) -> None:
    """It is valid from a few minutes ago for 365 days."""
    before = dt.datetime.now(dt.UTC)
    _, cert_path = listener_ssl_context(tmp_path / "tls")
    cert = load(cert_path)
    assert cert.not_valid_before_utc <= before
    assert before - cert.not_valid_before_utc <= dt.timedelta(minutes=6)
    lifetime = cert.not_valid_after_utc - before
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)


def test_the_private_key_matches_the_certificate(tmp_path: Path) -> None:
    """The stored key is the certificate's own (an unencrypted PKCS#8 EC key)."""
    directory = tmp_path / "tls"
    _, cert_path = listener_ssl_context(directory)
    key = serialization.load_pem_private_key((directory / KEY).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    cert_key = load(cert_path).public_key()
    assert isinstance(cert_key, ec.EllipticCurvePublicKey)
    assert key.public_key().public_numbers() == cert_key.public_numbers()


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1", "localhost"])
def test_a_client_trusting_the_certificate_verifies_every_loopback_name(
    tmp_path: Path, hostname: str
) -> None:
    """A verifying client completes the handshake for each name the browser may use."""
    context, cert_path = listener_ssl_context(tmp_path / "tls")
    client = handshake(context, cert_path, hostname)
    assert client.version() in {"TLSv1.2", "TLSv1.3"}


def test_a_client_asking_for_another_name_is_refused(tmp_path: Path) -> None:
    """The certificate names only loopback: any other host fails verification."""
    context, cert_path = listener_ssl_context(tmp_path / "tls")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(context, cert_path, "example.com")


def test_the_context_refuses_tls_below_1_2(tmp_path: Path) -> None:
    """The listener's context is a server context with TLS 1.2 as its floor."""
    context, _ = listener_ssl_context(tmp_path / "tls")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # the browser sends no client certificate


def test_a_fresh_certificate_is_reused(tmp_path: Path) -> None:
    """A second call keeps the same key and certificate, so the browser's exception still holds."""
    directory = tmp_path / "tls"
    listener_ssl_context(directory)
    cert, key = (directory / CERT).read_bytes(), (directory / KEY).read_bytes()
    listener_ssl_context(directory)
    assert (directory / CERT).read_bytes() == cert
    assert (directory / KEY).read_bytes() == key


def test_a_certificate_with_more_than_a_week_left_is_reused(tmp_path: Path) -> None:
    """Eight days before expiry, the existing certificate is kept."""
    directory = tmp_path / "tls"
    pem = write_cert(directory, not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=8))
    listener_ssl_context(directory)
    assert (directory / CERT).read_bytes() == pem


@pytest.mark.parametrize(
    "left",
    [
        pytest.param(dt.timedelta(days=6), id="six-days-left"),
        pytest.param(-dt.timedelta(days=1), id="expired"),
    ],
)
def test_a_certificate_close_to_expiry_is_remade(tmp_path: Path, left: dt.timedelta) -> None:
    """Within a week of expiry (or past it) a new certificate and key replace the old ones."""
    directory = tmp_path / "tls"
    pem = write_cert(directory, not_after=dt.datetime.now(dt.UTC) + left)
    old_key = (directory / KEY).read_bytes()
    listener_ssl_context(directory)
    assert (directory / CERT).read_bytes() != pem
    assert (directory / KEY).read_bytes() != old_key
    assert load(directory / CERT).not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(
        days=364
    )
    assert stat.S_IMODE((directory / CERT).stat().st_mode) == 0o600


def test_a_damaged_certificate_is_remade(tmp_path: Path) -> None:
    """A certificate file that is not PEM is replaced, not an error."""
    directory = tmp_path / "tls"
    listener_ssl_context(directory)
    (directory / CERT).write_bytes(b"not a certificate")
    context, cert_path = listener_ssl_context(directory)
    assert load(cert_path).subject.rfc4514_string() == "CN=dashtam loopback listener"
    handshake(context, cert_path, "127.0.0.1")


def test_a_missing_key_remakes_both(tmp_path: Path) -> None:
    """A certificate without its key is useless: both are made again, and they match."""
    directory = tmp_path / "tls"
    _, cert_path = listener_ssl_context(directory)
    old = cert_path.read_bytes()
    (directory / KEY).unlink()
    context, cert_path = listener_ssl_context(directory)
    assert cert_path.read_bytes() != old
    assert (directory / KEY).exists()
    handshake(context, cert_path, "::1")


def test_a_missing_certificate_is_remade(tmp_path: Path) -> None:
    """A key without its certificate: both are made again."""
    directory = tmp_path / "tls"
    listener_ssl_context(directory)
    old_key = (directory / KEY).read_bytes()
    (directory / CERT).unlink()
    context, cert_path = listener_ssl_context(directory)
    assert (directory / KEY).read_bytes() != old_key
    handshake(context, cert_path, "localhost")
