"""The TLS front's certificate (mlstack.tls): generated with a CA that signs it for every public name,
made again when the names change (the CA kept), keys private; the user's own files checked."""

from __future__ import annotations

import ipaddress
import ssl
import stat

import pytest
from cryptography import x509

from mlstack.errors import ConfigError
from mlstack.settings import Settings
from mlstack.tls import ensure_certificate


def settings_with(tmp_path, **values) -> Settings:
    return Settings(MLSTACK_PROJECT_DIR=tmp_path, _env_file=None, **values)


def names_in(path) -> set[str]:
    certificate = x509.load_pem_x509_certificate(path.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(name) for name in names.get_values_for_type(x509.DNSName)} | {
        str(address) for address in names.get_values_for_type(x509.IPAddress)
    }


def test_generated_certificate_covers_every_public_name_and_verifies_against_its_ca(tmp_path):
    files = ensure_certificate(settings_with(tmp_path, mlflow_public_hosts="mlflow.example.com, 10.0.0.7"))
    assert names_in(files.cert) == {"localhost", "127.0.0.1", "mlflow.example.com", "10.0.0.7"}
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(files.cert, files.key)  # the key matches the certificate
    chain = x509.load_pem_x509_certificate(files.cert.read_bytes())
    authority = x509.load_pem_x509_certificate(files.ca.read_bytes())
    chain.verify_directly_issued_by(authority)
    assert ipaddress.ip_address("10.0.0.7") in chain.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.IPAddress)


def test_keys_are_private_and_the_ca_key_stays_beside_it(tmp_path):
    files = ensure_certificate(settings_with(tmp_path))
    for key in (files.key, files.ca.with_name("ca-key.pem")):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(files.cert.parent.stat().st_mode) == 0o700


def test_a_new_public_name_makes_a_new_certificate_from_the_same_ca(tmp_path):
    first = ensure_certificate(settings_with(tmp_path, mlflow_public_hosts="old.example.com"))
    ca_before, cert_before = first.ca.read_bytes(), first.cert.read_bytes()
    assert ensure_certificate(settings_with(tmp_path, mlflow_public_hosts="old.example.com")).cert.read_bytes() == (
        cert_before
    ), "unchanged names: the certificate is kept"
    second = ensure_certificate(settings_with(tmp_path, mlflow_public_hosts="new.example.com"))
    assert second.ca.read_bytes() == ca_before, "clients keep trusting the same CA"
    assert "new.example.com" in names_in(second.cert)


def test_your_own_certificate_is_used_as_it_is(tmp_path):
    generated = ensure_certificate(settings_with(tmp_path / "elsewhere"))
    files = ensure_certificate(settings_with(tmp_path, mlflow_tls_cert=generated.cert, mlflow_tls_key=generated.key))
    assert (files.cert, files.key, files.ca) == (generated.cert, generated.key, None)
    assert not (tmp_path / ".mlstack" / "tls").exists()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"mlflow_tls_cert": "cert.pem"}, "set both MLFLOW_TLS_CERT and MLFLOW_TLS_KEY"),
        (
            {"mlflow_tls_cert": "missing.pem", "mlflow_tls_key": "key.pem"},
            r"MLFLOW_TLS_CERT=.*missing.pem: no such file",
        ),
        ({"mlflow_tls_cert": "notes.txt", "mlflow_tls_key": "notes.txt"}, r"MLFLOW_TLS_CERT=.*notes.txt is not a PEM"),
    ],
)
def test_a_wrong_certificate_setting_is_named_with_its_fix(tmp_path, values, message):
    (tmp_path / "notes.txt").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("")
    with pytest.raises(ConfigError, match=message):
        ensure_certificate(settings_with(tmp_path, **values))
