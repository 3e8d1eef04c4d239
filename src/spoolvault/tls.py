"""TLS for IPPS and HTTPS: the operator's certificate, or one generated on first start."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spoolvault.errors import ConfigError
from spoolvault.util.fs import write_atomic

log = logging.getLogger(__name__)

CERT_NAME = "tls/server.crt"
KEY_NAME = "tls/server.key"
VALID_DAYS = 3650


def _names(extra: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen = set()
    for name in ["localhost", socket.gethostname(), socket.getfqdn(), "127.0.0.1", "::1", *extra]:
        if not name or name in seen or name in ("0.0.0.0", "::"):  # noqa: S104
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def generate_self_signed(cert_path: Path, key_path: Path, hosts: list[str]) -> None:
    """A P-256 self-signed server certificate for this host's names and addresses."""
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "spoolvault"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"spoolvault on {host}"[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def server_certificate(
    data_dir: Path, cert: Path | None, key: Path | None, hosts: list[str]
) -> tuple[Path, Path]:
    """The certificate and key to serve: the operator's, else ours (generated once)."""
    if (cert is None) != (key is None):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if cert is not None and key is not None:
        for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
            if not path.is_file():
                raise ConfigError(f"{flag} {path} does not exist or is not a file")
        try:
            x509.load_pem_x509_certificate(cert.read_bytes())
        except ValueError as exc:
            raise ConfigError(f"--tls-cert {cert} is not a PEM certificate: {exc}") from None
        return cert, key
    cert_path, key_path = data_dir / CERT_NAME, data_dir / KEY_NAME
    if not (cert_path.is_file() and key_path.is_file()):
        generate_self_signed(cert_path, key_path, hosts)
        log.info("generated a self-signed TLS certificate %s", cert_path)
    return cert_path, key_path
