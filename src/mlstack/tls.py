"""The certificate of the TLS front (Caddy) before the MLflow server.

Either the user's own (MLFLOW_TLS_CERT and MLFLOW_TLS_KEY, PEM files), or one mlstack generates in
the state folder: a private certificate authority (`ca.pem`, the file clients trust through
MLFLOW_TRACKING_SERVER_CERT_PATH) that signs a server certificate for localhost, 127.0.0.1 and every
name of MLFLOW_PUBLIC_HOSTS. The server certificate is made again when those names change or it
nears its end; the authority is kept, so clients keep trusting it. Private keys are written 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlstack.envfile import write_private
from mlstack.errors import ConfigError
from mlstack.settings import Settings

CA_YEARS = 10
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    #: The authority clients trust (None: the user's certificate, signed by whoever they chose).
    ca: Path | None


def server_names(settings: Settings) -> list[str]:
    """The names and addresses the server certificate covers."""
    return list(dict.fromkeys(["localhost", "127.0.0.1", *settings.public_hosts]))


def ensure_certificate(settings: Settings) -> TlsFiles:
    """The certificate and key the TLS front serves: the user's, checked, or generated (see the module)."""
    if settings.mlflow_tls_cert or settings.mlflow_tls_key:
        return _users_certificate(settings)
    folder = settings.state_path / "tls"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles(folder / "server.pem", folder / "server-key.pem", folder / "ca.pem")
    ca_key_path = folder / "ca-key.pem"
    if not (files.ca.is_file() and ca_key_path.is_file()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        write_private(ca_key_path, _key_pem(ca_key))
        files.ca.write_bytes(_authority(ca_key).public_bytes(serialization.Encoding.PEM))
    if not _still_good(files.cert, server_names(settings)):
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(files.ca.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        write_private(files.key, _key_pem(key))
        files.cert.write_bytes(_server_certificate(key, ca, ca_key, server_names(settings)))
    return files


def _users_certificate(settings: Settings) -> TlsFiles:
    cert, key = (
        settings.project_dir / path if path else None for path in (settings.mlflow_tls_cert, settings.mlflow_tls_key)
    )
    if not (cert and key):
        raise ConfigError("set both MLFLOW_TLS_CERT and MLFLOW_TLS_KEY (PEM files), or neither to have one generated")
    for name, path in (("MLFLOW_TLS_CERT", cert), ("MLFLOW_TLS_KEY", key)):
        if not path.is_file():
            raise ConfigError(
                f"{name}={path}: no such file; point it at your PEM file, or unset both to have one generated"
            )
    try:
        x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        raise ConfigError(f"MLFLOW_TLS_CERT={cert} is not a PEM certificate") from None
    return TlsFiles(cert.resolve(), key.resolve(), None)


def _still_good(path: Path, names: list[str]) -> bool:
    if not path.is_file():
        return False
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    covered = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    has = {str(value) for value in covered.get_values_for_type(x509.DNSName)}
    has |= {str(value) for value in covered.get_values_for_type(x509.IPAddress)}
    renew_at = certificate.not_valid_after_utc - datetime.timedelta(days=RENEW_DAYS)
    return set(names) <= has and datetime.datetime.now(datetime.UTC) < renew_at


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _authority(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlstack local CA")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def mutual_tls(names: list[str]) -> tuple[bytes, bytes, str]:
    """A new authority and one certificate it signs for `names`, good as server and as client (the
    mutual TLS of one process's own services): the authority's PEM, the certificate's, its key's."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _authority(ca_key)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    certificate = _server_certificate(key, ca, ca_key, names, usages)
    return ca.public_bytes(serialization.Encoding.PEM), certificate, _key_pem(key)


def _server_certificate(key, ca: x509.Certificate, ca_key, names: list[str], usages: list | None = None) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    alternatives = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[-1])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages or [ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)
