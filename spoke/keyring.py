"""The spoke's keys over time: every key pair it holds, which one signs, whether it may send.

An organisation rotates by generating a new pair beside the old one (``spoke keygen
--rotate`` writes ``ORG.sign.<kid>.key``, ``ORG.enc.<kid>.key`` and ``ORG.<kid>.pub.json``
next to the configured ``ORG.sign.key`` and ``ORG.enc.key``). The agent holds all of them:

- it **signs** with the newest signing key the directory it holds lists for it, unrevoked
  and inside its window now (:func:`choose_signer`): a new key only once the hub has
  published a directory listing it (before that the hub would refuse it), the old key
  never after its window closed or once it is revoked;
- it **decrypts** with whichever encryption key a sealed file key names (its kid), so a
  document sealed for the old key during the overlap, or queued at the hub for days,
  still opens. Keep a retired encryption key until nothing sealed for it can arrive.

:func:`sending_gate` is the fail-closed rule in one place: without a directory, with an
expired one, or without a signing key the directory accepts, the spoke sends nothing;
drops wait in the outbox and the reason is logged and shown in ``spoke status``.

:func:`own_key_problems` says, at start and at every directory change, that the directory
does not list the keys this spoke holds (never handed over, replaced, revoked, expired):
then the spoke cannot sign, or documents sealed for it cannot be opened and end as dead
letters.

:func:`own_key_warnings` says, days ahead, that the organisation's last listed key of a
kind is about to end (the hub's judgement, :mod:`schemas.expiry`, narrowed to this spoke):
after it, the spoke cannot sign (so sends nothing), or nobody can seal documents for it.

The pure part (Keyring, choose_signer, sending_gate, own_key_problems, own_key_warnings)
takes ``now``;
:class:`KeySource` reads the key files and notices new ones (a changed folder) without a
restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.files import load_encryption_key, load_signing_key
from schemas.clock import DAY_MS, ms_to_text
from schemas.directory import Directory, VerifiedDirectory
from schemas.errors import DirectoryError
from schemas.expiry import ExpiryWarning, Horizons, Subject, directory_deadlines, judge
from schemas.keys import EncryptionKey, SigningKey

NO_DIRECTORY = "spoke.no_directory"
DIRECTORY_EXPIRED = "spoke.directory_expired"
NO_SIGNING_KEY = "spoke.no_signing_key"


@dataclass(frozen=True, slots=True)
class Keyring:
    """The key pairs a spoke holds (the configured ones first)."""

    signing: tuple[SigningKey, ...]
    encryption: tuple[EncryptionKey, ...]

    def encryption_key(self, kid: str) -> EncryptionKey | None:
        return next((k for k in self.encryption if k.kid == kid), None)

    @property
    def kids(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return tuple(k.kid for k in self.signing), tuple(k.kid for k in self.encryption)


def choose_signer(
    keys: Sequence[SigningKey], directory: Directory, org: str, now: int
) -> SigningKey | str:
    """The held key to sign with at ``now``, or a sentence saying why there is none.

    The newest (largest ``not_before``) of the held keys that ``directory`` lists for
    ``org``, not revoked, with ``not_before <= now < not_after``.
    """
    entry = directory.org(org)
    if entry is None:
        return f"{org} is not in directory v{directory.version}; ask the hub operator"
    listed = {k.kid: k for k in entry.sign_keys}
    usable = []
    why = []
    for key in keys:
        window = listed.get(key.kid)
        if window is None:
            why.append(f"{key.kid} is not listed")
        elif directory.is_revoked(key.kid):
            why.append(f"{key.kid} is revoked")
        elif now < window.not_before:
            why.append(f"{key.kid} is valid only from {ms_to_text(window.not_before)}")
        elif now >= window.not_after:
            why.append(f"{key.kid} was valid until {ms_to_text(window.not_after)}")
        else:
            usable.append((window.not_before, key.kid, key))
    if usable:
        return max(usable, key=lambda t: (t[0], t[1]))[2]
    return (
        f"no signing key this spoke holds may sign in directory v{directory.version} now: "
        + "; ".join(why)
        + ". Generate a new pair with 'spoke keygen --org "
        + f"{org} --rotate', hand its .pub.json to the hub operator, and wait for the "
        "directory that lists it"
    )


@dataclass(frozen=True, slots=True)
class Ready:
    """The spoke may send: its directory is valid and one of its keys may sign."""

    directory: Directory
    version: int
    signer: SigningKey


@dataclass(frozen=True, slots=True)
class Held:
    """The spoke sends nothing, and why (``reason`` is also the log event's name)."""

    reason: str
    detail: str
    version: int | None = None
    expires_at: int | None = None


def sending_gate(
    verified: VerifiedDirectory | None, keyring: Keyring, org: str, now: int
) -> Ready | Held:
    """Whether the spoke may send now (fail closed), and with which key."""
    if verified is None:
        return Held(
            NO_DIRECTORY,
            "no valid directory yet: drops wait in the outbox until one arrives from the hub",
        )
    directory = verified.directory
    if now >= directory.expires_at:
        return Held(
            DIRECTORY_EXPIRED,
            f"directory v{directory.version} expired at {ms_to_text(directory.expires_at)} "
            "and no fresher one has arrived: nothing is sent until the hub publishes one; "
            "drops wait in the outbox",
            directory.version,
            directory.expires_at,
        )
    signer = choose_signer(keyring.signing, directory, org, now)
    if isinstance(signer, str):
        return Held(NO_SIGNING_KEY, signer, directory.version, directory.expires_at)
    return Ready(directory, directory.version, signer)


# ------------------------------------------------------------------ the key files


def rotated_paths(org: str, folder: Path, sign_kid: str, enc_kid: str) -> tuple[Path, Path, Path]:
    """Where 'spoke keygen --rotate' puts a new pair: secret files named by their key ids."""
    return (
        folder / f"{org}.sign.{sign_kid}.key",
        folder / f"{org}.enc.{enc_kid}.key",
        folder / f"{org}.{sign_kid}.pub.json",
    )


class KeySource:
    """The configured key files and the rotated ones beside them, re-read when a folder
    changes (a new pair appears) or when asked."""

    def __init__(self, org: str, sign_key: Path, enc_key: Path) -> None:
        self.org, self.sign_key, self.enc_key = org, sign_key, enc_key
        self._stamp: tuple[int, ...] | None = None
        self.problems: list[str] = []

    def _folders(self) -> list[Path]:
        return list(dict.fromkeys([self.sign_key.parent, self.enc_key.parent]))

    def changed(self) -> bool:
        """True if a key folder changed since the last :meth:`load` (a cheap stat)."""
        return self._current_stamp() != self._stamp

    def _current_stamp(self) -> tuple[int, ...]:
        out = []
        for folder in self._folders():
            try:
                out.append(folder.stat().st_mtime_ns)
            except OSError:
                out.append(-1)
        return tuple(out)

    def load(self) -> Keyring:
        """Every pair: the configured files must load (ValueError, OSError otherwise);
        a rotated file that does not is skipped and named in :attr:`problems`."""
        self._stamp = self._current_stamp()
        self.problems = []
        _, signing = load_signing_key(self.sign_key)
        _, encryption = load_encryption_key(self.enc_key)
        signs, encs = [signing], [encryption]
        for path in sorted(self.sign_key.parent.glob(f"{self.org}.sign.*.key")):
            key = self._extra(path, signing=True)
            if isinstance(key, SigningKey) and key.kid not in {k.kid for k in signs}:
                signs.append(key)
        for path in sorted(self.enc_key.parent.glob(f"{self.org}.enc.*.key")):
            key = self._extra(path, signing=False)
            if isinstance(key, EncryptionKey) and key.kid not in {k.kid for k in encs}:
                encs.append(key)
        return Keyring(tuple(signs), tuple(encs))

    def _extra(self, path: Path, *, signing: bool) -> SigningKey | EncryptionKey | None:
        if path in {self.sign_key, self.enc_key}:
            return None
        try:
            owner, key = load_signing_key(path) if signing else load_encryption_key(path)
        except (OSError, ValueError) as exc:
            self.problems.append(f"{path}: {exc}")
            return None
        if owner != self.org:
            self.problems.append(f"{path}: it belongs to {owner}, not to {self.org}")
            return None
        return key


# ------------------------------------------------------------------ for 'spoke keys'


def describe_held(
    keyring: Keyring, directory: Directory | None, org: str, now: int
) -> list[tuple[str, str, str]]:
    """(kind, kid, what it is now) for every held key, for ``spoke keys``."""
    rows: list[tuple[str, str, str]] = []
    entry = None if directory is None else directory.org(org)
    signer = None
    if directory is not None:
        chosen = choose_signer(keyring.signing, directory, org, now)
        signer = None if isinstance(chosen, str) else chosen.kid
    sealed_to = None
    if directory is not None and entry is not None:
        try:
            sealed_to = directory.encryption_key(org, now).kid
        except DirectoryError:
            sealed_to = None
    for kind, keys, listed in (
        ("signing", keyring.signing, () if entry is None else entry.sign_keys),
        ("encryption", keyring.encryption, () if entry is None else entry.enc_keys),
    ):
        windows = {k.kid: k for k in listed}
        for key in keys:
            window = windows.get(key.kid)
            if directory is None:
                text = "no directory to judge it by"
            elif window is None:
                text = "not in the directory yet: hand its .pub.json to the hub operator"
            elif directory.is_revoked(key.kid):
                text = "REVOKED: it is refused everywhere; remove it once its successor works"
            elif key.kid in {signer, sealed_to}:
                text = (
                    f"in use ({'signs' if kind == 'signing' else 'senders seal to it'}), "
                    f"valid until {ms_to_text(window.not_after)}"
                )
            elif now < window.not_before:
                text = f"listed, valid from {ms_to_text(window.not_before)}"
            elif now < window.not_after:
                text = f"being rotated out: still valid until {ms_to_text(window.not_after)}"
            elif kind == "signing":
                text = f"retired at {ms_to_text(window.not_after)}; no longer used"
            else:
                text = (
                    f"retired at {ms_to_text(window.not_after)}; keep it until nothing sealed "
                    "for it can arrive (the hub may still hold documents sealed before then)"
                )
            rows.append((kind, key.kid, text))
    return rows


# ------------------------------------------------------------------ its own keys listed

OWN_KEYS_EVENT = "keys.not_in_directory"


@dataclass(frozen=True, slots=True)
class OwnKeyProblem:
    """The directory does not list a key of this spoke as it must (one sentence each,
    Chinese and English, saying what follows and what to do)."""

    kind: str  # organisation | signing | encryption
    zh: str
    en: str

    @property
    def line(self) -> str:
        return f"{self.zh} / {self.en}"


def _hand_over(org: str) -> tuple[str, str]:
    zh = (
        f"请将本机关的公钥文件 {org}.pub.json（轮换后为 {org}.<kid>.pub.json）交给枢纽运维人员，"
        "由其执行 hubctl directory build 并发布新目录"
    )
    en = (
        f"send {org}.pub.json (after a rotation {org}.<kid>.pub.json), beside the key files, "
        "to the hub operator, who runs 'hubctl directory build' and publishes the new directory"
    )
    return zh, en


def own_key_problems(
    directory: Directory, org: str, keyring: Keyring, now: int
) -> tuple[OwnKeyProblem, ...]:
    """Where ``directory`` does not list this spoke's keys as it must at ``now``: ``org``
    is not in it; no held signing key may sign; the encryption key senders seal to is not
    one this spoke holds, or there is none."""
    todo_zh, todo_en = _hand_over(org)
    v = directory.version
    if directory.org(org) is None:
        return (
            OwnKeyProblem(
                "organisation",
                f"本机关 {org} 不在交换目录 v{v} 中，无法收发文件；{todo_zh}",
                f"{org} is not in directory v{v}: it can neither send nor receive; {todo_en}",
            ),
        )
    problems = []
    signer = choose_signer(keyring.signing, directory, org, now)
    if isinstance(signer, str):
        problems.append(
            OwnKeyProblem(
                "signing",
                f"本交换程序持有的签名密钥（{', '.join(keyring.kids[0])}）在交换目录 v{v} 中"
                f"均不可用（未列入、已吊销或已过期），因此不发送任何文件；{todo_zh}；若密钥已吊销或过期，"
                "先执行 spoke keygen --rotate",
                f"{signer}; if a key held here is not listed at all, {todo_en}",
            )
        )
    held = keyring.kids[1]
    try:
        sealed_to = directory.encryption_key(org, now).kid
    except DirectoryError:
        problems.append(
            OwnKeyProblem(
                "encryption",
                f"交换目录 v{v} 中没有本机关当前有效的加密密钥，发给本机关的文件无法加密；"
                f"{todo_zh}",
                f"directory v{v} lists no encryption key of {org} valid now: nobody can seal a "
                f"document for {org}; {todo_en}",
            )
        )
    else:
        if sealed_to not in held:
            problems.append(
                OwnKeyProblem(
                    "encryption",
                    f"交换目录 v{v} 要求发文机关用加密密钥 {sealed_to} 加密发给本机关的文件，"
                    f"但本交换程序没有该密钥（持有 {', '.join(held)}）：这些文件无法打开，"
                    f"最终成为死信；{todo_zh}",
                    f"directory v{v} tells senders to seal documents for {org} to encryption key "
                    f"{sealed_to}, which this spoke does not hold (it holds {', '.join(held)}): "
                    f"they cannot be opened here and end as dead letters; {todo_en}",
                )
            )
    return tuple(problems)


# ------------------------------------------------------------------ its own keys' expiry


def own_key_warnings(
    directory: Directory, org: str, *, now: int, days: float
) -> tuple[ExpiryWarning, ...]:
    """``org``'s signing and encryption keys that end within ``days`` (or have ended) with
    no newer unrevoked key of the same kind listed, soonest first."""
    mine = [d for d in directory_deadlines(directory) if d.subject is Subject.KEY and d.org == org]
    return judge(mine, now=now, horizons=Horizons(keys=int(days * DAY_MS)))


def own_key_sentence(warning: ExpiryWarning, keyring: Keyring, directory: Directory) -> str:
    """What ends when, what follows, and what to do, for the spoke's administrator."""
    d = warning.deadline
    effect = (
        "this spoke can no longer sign, so it sends nothing"
        if d.kind == "signing"
        else "nobody can seal documents for this organisation"
    )
    entry = directory.org(d.org or "")
    listed = set() if entry is None else {k.kid for k in (*entry.sign_keys, *entry.enc_keys)}
    held = keyring.signing if d.kind == "signing" else keyring.encryption
    waiting = sorted(k.kid for k in held if k.kid not in listed)
    todo = (
        f"hand the .pub.json of the new pair ({', '.join(waiting)}) to the hub's operator"
        if waiting
        else "run 'spoke keygen --rotate' and hand the new .pub.json to the hub's operator"
    )
    return (
        f"the last {d.kind} key of {d.org} in the directory, {d.name}, {warning.left()}; "
        f"after that {effect}. {todo[0].upper()}{todo[1:]}; the agent takes the new pair "
        "into use once the hub publishes a directory that lists it"
    )
