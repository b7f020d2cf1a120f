"""Who connects to a channel's broker besides the organisations: the hub's replicas.

Hub replicas (``[replicas] enabled``) each connect to the broker themselves; with the
hub's one certificate they would share one client id (``use_username_as_clientid``) and
take each other's session over, forever. ``--hub-replicas a,b`` gives each its own
identity ``<hub id>~<name>`` with the hub's permissions: ``~`` is outside organisation
ids (and outside replica names), so no organisation can be given, or be mistaken for, a
replica's name; neither Mosquitto (user names, ACL ``user`` lines) nor NATS (an RFC 2253
subject, which escapes only ``,+"\\<>;`` and a leading ``#``) gives it a meaning.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from schemas.ids import check_org_id

# A hub replica's name, the pattern of ``[replicas] name`` (hubd/config.py Replicas)
REPLICA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
# Between the hub id and a replica's name: outside organisation ids and replica names
REPLICA_SEPARATOR = "~"


def replica_identity(hub_id: str, name: str) -> str:
    """The certificate CN (Mosquitto user, NATS subject's CN) of hub replica ``name``."""
    if not isinstance(name, str) or not REPLICA_NAME.fullmatch(name):
        raise ValueError(
            f"副本名 {name!r:.60} 不可用：请用 1-40 个字母、数字、'.'、'_'、'-'，以字母或数字"
            f"开头，与该副本 [replicas] name 相同 / --hub-replicas: the replica name "
            f"{name!r:.60} is not one [replicas] name allows; give 1-40 of A-Z, a-z, 0-9, "
            "'.', '_' and '-', starting with a letter or digit, as in that replica's "
            "[replicas] name (e.g. --hub-replicas a,b)"
        )
    return f"{check_org_id(hub_id, what='hub id')}{REPLICA_SEPARATOR}{name}"


def replica_identities(hub_id: str, names: Sequence[str]) -> tuple[str, ...]:
    """Each replica's identity, in the order given; a bad or repeated name is refused."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(
                f"副本名 {name!r:.60} 重复：每个副本的名字须不同 / --hub-replicas names "
                f"{name!r:.60} twice; each replica needs a name of its own"
            )
        seen.add(name)
    return tuple(replica_identity(hub_id, name) for name in names)


def check_identity(identity: str) -> str:
    """An organisation id (or the hub's), or a hub replica's identity; ValueError else."""
    if REPLICA_SEPARATOR in identity:
        hub, _, name = identity.partition(REPLICA_SEPARATOR)
        return replica_identity(hub, name)
    return check_org_id(identity)


def replica_lines(folder: Path, replicas: Sequence[str], channels: Sequence[str]) -> list[str]:
    """Comment lines: which certificate and key each replica's ``[channels.X]`` names."""
    if not replicas:
        return []
    where = " and ".join(f"[channels.{c}]" for c in channels)
    lines = [
        "# Hub replicas: each connects with a certificate of its own, written in",
        f"# {folder}/clients/ (copy it and ca.pem to that replica's host).",
        f"# In each replica's {where} ('...': where they were copied):",
    ]
    for identity in replicas:
        name = identity.partition(REPLICA_SEPARATOR)[2]
        lines.append(
            f"#   [replicas] name = {json.dumps(name)}: "
            f'cert = ".../clients/{identity}.pem", key = ".../clients/{identity}.key"'
        )
    hub = replicas[0].partition(REPLICA_SEPARATOR)[0]
    lines.append(f"# (clients/{hub}.pem|key is for a hub that runs without replicas.)")
    return lines
