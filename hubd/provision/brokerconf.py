"""Mosquitto configuration, ACL and certificates generated from the topology.

``hubctl broker-config --out DIR`` writes, for each channel (classified networks are
physically separate, so each channel gets its own broker, CA and keys)::

    DIR/<channel>/mosquitto.conf   TLS listener, client certificates required, the
                                   certificate's CN is the MQTT user name, no anonymous
                                   access, max_packet_size, persistence
    DIR/<channel>/acl              the topic layout of schemas.topics, per identity
    DIR/<channel>/ca.pem, ca.key   the channel's certificate authority (key 0600)
    DIR/<channel>/server.pem, server.key
    DIR/<channel>/clients/<id>.pem, <id>.key   the hub and each organisation on the channel
    DIR/<channel>/clients/<hub>~<name>.pem|key with --hub-replicas: each hub replica's own

The ACL is the topic layout and nothing else: a spoke writes only its own up and presence
topics and reads only its own down topic, the directory and the ledger's checkpoints; the
hub reads every up and presence topic and writes every down topic, the directory and the
ledger topic. Every identity is checked
with :func:`schemas.ids.check_org_id` before it becomes a topic level or a file name.
Hub replicas get identities of their own (:mod:`hubd.provision.identities`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hubd.provision.identities import (
    REPLICA_SEPARATOR,
    check_identity,
    replica_identities,
    replica_identity,
    replica_lines,
)
from runtime.clock import now_ms
from runtime.files import PUBLIC_MODE, atomic_write, write_private
from schemas import codec, topics
from schemas.ids import check_org_id
from schemas.topology import Topology

# The largest MQTT packet the exchange sends: the retained, signed directory, plus headroom
# for the MQTT fixed header and topic.
MAX_PACKET = codec.DIRECTORY_FRAME_LIMITS.max_size + 64 * 1024


@dataclass(frozen=True, slots=True)
class Listener:
    host: str  # the name (or address) clients connect to; goes into the server certificate
    port: int = 8883
    # The address Mosquitto listens on (--listen). By default every IPv4 interface: a broker
    # serves other servers, and only holders of a certificate of the channel's CA get in.
    bind: str = "0.0.0.0"  # noqa: S104


class ChannelFiles:
    """A channel folder's CA and its clients' certificates, the same for either engine."""

    __slots__ = ()
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, identity: str) -> Path:
        return self.folder / "clients" / f"{identity}.pem"

    def key(self, identity: str) -> Path:
        return self.folder / "clients" / f"{identity}.key"


@dataclass(frozen=True, slots=True)
class Issued(ChannelFiles):
    """Where one broker's files were written."""

    name: str  # the folder under --out: a channel id, or "shared" for one broker
    channels: tuple[str, ...]
    folder: Path
    identities: tuple[str, ...]  # the hub first, then each organisation on the channels
    issued: tuple[str, ...] = ()  # certificates (re)issued by this run; the rest were kept
    replicas: tuple[str, ...] = ()  # each hub replica's identity (--hub-replicas)

    @property
    def broker(self) -> Path:
        """What goes to the broker's host: mosquitto.conf, acl, ca.pem, server.*."""
        return self.folder / "broker"

    @property
    def conf(self) -> Path:
        return self.broker / "mosquitto.conf"


DEFAULT_BIND = "0.0.0.0"  # noqa: S104 - see Listener.bind


def _applies(items: Sequence[str], name: str, channels: Sequence[str], default: str) -> str:
    """The ``CHANNEL=VALUE`` for broker ``name`` (or one of its channels), else the last
    bare ``VALUE``, else ``default``."""
    chosen, specific = default, False
    for item in items:
        key, _, value = item.rpartition("=")
        if key and key != name and key not in channels:
            continue
        if key or not specific:
            chosen, specific = value, bool(key)
    return chosen


def listener_for(
    hosts: Sequence[str], name: str, channels: Sequence[str], binds: Sequence[str] = ()
) -> Listener:
    """The --host (``CHANNEL=HOST[:PORT]`` or ``HOST[:PORT]``) and the --listen
    (``CHANNEL=ADDRESS`` or ``ADDRESS``) that apply to broker ``name``."""
    chosen = _applies(hosts, name, channels, "localhost")
    host, _, port = chosen.rpartition(":") if ":" in chosen else (chosen, "", "8883")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--host {chosen!r}: write HOST:PORT, e.g. broker.govnet.example:8883")
    bind = _applies(binds, name, channels, DEFAULT_BIND)
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        raise ValueError(
            f"--listen {bind!r}: give the IP address the broker listens on, e.g. 10.1.2.3 "
            "(one interface), 0.0.0.0 (every IPv4 interface) or :: (IPv6 too)"
        ) from None
    return Listener(host, int(port), str(address))


def members(topology: Topology, channels: Sequence[str]) -> tuple[str, ...]:
    """The broker's clients besides the hub: the organisations on any of ``channels``, in
    topology order, then the member hubs whose link has one of them (a member hub's uplink
    connects under its hub id, with a spoke's topics: hubd.engine.uplink)."""
    return tuple(c for c, _name, _channels in clients(topology, channels))


def clients(
    topology: Topology, channels: Sequence[str]
) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    """(id, Chinese name, channels) of each of :func:`members`."""
    orgs = [(o.id, o.name_zh, o.channels) for o in topology.orgs]
    hubs = [(h.id, h.name_zh, h.channels) for h in topology.hubs if h.role == "member"]
    return tuple(
        (client, name, on) for client, name, on in (*orgs, *hubs) if any(c in on for c in channels)
    )


def acl_text(topology: Topology, channels: Sequence[str], replicas: Sequence[str] = ()) -> str:
    """The Mosquitto ACL for a broker carrying ``channels``: each identity gets its topics;
    each of ``replicas`` (hub replica identities, :func:`replica_identities`) the hub's."""
    hub = check_org_id(topology.hub.id, what="hub id")
    lines = [
        f"# Mosquitto ACL for channel(s) {', '.join(channels)}, generated by 'hubctl",
        "# broker-config' from the topology. Identities are certificate CNs",
        "# (use_identity_as_username). Anything not listed is denied.",
    ]
    hub_topics = [
        *(f"topic read {t}" for c in channels for t in topics.hub_subscriptions(c)),
        *(f"topic write {t}" for c in channels for t in topics.hub_publications(c)),
    ]
    lines += ["", f"# the hub ({topology.hub.name_zh})", f"user {hub}", *hub_topics]
    for identity in replicas:
        name = identity.partition(REPLICA_SEPARATOR)[2]
        if replica_identity(hub, name) != identity:
            raise ValueError(f"{identity!r} is not a replica identity of the hub {hub}")
        lines += ["", f"# hub replica {name}: the hub's topics", f"user {identity}", *hub_topics]
    for org_id, name_zh, on in clients(topology, channels):
        lines += ["", f"# {org_id} ({name_zh})", f"user {check_org_id(org_id)}"]
        for channel in channels:
            if channel in on:
                lines += [
                    f"topic write {topics.up(channel, org_id)}",
                    f"topic write {topics.presence(channel, org_id)}",
                    f"topic read {topics.down(channel, org_id)}",
                    f"topic read {topics.directory(channel)}",
                    f"topic read {topics.dirroot(channel)}",
                    f"topic read {topics.ledger(channel)}",
                ]
    return "\n".join(lines) + "\n"


def conf_text(
    folder: Path,
    listener: Listener,
    *,
    persistence: Path,
    user: str | None,
    one_channel: bool = True,
    notes: Sequence[str] = (),
) -> str:
    """mosquitto.conf; ``notes`` are comment lines put after the heading."""
    return "\n".join(
        [
            "# Mosquitto 2.x for govxchg, generated by 'hubctl broker-config'. A whole broker",
            "# configuration: start it with 'mosquitto -c THIS_FILE' (on Debian, a systemd",
            "# override of mosquitto.service's ExecStart), not from conf.d, whose main file",
            "# already sets persistence_location.",
            *notes,
            f"listener {listener.port} {listener.bind}",
            f"cafile {folder / 'ca.pem'}",
            f"certfile {folder / 'server.pem'}",
            f"keyfile {folder / 'server.key'}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            # The client id is the certificate's CN too: nobody can take over (and so
            # disconnect) another identity's session. Only where each identity holds one
            # connection, i.e. one channel per broker (a spoke connects once per channel).
            *(["use_username_as_clientid true"] if one_channel else []),
            "allow_anonymous false",
            f"acl_file {folder / 'acl'}",
            f"max_packet_size {MAX_PACKET}",
            "set_tcp_nodelay true",
            "max_queued_messages 200000",
            "max_inflight_messages 1000",
            "persistence true",
            f"persistence_location {persistence}/",
            *([f"user {user}"] if user else []),
            "",
        ]
    )


def _name(common: str, unit: str | None = None) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "govxchg"),
            *([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit)] if unit else []),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _sign(
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey],
    *,
    now: dt.datetime,
    days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    until: dt.datetime | None = None,
) -> x509.Certificate:
    end = now + dt.timedelta(days=days)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0])
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(end if until is None else min(end, until))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer[1], hashes.SHA256())


def _san(*hosts: str) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for item in {*hosts, "localhost", "127.0.0.1"}:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            names.append(x509.DNSName(item))
    return x509.SubjectAlternativeName(sorted(names, key=str))


def _give(user: str, *paths: Path) -> None:
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ValueError(
            f"--broker-user {user}: no such user on this machine; give the broker's user "
            "(Debian's mosquitto package runs as 'mosquitto')"
        ) from exc
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


RENEW_BEFORE = dt.timedelta(days=30)
CA_DAYS = 3650  # a CA outlives the certificates it issues; they never outlive it


def _new_ca(
    name: x509.Name, key: ec.EllipticCurvePrivateKey, *, now: dt.datetime, days: int
) -> x509.Certificate:
    return _sign(
        name,
        key.public_key(),
        (name, key),
        now=now,
        days=days,
        extensions=[
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
        ],
    )


def _load_ca(folder: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca.key'} is not an EC key written by hubctl broker-config")
    return key, x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())


def _still_good(
    cert_path: Path, key_path: Path, ca: x509.Certificate, *, now: dt.datetime, host: str | None
) -> bool:
    """An existing certificate signed by ``ca``, valid 30 days more, for ``host`` if given."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        cert.verify_directly_issued_by(ca)
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if key.public_key() != cert.public_key():  # a crash between writing the two
            return False
        if host is not None:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if host not in [str(n.value) for n in names]:
                return False
    except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    return cert.not_valid_after_utc - now >= RENEW_BEFORE


def _ca_for(
    folder: Path, name: x509.Name, *, now: dt.datetime, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The broker's CA: the one already there (refused if it is due), or a new one."""
    if (folder / "ca.key").exists() and (folder / "ca.pem").exists():
        ca_key, ca_cert = _load_ca(folder)  # keep the CA every issued certificate chains to
        if ca_cert.not_valid_after_utc - now < RENEW_BEFORE:
            raise ValueError(
                f"the CA in {folder / 'ca.pem'} ends on {ca_cert.not_valid_after_utc:%Y-%m-%d}"
                "; every certificate of this broker ends with it. Move the folder aside and "
                "run again for a new CA, then deploy its ca.pem and certificates everywhere"
            )
    elif (folder / "ca.pem").exists() or any((folder / "clients").glob("*.pem")):
        raise ValueError(
            f"{folder / 'ca.key'} is missing, but certificates it issued are here: a new CA "
            "would cut off every spoke that holds them. Put the CA key back (it stays with "
            "the operator), or move the folder aside to start a new CA on purpose"
        )
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _new_ca(name, ca_key, now=now, days=max(CA_DAYS, days))
        write_private(folder / "ca.key", _pem_key(ca_key), overwrite=True)
        atomic_write(folder / "ca.pem", _pem_cert(ca_cert), mode=PUBLIC_MODE)
    return ca_key, ca_cert


def issue_leaf(
    cert_path: Path,
    key_path: Path,
    subject: x509.Name,
    authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    usages: Sequence[x509.ObjectIdentifier],
    hosts: Sequence[str] = (),
    now: dt.datetime,
    days: int,
    renew: bool = False,
) -> bool:
    """Issue ``subject`` a key and certificate from ``authority`` unless the one already
    there is still good (``_still_good``: for each of ``hosts``); True if it was issued."""
    ca_key, ca_cert = authority
    checked: Sequence[str | None] = tuple(hosts) or (None,)
    if not renew and all(
        _still_good(cert_path, key_path, ca_cert, now=now, host=host) for host in checked
    ):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage(list(usages)), False),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
    ]
    if hosts:
        extensions.append((_san(*hosts), False))
    cert = _sign(
        subject,
        key.public_key(),
        (ca_cert.subject, ca_key),
        now=now,
        days=days,
        extensions=extensions,
        until=ca_cert.not_valid_after_utc,
    )
    write_private(key_path, _pem_key(key), overwrite=True)
    atomic_write(cert_path, _pem_cert(cert), mode=PUBLIC_MODE)
    return True


def issue_clients(
    folder: Path,
    identities: Sequence[str],
    authority: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    now: dt.datetime,
    days: int,
    renew: bool,
) -> list[str]:
    """``folder/clients/<id>.pem|key`` for each identity (CN = the id; an organisation
    id or a hub replica's identity); those issued."""
    return [
        identity
        for identity in identities
        if check_identity(identity)
        and issue_leaf(
            folder / "clients" / f"{identity}.pem",
            folder / "clients" / f"{identity}.key",
            _name(identity),
            authority,
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,),
            now=now,
            days=days,
            renew=renew,
        )
    ]


def write_broker(
    topology: Topology,
    channels: Sequence[str],
    out: Path,
    listener: Listener,
    *,
    name: str | None = None,
    days: int = 825,
    install: Path | None = None,
    persistence: Path | None = None,
    broker_user: str | None = "mosquitto",
    renew: bool = False,
    now: dt.datetime | None = None,
    replicas: Sequence[str] = (),
) -> Issued:
    """Write one broker's configuration, ACL and certificates under ``out/<name>``.

    Layout: ``broker/`` goes to the broker's host (mosquitto.conf, acl, ca.pem, server
    certificate and key, data/); ``clients/<id>.pem|key`` go to the hub and to each
    organisation's server; ``ca.pem`` is what every client trusts; ``ca.key`` (0600) stays
    with the operator, off the broker, to issue certificates later.

    ``install`` is where ``broker/`` will live on the broker's host (the paths in
    mosquitto.conf point there; default: where it is written). Mosquitto started as root
    drops to ``broker_user`` before it reads the server key, so when this runs as root the
    server key and the persistence folder are given to that user.

    Run again (a new organisation, a new channel member), it keeps the CA and every
    certificate that is still good for more than 30 days, so nothing already deployed
    stops working; ``renew`` re-issues every certificate but the CA's.

    ``replicas`` are hub replica names (``[replicas] name``): each gets a certificate of
    its own, ``clients/<hub id>~<name>.pem|key``, with the hub's topics in the ACL.
    """
    channels = tuple(channels)
    if not channels:
        raise ValueError("name at least one channel")
    for channel in channels:
        check_org_id(channel, what="channel id")
        if topology.channel(channel) is None:
            known = ", ".join(c.id for c in topology.channels)
            raise ValueError(f"channel {channel!r} is not in the topology (channels: {known})")
    if days < 1:
        raise ValueError(f"--days must be at least 1, not {days}")
    name = check_org_id(name or channels[0], what="broker name")
    now = now or dt.datetime.fromtimestamp(now_ms() / 1000, dt.UTC)
    folder = (out / name).resolve()
    broker = folder / "broker"
    identities = (check_org_id(topology.hub.id, what="hub id"), *members(topology, channels))
    for identity in identities:
        check_org_id(identity)
    replica_ids = replica_identities(identities[0], replicas)
    (folder / "clients").mkdir(parents=True, exist_ok=True)
    (broker / "data").mkdir(parents=True, exist_ok=True)

    ca_name = _name(f"govxchg {name} CA")
    ca_key, ca_cert = _ca_for(folder, ca_name, now=now, days=days)
    atomic_write(broker / "ca.pem", _pem_cert(ca_cert), mode=PUBLIC_MODE)

    issued: list[str] = []
    authority = (ca_key, ca_cert)
    if issue_leaf(
        broker / "server.pem",
        broker / "server.key",
        _name(listener.host),
        authority,
        usages=(ExtendedKeyUsageOID.SERVER_AUTH,),
        hosts=(listener.host,),
        now=now,
        days=days,
        renew=renew,
    ):
        issued.append(listener.host)
    issued += issue_clients(
        folder, (*identities, *replica_ids), authority, now=now, days=days, renew=renew
    )

    acl = acl_text(topology, channels, replica_ids)
    atomic_write(broker / "acl", acl.encode(), mode=PUBLIC_MODE)
    home = broker if install is None else install
    text = conf_text(
        home,
        listener,
        persistence=persistence or home / "data",
        user=broker_user,
        one_channel=len(channels) == 1,
        notes=replica_lines(folder, replica_ids, channels),
    )
    atomic_write(broker / "mosquitto.conf", text.encode(), mode=PUBLIC_MODE)
    if broker_user and os.geteuid() == 0:
        _give(broker_user, broker / "server.key", broker / "data")
    return Issued(name, channels, folder, identities, tuple(issued), replica_ids)
