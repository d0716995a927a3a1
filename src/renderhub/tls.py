"""The hub's local certificate authority and its server certificate."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from renderhub.datadir import private_dir, tighten, write_secret

CA_LIFETIME = timedelta(days=3650)
CERT_LIFETIME = timedelta(days=825)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "RenderHub"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])  # fmt: skip


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def ensure_ca(tls_dir: Path, now: datetime) -> Path:
    """The local certificate authority, created once: ca.pem is the one file clients trust."""
    private_dir(tls_dir)  # the keys are 0600 and the folder 0700, whatever the umask
    ca_pem, ca_key_pem = tls_dir / "ca.pem", tls_dir / "ca-key.pem"
    if ca_pem.exists() and ca_key_pem.exists():
        tighten(ca_key_pem)  # an earlier hub's, written with its umask
        return ca_pem
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("RenderHub local CA"))
        .issuer_name(_name("RenderHub local CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    write_secret(ca_key_pem, _pem_key(ca_key))
    ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for stale in tls_dir.glob("*.pem"):  # certificates from an earlier CA would no longer verify
        if stale.name not in ("ca.pem", "ca-key.pem"):
            stale.unlink()
    return ca_pem


def install_ca(tls_dir: Path, cert_pem: str, key_pem: str) -> bool:
    """Make this CA the local one (the one replicas share); True when it replaced another."""
    ca_pem, ca_key_pem = tls_dir / "ca.pem", tls_dir / "ca-key.pem"
    if ca_pem.exists() and ca_pem.read_text() == cert_pem:
        return False
    private_dir(tls_dir)
    for stale in tls_dir.glob("*.pem"):  # certificates from the replaced CA would no longer verify
        stale.unlink()
    write_secret(ca_key_pem, key_pem.encode())
    ca_pem.write_text(cert_pem)
    return True


def ensure_certificate(tls_dir: Path, stem: str, hosts: list[str], now: datetime) -> tuple[Path, Path]:
    """A server certificate from the local CA for these hosts, made anew whenever they change.
    Returns (STEM.pem, STEM-key.pem)."""
    ensure_ca(tls_dir, now)
    cert_pem, key_pem = tls_dir / f"{stem}.pem", tls_dir / f"{stem}-key.pem"
    wanted = sorted(set(hosts))
    if cert_pem.exists() and key_pem.exists() and _names(cert_pem) == wanted:
        tighten(key_pem)
        return cert_pem, key_pem
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _issue(tls_dir, key.public_key(), wanted, now)
    write_secret(key_pem, _pem_key(key))
    cert_pem.write_bytes(cert)
    return cert_pem, key_pem


def issue_certificate(tls_dir: Path, public_key_pem: bytes, hosts: list[str], now: datetime) -> bytes:
    """A server certificate (PEM) from the local CA for a key made elsewhere: a render server on a cluster
    node keeps its private key there, and the CA's key never leaves the hub."""
    ensure_ca(tls_dir, now)
    public_key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ValueError("render server keys are elliptic-curve keys")
    return _issue(tls_dir, public_key, sorted(set(hosts)), now)


def _issue(tls_dir: Path, public_key: ec.EllipticCurvePublicKey, hosts: list[str], now: datetime) -> bytes:
    ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    signer = serialization.load_pem_private_key((tls_dir / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CERT_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_certificates(tls_dir: Path, hosts: list[str], now: datetime) -> tuple[Path, Path, Path]:
    """The CA and the hub's certificate. Returns (ca.pem, hub.pem, hub-key.pem)."""
    cert, key = ensure_certificate(tls_dir, "hub", hosts, now)
    return tls_dir / "ca.pem", cert, key


def _names(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted([str(n.value) for n in san])
