"""Certificates and keys for the local control plane, generated fresh for every start.

kube-apiserver only serves TLS, authenticates clients by certificate or token, and signs
ServiceAccount tokens with a key of its own; a throwaway PKI per control plane keeps tests
isolated and nothing secret is ever committed. Keys are ECDSA P-256: generation takes
milliseconds (an RSA-2048 key takes ~50-100 ms each on this machine) and every Kubernetes
component accepts them.

    ca.crt / ca.key            the cluster CA (serving and client certificates)
    apiserver.crt / .key       serving certificate, SANs: 127.0.0.1, ::1, localhost, the
                               bind address, and the in-cluster names of the `kubernetes`
                               Service
    sa.key / sa.pub            ServiceAccount token signing key pair
    admin.crt / admin.key      client certificate, O=system:masters (full access)
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

# Long enough for any test session or lab run, short enough that a leaked file is harmless.
VALIDITY = datetime.timedelta(days=7)
# Clock skew between this host and the API server's view of "now" is zero (same host), but a
# certificate that starts exactly now can fail a check made a few ms earlier; backdate a bit.
BACKDATE = datetime.timedelta(minutes=5)

# First address of the primary Service range 198.19.0.0/16: the `kubernetes` Service's
# ClusterIP, which in-cluster clients would dial.
KUBERNETES_SERVICE_IP = "198.19.0.1"
SERVICE_DNS_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files written by `write_pki`."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path
    admin_cert: Path
    admin_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
    )


def _leaf(
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def serving_sans(bind_address: str) -> list[x509.GeneralName]:
    """Subject alternative names of the serving certificate for a given bind address."""
    ips = {"127.0.0.1", "::1", KUBERNETES_SERVICE_IP}
    if bind_address not in ("0.0.0.0", "::"):
        ips.add(str(ipaddress.ip_address(bind_address)))
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [x509.DNSName(n) for n in SERVICE_DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in sorted(ips)]
    return names


def client_certificate(*, pki: Pki, common_name: str, organization: str | None) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a client certificate signed by the cluster CA."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    cert, key = _leaf(
        ca_cert=ca_cert, ca_key=ca_key,
        subject=_name(common_name, organization), usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return _cert_pem(cert), _key_pem(key)


def write_pki(directory: Path, *, bind_address: str) -> Pki:
    """Generate the whole PKI into `directory` (mode 0700) and return the file paths."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt", ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt", serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key", sa_pub=directory / "sa.pub",
        admin_cert=directory / "admin.crt", admin_key=directory / "admin.key",
    )
    ca_key = _key()
    ca_subject = _name("raylb-local-ca")
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=False, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki.ca_cert.write_bytes(_cert_pem(ca_cert))
    pki.ca_key.write_bytes(_key_pem(ca_key))

    serving, serving_key = _leaf(
        ca_cert=ca_cert, ca_key=ca_key, subject=_name("kube-apiserver"),
        usage=ExtendedKeyUsageOID.SERVER_AUTH, san=serving_sans(bind_address),
    )
    pki.serving_cert.write_bytes(_cert_pem(serving))
    pki.serving_key.write_bytes(_key_pem(serving_key))

    sa_key = _key()
    pki.sa_key.write_bytes(_key_pem(sa_key))
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    cert_pem, key_pem = client_certificate(pki=pki, common_name="raylb-admin", organization="system:masters")
    pki.admin_cert.write_bytes(cert_pem)
    pki.admin_key.write_bytes(key_pem)
    for path in (pki.ca_key, pki.serving_key, pki.sa_key, pki.admin_key):
        path.chmod(0o600)
    return pki
