"""The loopback listener's self-signed certificate, made with `cryptography` and kept 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from typing import TYPE_CHECKING, Final

from dashtam_cli.core.vault.files import ensure_private_dir, write_private_file

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["listener_ssl_context"]

_VALIDITY: Final = dt.timedelta(days=365)
_RENEW_BEFORE: Final = dt.timedelta(days=7)


def _make(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dashtam loopback listener")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _fresh(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > _RENEW_BEFORE


def listener_ssl_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """Return a server TLS context for the listener, and the certificate's path.

    The certificate (SAN IP 127.0.0.1 and ::1, DNS localhost) and its key are
    kept 0600 in ``directory`` (0700) and remade when close to expiry, so the
    browser's warning can be accepted once rather than on every login.
    """
    ensure_private_dir(directory)
    cert_path = directory / "listener-cert.pem"
    key_path = directory / "listener-key.pem"
    if not (key_path.exists() and _fresh(cert_path)):
        _make(cert_path, key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path
