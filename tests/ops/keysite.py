"""The hub operator's folder beside a running hub, for the key tests: the topology, every
organisation's public key file, the hub's key pair, and the commands as the operator
types them (``hubctl directory build``, ``hubctl keys revoke``) writing the directory the
hub serves. After a build, ``hub.hup()`` is the operator's ``systemctl reload hubd``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from hubd.cli import hubctl_app
from schemas.directory import Directory, VerifiedDirectory, verify_directory
from schemas.keys import HubPublicKey, PublicKeys
from tests.hubproc import HubProcess
from tests.world import TOPOLOGY_PATH, World


@dataclass
class OperatorSite:
    hub: HubProcess
    world: World
    root: Path

    def __post_init__(self) -> None:
        """The public halves of what the hub's first directory lists, as files."""
        d = self.hub.directory
        self.orgs.mkdir(parents=True, exist_ok=True)
        hub_window = d.hub_keys[0]
        pinned = HubPublicKey(
            self.world.hub_key.public, hub_window.not_before, hub_window.not_after
        )
        (self.hub.folder / "keys" / "hub.pub.json").write_bytes(pinned.dump())
        for org in d.orgs:
            keys = self.world.keys[org.id]
            window = org.sign_keys[0]
            public = PublicKeys(
                org.id,
                keys.signing.public,
                keys.encryption.public,
                window.not_before,
                window.not_after,
            )
            (self.orgs / f"{org.id}.pub.json").write_bytes(public.dump())

    @property
    def orgs(self) -> Path:
        return self.root / "orgs"

    @property
    def directory_file(self) -> Path:
        return self.hub.folder / "keys" / "directory.bin"

    def _paths(self) -> list[str]:
        return [
            "--topology",
            str(TOPOLOGY_PATH),
            "--keys",
            str(self.orgs),
            "--hub-key",
            str(self.hub.folder / "keys" / "hub.sign.key"),
            "--out",
            str(self.directory_file),
        ]

    def hand_over(self, public_key_file: Path) -> PublicKeys:
        """An organisation's new ORG...pub.json arrives at the operator."""
        shutil.copyfile(public_key_file, self.orgs / public_key_file.name)
        return PublicKeys.load(public_key_file.read_bytes(), source=str(public_key_file))

    def build(self, *extra: str) -> Result:
        result = CliRunner().invoke(hubctl_app, ["directory", "build", *self._paths(), *extra])
        assert result.exit_code == 0, result.output
        return result

    def revoke(self, kid: str, reason: str) -> Result:
        result = CliRunner().invoke(
            hubctl_app, ["keys", "revoke", kid, "--reason", reason, *self._paths()]
        )
        assert result.exit_code == 0, result.output
        return result

    def current(self) -> VerifiedDirectory:
        return verify_directory(
            self.directory_file.read_bytes(), self.world.hub_key.public, now=None
        )

    @property
    def directory(self) -> Directory:
        return self.current().directory
