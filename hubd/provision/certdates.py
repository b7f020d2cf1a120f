"""The end dates of the certificates the hub depends on, read from their PEM files.

Which files: the CA and client certificate of every ``[channels.X]`` broker in the hub's
configuration (an expired client certificate or CA cuts the hub off that broker), and
every file or folder in ``[expiry] certificates``: point it at the folder
``hubctl broker-config --out`` wrote to watch the brokers' server certificates and the
organisations' client certificates too. Folders are searched for ``*.pem`` and ``*.crt``;
private keys are never opened. The judgement (what warns) is :mod:`schemas.expiry`'s.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubd.config import HubConfig
from schemas.expiry import Deadline, Subject

MAX_CERT_FILE = 1024 * 1024  # a PEM bundle larger than this is not a certificate file
CERT_SUFFIXES = (".pem", ".crt")


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A certificate file that could not be read: it cannot be watched either."""

    file: str
    problem: str

    def sentence(self) -> str:
        return f"certificate file {self.file} cannot be checked for expiry: {self.problem}"


def certificate_files(config: HubConfig) -> list[Path]:
    """The files to watch, each once, in a stable order."""
    named: list[Path] = []
    for broker in config.channels.values():
        named += [p for p in (broker.ca, broker.cert) if p is not None]
    for path in config.expiry.certificates:
        if path.is_dir():
            named += sorted(p for p in path.rglob("*") if p.suffix in CERT_SUFFIXES)
        else:
            named.append(path)
    return list(dict.fromkeys(named))


def read_deadlines(files: Iterable[Path]) -> tuple[list[Deadline], list[Unreadable]]:
    """A Deadline per certificate in ``files`` (a bundle gives several)."""
    deadlines: list[Deadline] = []
    problems: list[Unreadable] = []
    for path in files:
        try:
            if path.stat().st_size > MAX_CERT_FILE:
                raise ValueError("larger than 1 MiB")
            certs = x509.load_pem_x509_certificates(path.read_bytes())
        except OSError as exc:
            problems.append(Unreadable(str(path), exc.strerror or str(exc)))
            continue
        except ValueError as exc:
            problems.append(Unreadable(str(path), f"not a PEM certificate ({exc})"))
            continue
        deadlines.extend(
            Deadline(
                Subject.CERTIFICATE,
                _name(cert),
                int(cert.not_valid_after_utc.timestamp() * 1000),
                kind=_kind(cert),
                source=str(path),
            )
            for cert in certs
        )
    return deadlines, problems


def _name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _kind(cert: x509.Certificate) -> str:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return "CA"
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "certificate"
    if ExtendedKeyUsageOID.SERVER_AUTH in usage:
        return "server"
    if ExtendedKeyUsageOID.CLIENT_AUTH in usage:
        return "client"
    return "certificate"
