"""Key material for a Flower federation: a private CA, the SuperLink's certificate, SuperNode keys.

``distgan flower local`` makes all of it for loopback; ``distgan flower keys`` makes it for hosts of
your choosing (the server certificate names every address the SuperNodes dial). Uses the
``cryptography`` package, which flwr already depends on. Private keys are written ``0600``.

SuperNode authentication keys are ECDSA P-384 in OpenSSH format, as ``flower-supernode
--auth-supernode-private-key`` and ``flwr supernode register`` read them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
CA_CERTIFICATE = "ca.crt"
CA_KEY = "ca.key"
"""The CA's private key: stays on the coordinator's host, offline if possible; it signs new SuperLink certificates."""


@dataclass(frozen=True)
class ServerCertificates:
    ca_certificate: Path
    """Give this to every SuperNode and to the ``flwr`` CLI (root-certificates)."""
    certificate: Path
    key: Path


@dataclass(frozen=True)
class NodeKey:
    private_key: Path
    """Stays on the SuperNode's host (``--auth-supernode-private-key``)."""
    public_key: Path
    """Registered with the SuperLink (``flwr supernode register``)."""


def _write_private(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(payload)


def _subject_alternative_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_server_certificates(folder: Path, hosts: list[str]) -> ServerCertificates:
    """A self-signed CA (its key kept in ``ca.key``, ``0600``) and a SuperLink certificate valid for
    ``hosts`` (IP addresses or names)."""
    if not hosts:
        raise ValueError("the SuperLink certificate needs at least one host name or IP address")
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "distgan federation CA")])
    ca_certificate = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CA_CERTIFICATE).write_bytes(ca_certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(folder / CA_KEY, ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    return issue_server_certificate(folder, hosts)


def issue_server_certificate(folder: Path, hosts: list[str]) -> ServerCertificates:
    """A new SuperLink certificate for ``hosts``, signed by the CA kept in ``folder`` (``ca.crt``,
    ``ca.key``): add a host name later without new key material for the SuperNodes (they keep
    trusting ``ca.crt``). Replaces ``server.pem`` and ``server.key``."""
    if not hosts:
        raise ValueError("the SuperLink certificate needs at least one host name or IP address")
    try:
        ca_certificate = x509.load_pem_x509_certificate((folder / CA_CERTIFICATE).read_bytes())
        ca_key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    except FileNotFoundError as error:
        raise ValueError(f"{folder}: no CA to sign with ({error.filename} missing; folders made before the CA key "
                         "was kept need new keys: distgan flower keys)") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{folder / CA_KEY}: not an EC private key, so not a CA distgan flower keys made")
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now - datetime.timedelta(minutes=5)
    end = min(now + datetime.timedelta(days=VALID_DAYS), ca_certificate.not_valid_after_utc)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_certificate.subject).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    files = ServerCertificates(folder / CA_CERTIFICATE, folder / "server.pem", folder / "server.key")
    files.certificate.write_bytes(server_certificate.public_bytes(serialization.Encoding.PEM))
    _write_private(files.key, server_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return files


def make_node_key(folder: Path, name: str) -> NodeKey:
    """An ECDSA P-384 key pair for SuperNode authentication."""
    key = ec.generate_private_key(ec.SECP384R1())
    files = NodeKey(folder / name, folder / f"{name}.pub")
    _write_private(files.private_key, key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.OpenSSH,
                                                       serialization.NoEncryption()))
    files.public_key.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                               serialization.PublicFormat.OpenSSH) + b"\n")
    return files
