"""A federated view of the test world (tests.world): Jilin's hub as a member of the national
exchange, with a member hub of its own (Yanbian), for the tests of hubs under hubs."""

from __future__ import annotations

from typing import Any

from schemas.directory import Directory, HubEntry, HubRole, KeyEntry, OrgEntry, within
from schemas.keys import EncryptionKey, SigningKey
from schemas.labels import Classification
from tests.world import NOW, OrgKeys, World

UPSTREAM = "cn.hub"
REMOTE = "ln.hub"
MEMBER = "yb.hub"


def hub_key_entry(key: SigningKey) -> KeyEntry:
    return KeyEntry(kid=key.kid, public=key.public, not_before=NOW - 1000, not_after=NOW + 10**10)


def make_hub_keys() -> dict[str, SigningKey]:
    return {name: SigningKey.generate() for name in (UPSTREAM, REMOTE, MEMBER)}


def hub(
    hub_id: str,
    role: HubRole,
    key: SigningKey,
    *,
    prefixes: tuple[str, ...] = (),
    channels: tuple[str, ...] = ("govnet", "classified"),
    via: str | None = None,
) -> HubEntry:
    return HubEntry(
        id=hub_id,
        name_zh=f"{hub_id} 枢纽",
        name_en=f"{hub_id} hub",
        role=role,
        prefixes=prefixes,
        channels=channels,
        keys=(hub_key_entry(key),),
        via=via,
    )


def outside(org_id: str, parent: str | None, via: str, **update: Any) -> OrgEntry:
    fields: dict[str, Any] = {
        "id": org_id,
        "name_zh": org_id,
        "name_en": org_id,
        "level": "province" if parent == "cn.gov" else "national",
        "parent": parent,
        "code": None,
        "clearance": Classification.SECRET,
        "channels": ("govnet", "classified"),
        "sign_keys": (),
        "enc_keys": (),
        "directive_to": (),
        "via": via,
    }
    return OrgEntry.model_validate({**fields, **update})


def federated(
    world: World, keys: dict[str, SigningKey], base: Directory | None = None, **update: Any
) -> Directory:
    """Jilin's directory (``base``: the world's) as a member of the national exchange: cn.gov
    and Liaoning's general office reached through the upstream, Liaoning's hub listed for
    its keys, Yanbian's organisations through a member hub of Jilin's own."""
    base = world.directory if base is None else base
    orgs = [
        o.model_copy(update={"via": UPSTREAM})
        if o.id == "cn.gov"
        else o.model_copy(update={"via": MEMBER, "channels": ("govnet",)})
        if within(o.id, "jl.yb")
        else o
        for o in base.orgs
    ]
    orgs.append(outside("ln.gov", "cn.gov", UPSTREAM))
    hubs = (
        hub(UPSTREAM, HubRole.UPSTREAM, keys[UPSTREAM]),
        hub(REMOTE, HubRole.REMOTE, keys[REMOTE], prefixes=("ln",), channels=(), via=UPSTREAM),
        hub(MEMBER, HubRole.MEMBER, keys[MEMBER], prefixes=("jl.yb",), channels=("govnet",)),
    )
    fields = {name: getattr(base, name) for name in Directory.model_fields}
    fields.update(orgs=tuple(orgs), hubs=hubs, version=base.version + 1)
    fields.update(update)
    return Directory.model_construct(**fields)


NATIONAL = "cn.hub"  # the national hub's id in a two-level federation of real hubs
LINK = ("govnet", "classified")  # the channels of Jilin's link to the national hub
LIAONING = "ln.hub"  # a second member, on the government network only (no process runs it)
LIAONING_KEY = SigningKey.generate()
LN_GOV = OrgKeys(SigningKey.generate(), EncryptionKey.generate())  # Liaoning's general office
LN_SY = OrgKeys(SigningKey.generate(), EncryptionKey.generate())  # 沈阳市, a prefecture of it
# 大连市, in Jilin's directory only: Jilin imported it from a national directory that no
# longer lists it (the directories of two levels out of step)
LN_DL = OrgKeys(SigningKey.generate(), EncryptionKey.generate())
LIAONING_KEYS = {"ln.gov": LN_GOV, "ln.sy": LN_SY, "ln.dl": LN_DL}


def _ln_gov(
    window: KeyEntry, via: str | None, channels: tuple[str, ...], org: str = "ln.gov"
) -> OrgEntry:
    """A Liaoning organisation's entry (via None: at Liaoning's own hub)."""
    keys = LIAONING_KEYS[org]

    def entry(key: SigningKey | EncryptionKey) -> KeyEntry:
        return window.model_copy(update={"kid": key.kid, "public": key.public})

    fields: dict[str, Any] = {
        "channels": channels,
        "sign_keys": (entry(keys.signing),),
        "enc_keys": (entry(keys.encryption),),
    }
    if org != "ln.gov":
        fields["level"] = "prefecture"
    entry_of = outside(org, "cn.gov" if org == "ln.gov" else "ln.gov", via or NATIONAL, **fields)
    return entry_of if via is not None else entry_of.model_copy(update={"via": None})


def national_view(world: World, base: Directory, national_key: SigningKey) -> Directory:
    """The national hub's directory over ``base`` (Jilin's, as tests.hubproc makes it):
    cn.gov its own, Jilin's organisations through the member hub jl.hub (prefix ``jl``),
    on the link's channels."""
    jilin_key = world.hub_key
    orgs = tuple(
        o if o.id == "cn.gov" else o.model_copy(update={"via": base.hub_id, "channels": LINK})
        for o in base.orgs
    )
    fields = {name: getattr(base, name) for name in Directory.model_fields}
    window = base.hub_keys[0]
    fields.update(
        hub_id=NATIONAL,
        hub_keys=(
            window.model_copy(update={"kid": national_key.kid, "public": national_key.public}),
        ),
        orgs=(
            *orgs,
            _ln_gov(window, LIAONING, ("govnet",)),
            _ln_gov(window, LIAONING, ("govnet",), "ln.sy"),
        ),
        groups=(),
        hubs=(
            HubEntry(
                id=LIAONING,
                name_zh="辽宁省电子公文交换中心",
                name_en="Liaoning hub",
                role=HubRole.MEMBER,
                prefixes=("ln",),
                channels=("govnet",),
                keys=(
                    window.model_copy(
                        update={"kid": LIAONING_KEY.kid, "public": LIAONING_KEY.public}
                    ),
                ),
                via=None,
            ),
            HubEntry(
                id=base.hub_id,
                name_zh="吉林省电子公文交换中心",
                name_en="Jilin hub",
                role=HubRole.MEMBER,
                prefixes=("jl",),
                channels=LINK,
                keys=(
                    window.model_copy(update={"kid": jilin_key.kid, "public": jilin_key.public}),
                ),
                via=None,
            ),
        ),
    )
    return Directory.model_construct(**fields)


def provincial_view(base: Directory, national_key: SigningKey) -> Directory:
    """Jilin's directory over ``base`` as a member of the national hub: cn.gov reached
    through it, on the link's channels."""
    orgs = tuple(
        o.model_copy(update={"via": NATIONAL, "channels": LINK}) if o.id == "cn.gov" else o
        for o in base.orgs
    )
    window = base.hub_keys[0]
    upstream = HubEntry(
        id=NATIONAL,
        name_zh="国家政务公文交换中心",
        name_en="National hub",
        role=HubRole.UPSTREAM,
        prefixes=(),
        channels=LINK,
        keys=(window.model_copy(update={"kid": national_key.kid, "public": national_key.public}),),
        via=None,
    )
    remote = HubEntry(
        id=LIAONING,
        name_zh="辽宁省电子公文交换中心",
        name_en="Liaoning hub",
        role=HubRole.REMOTE,
        prefixes=("ln",),
        channels=(),
        keys=(window.model_copy(update={"kid": LIAONING_KEY.kid, "public": LIAONING_KEY.public}),),
        via=NATIONAL,
    )
    fields = {name: getattr(base, name) for name in Directory.model_fields}
    liaoning = [_ln_gov(window, NATIONAL, LINK, org) for org in ("ln.gov", "ln.sy", "ln.dl")]
    fields.update(orgs=(*orgs, *liaoning), hubs=(upstream, remote))
    return Directory.model_construct(**fields)


def liaoning_view(world: World, base: Directory, national_key: SigningKey) -> Directory:
    """Liaoning's hub (``ln.hub``): its general office and 沈阳市 on the government network,
    a member of the national hub on that network only; cn.gov and Jilin's organisations
    reached through the national hub, Jilin's hub listed for its keys."""
    window = base.hub_keys[0]

    def key(k: SigningKey) -> KeyEntry:
        return window.model_copy(update={"kid": k.kid, "public": k.public})

    link = ("govnet",)
    outside_orgs = tuple(
        o.model_copy(update={"via": NATIONAL, "channels": link}) for o in base.orgs
    )
    fields = {name: getattr(base, name) for name in Directory.model_fields}
    fields.update(
        hub_id=LIAONING,
        hub_keys=(key(LIAONING_KEY),),
        orgs=(*outside_orgs, _ln_gov(window, None, link), _ln_gov(window, None, link, "ln.sy")),
        groups=(),
        hubs=(
            HubEntry(
                id=NATIONAL,
                name_zh="国家政务公文交换中心",
                name_en="National hub",
                role=HubRole.UPSTREAM,
                prefixes=(),
                channels=link,
                keys=(key(national_key),),
                via=None,
            ),
            HubEntry(
                id=base.hub_id,
                name_zh="吉林省电子公文交换中心",
                name_en="Jilin hub",
                role=HubRole.REMOTE,
                prefixes=("jl",),
                channels=(),
                keys=(key(world.hub_key),),
                via=NATIONAL,
            ),
        ),
    )
    return Directory.model_construct(**fields)
