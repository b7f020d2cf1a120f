"""The document rules (行文规则) at the sending spoke, with real hub and spoke processes.

Issue 5, section 2: "the same pure rules run at the sending spoke (before sealing, so an
integrator learns at once, and so a ``spoke send --auto-cc`` can add skipped organs as
copies before the file key is sealed for them)"; every refusal names the rule id, the
article, the values and what to do, in Chinese and English, in ``failed/NAME.error.txt``;
section 3: ``spoke send --dry-run`` prints per recipient the direction, the channel and
each rule's verdict without sending anything; section 4: a 请示 to two superiors refused,
a skip-level 报告 from a county to the province refused and then accepted with the
prefecture copied, warn mode delivers and logs ``rule.warned``.

The end-to-end tests share one exchange (hub on the embedded broker; the spokes of 国务院
办公厅, 吉林省人民政府办公厅, 长春市 and 农安县), each under its own drop names and titles.
The last tests run the real outbox pipeline offline (tests/spoke/conftest.py) where the
claim is about what is sealed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.clock import now_ms
from schemas.directory import sign_directory, verify_directory
from schemas.labels import Classification
from schemas.rules import RULES
from tests.hubproc import live_directory
from tests.spoke.conftest import ExchangeFactory, OfflineSpokeFactory, snapshot
from tests.spoke.procs import Exchange, SpokeProcess, eventually, make_exchange, toml_meta
from tests.world import World

RUNNING = ("jl.gov", "jl.cc", "jl.cc.nongan", "cn.gov")
REQUEST_ARTICLE = "《党政机关公文处理工作条例》第十四条（一）（四）"


@pytest.fixture(scope="module")
def shared(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    exchange = make_exchange(tmp_path_factory.mktemp("rules"), world)
    try:
        asyncio.run(exchange.running(*RUNNING))
        yield exchange
    finally:
        exchange.close()


def request_to_two_superiors(title: str) -> dict[str, object]:
    """A 请示 from 长春市 addressed to both the province and the State Council."""
    return {
        "主送": ["jl.gov", "cn.gov"],
        "密级": "内部",
        "文种": "请示",
        "标题": title,
        "签发人": "张某",
        "发文字号": "长府请〔2026〕3号",
    }


def skip_level_report(title: str) -> dict[str, object]:
    """A 报告 from 农安县 straight to the province, past 长春市."""
    return {"主送": "jl.gov", "密级": "内部", "文种": "报告", "标题": title, "签发人": "刘某"}


async def refused(spoke: SpokeProcess, name: str) -> tuple[str, dict[str, Any]]:
    return await eventually(lambda: spoke.failure(name), f"{name} in {spoke.org}'s failed/")


def nothing_sealed(spoke: SpokeProcess, name: str) -> bool:
    return spoke.state_rows(f"SELECT msg_id FROM outbound WHERE name = '{name}'") == []  # noqa: S608


# ------------------------------------------------------------------ refusals, end to end


async def test_request_to_two_superiors_fails_naming_rule_and_article_in_both_languages(
    shared: Exchange, tmp_path: Path
) -> None:
    cc = shared.spokes["jl.cc"]
    content = "省政府、国务院办公厅：关于拨付防汛专项资金的请示正文。\n".encode()
    staged = tmp_path / "请示.txt"
    staged.write_bytes(content)
    before = snapshot(staged)
    cc.drop("防汛请示.txt", content, request_to_two_superiors("关于拨付防汛专项资金的请示"))

    text, detail = await refused(cc, "防汛请示.txt")

    assert "[request_recipient]" in text
    assert REQUEST_ARTICLE in text
    assert "该请示主送 2 个机关" in text  # Chinese: the values and what to do
    assert "请示只能主送一个上级机关" in text
    assert "this 请示 has 2 primary recipients (jl.gov, cn.gov)" in text  # English
    assert "a request goes to exactly one superior" in text
    assert "docs/rules.md" in text
    assert "Rule: rule.request_recipient" in text
    assert detail["rule"] == "rule.request_recipient"
    assert [f["rule"] for f in detail["findings"]] == ["request_recipient"]
    finding = detail["findings"][0]
    assert finding["reason"] == "rule.request_recipient"
    assert finding["article"] == REQUEST_ARTICLE
    assert finding["mode"] == "enforce"
    assert "jl.gov" in finding["zh"]
    assert "cn.gov" in finding["en"]
    assert detail["refused_by"] == "spoke"  # refused before sealing: never sent ...
    assert len(detail["msg_id"]) == 32  # ... but tracked from the moment it was taken

    assert snapshot(cc.failed / "防汛请示.txt") == before  # the original bytes, intact
    meta_text = (cc.failed / "防汛请示.txt.meta.toml").read_text(encoding="utf-8")
    assert "关于拨付防汛专项资金的请示" in meta_text
    assert nothing_sealed(cc, "防汛请示.txt")
    assert not list((cc.work / "queue").iterdir())
    # the spoke logs drop.failed after it writes the error files: wait for the line
    failed = await cc.wait_logged("drop.failed", name="防汛请示.txt")
    assert failed["rule"] == "rule.request_recipient"
    assert len(cc.logged("drop.failed", name="防汛请示.txt")) == 1


async def test_skip_level_report_from_county_to_province_is_refused_naming_the_skipped_city(
    shared: Exchange,
) -> None:
    nongan = shared.spokes["jl.cc.nongan"]
    nongan.drop("越级报告.txt", b"county report\n", skip_level_report("关于春耕备耕情况的报告"))

    text, detail = await refused(nongan, "越级报告.txt")

    assert detail["rule"] == "rule.skip_level"
    assert detail["values"]["add_cc"] == ["jl.cc"]
    assert "[skip_level] 《党政机关公文处理工作条例》第十三条" in text
    assert "越过了 jl.cc（长春市人民政府）" in text
    assert "sending to jl.gov skips jl.cc, and jl.cc is not copied" in text
    assert "--auto-cc" in text  # what to do names the way out, for the command
    assert "set auto_cc = true (自动抄送) in the metadata" in text  # and for a drop
    assert (nongan.failed / "越级报告.txt").read_bytes() == b"county report\n"
    assert nothing_sealed(nongan, "越级报告.txt")


async def test_skip_level_report_sent_with_auto_cc_reaches_the_province_and_the_skipped_city(
    shared: Exchange, tmp_path: Path
) -> None:
    nongan, gov, cc = (shared.spokes[o] for o in ("jl.cc.nongan", "jl.gov", "jl.cc"))
    document = tmp_path / "抄送报告.txt"
    document.write_bytes(b"county report, the city copied\n")
    title = "关于秋季防火工作情况的报告"
    done = nongan.cli(
        "send",
        str(document),
        "--to",
        "jl.gov",
        "--classification",
        "内部",
        "--type",
        "报告",
        "--title",
        title,
        "--signatory",
        "刘某",
        "--auto-cc",
    )
    assert done.returncode == 0, done.stderr

    status = await nongan.wait_status("抄送报告.txt", "jl.gov")
    status = await nongan.wait_status("抄送报告.txt", "jl.cc")
    assert status["hub"] == "ACCEPTED"
    assert status["added_cc"] == ["jl.cc"]
    assert set(status["recipients"]) == {"jl.gov", "jl.cc"}
    assert status["rule_warnings"] == []
    sealed = nongan.logged("drop.sealed", name="抄送报告.txt")
    assert [e["added_cc"] for e in sealed] == [["jl.cc"]]
    for recipient in (gov, cc):  # each opens it: the file key was sealed for both
        meta = await recipient.wait_received(title)
        assert meta["msg_id"] == status["msg_id"]
        assert meta["to"] == ["jl.gov"]
        assert meta["cc"] == ["jl.cc"]
        got = recipient.inbox / meta["msg_id"] / "抄送报告.txt"
        assert got.read_bytes() == document.read_bytes()
    # the integrator's metadata stays as written; the added copy is in status.json
    written = json.loads(
        (nongan.sent / status["msg_id"] / "抄送报告.txt.meta.json").read_text(encoding="utf-8")
    )
    assert written["auto_cc"] is True
    assert written["cc"] == ""


async def test_secret_document_without_secrecy_period_is_refused_by_classified_marks(
    shared: Exchange,
) -> None:
    gov = shared.spokes["jl.gov"]
    meta = {
        "主送": "cn.gov",
        "密级": "机密",  # no ★ and no 保密期限
        "文种": "报告",
        "标题": "关于边境管控情况的报告",
        "签发人": "李某",
    }
    gov.drop("无期限.txt", b"secret content\n", meta)

    text, detail = await refused(gov, "无期限.txt")

    assert detail["rule"] == "rule.classified_marks"
    assert [f["rule"] for f in detail["findings"]] == ["classified_marks"]
    assert "密级为机密，但未标注保密期限" in text
    assert "carries no classification period; set secrecy_period (保密期限)" in text
    assert "GB/T 9704-2012 7.2.1" in text
    assert (gov.failed / "无期限.txt").read_bytes() == b"secret content\n"
    assert nothing_sealed(gov, "无期限.txt")


async def test_secret_document_with_secrecy_period_is_delivered_with_its_copy_number(
    shared: Exchange,
) -> None:
    gov, cn = shared.spokes["jl.gov"], shared.spokes["cn.gov"]
    title = "关于边境管控情况的报告（续）"
    meta = {
        "主送": "cn.gov",
        "密级": "机密",
        "保密期限": "6个月",
        "文种": "报告",
        "标题": title,
        "签发人": "李某",
        "发文字号": "吉政报〔2026〕7号",
    }
    gov.drop("有期限.txt", b"secret content\n", meta)

    status = await gov.wait_status("有期限.txt", "cn.gov")
    assert status["channel"] == "classified"
    assert status["recipients"]["cn.gov"]["copy_number"] == "000001"
    got = await cn.wait_received(title)
    assert got["copy_number"] == "000001"
    assert got["secrecy_period"] == "6m"
    assert got["doc_number"] == "吉政报〔2026〕7号"


async def test_reply_naming_no_request_the_hub_holds_is_refused_by_the_hub_into_failed(
    shared: Exchange,
) -> None:
    # The spoke has no store: it leaves the 批复's reference to the hub, which refuses it.
    gov = shared.spokes["jl.gov"]
    meta = {
        "主送": "jl.cc",
        "密级": "内部",
        "文种": "批复",
        "标题": "关于同意拨付防汛资金的批复",
        "回复文件": "0123456789abcdef0123456789abcdef",
        "发文字号": "吉政函〔2026〕9号",
    }
    gov.drop("批复.txt", b"reply\n", meta)

    text, detail = await refused(gov, "批复.txt")

    assert detail["rule"] == "rule.reply_request"
    assert detail["msg_id"] is not None  # sealed and sent: the hub said no
    assert "the hub refused it" in text
    assert "[reply_request]" in text
    assert "0123456789abcdef0123456789abcdef" in text
    assert "docs/rules.md" in text
    assert (gov.failed / "批复.txt").read_bytes() == b"reply\n"
    assert gov.status("批复.txt") is None  # never in sent/


# ------------------------------------------------------------------ spoke send --dry-run


def dry_run(spoke: SpokeProcess, document: Path, *more: str) -> tuple[int, str]:
    done = spoke.cli(
        "send",
        str(document),
        "--to",
        "jl.gov",
        "--classification",
        "内部",
        "--type",
        "报告",
        "--title",
        "关于试运行情况的报告",
        "--signatory",
        "刘某",
        "--dry-run",
        *more,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


async def test_dry_run_prints_direction_channel_and_verdicts_and_sends_nothing(
    shared: Exchange, tmp_path: Path
) -> None:
    nongan = shared.spokes["jl.cc.nongan"]
    document = tmp_path / "试运行.txt"
    document.write_bytes(b"dry run\n")
    rows_before = nongan.state_rows("SELECT msg_id FROM outbound")
    sent_before = nongan.sent_folders()
    failed_before = nongan.failure_names()

    code, out = dry_run(nongan, document)
    assert code == 1, out
    assert "Nothing is sent." in out
    (row,) = [line for line in out.splitlines() if line.startswith("jl.gov ")]
    assert "上行 upward" in row
    assert "govnet" in row
    for rule in RULES:  # every rule's verdict is listed
        assert f"  {rule.id} " in out, rule.id
    (skip,) = [line for line in out.splitlines() if line.strip().startswith("skip_level ")]
    assert "enforce" in skip
    assert "FAIL" in skip
    (signatory,) = [line for line in out.splitlines() if "upward_signatory" in line]
    assert "pass" in signatory
    assert "copies --auto-cc would add: jl.cc" in out
    assert "verdict: REFUSED (skip_level)" in out

    code, out = dry_run(nongan, document, "--auto-cc")
    assert code == 0, out
    (added,) = [line for line in out.splitlines() if line.startswith("jl.cc ")]
    assert "cc (added)" in added
    assert "上行 upward" in added
    assert "copies added by --auto-cc: jl.cc" in out
    assert "verdict: the hub would accept it" in out

    code, out = dry_run(nongan, document, "--auto-cc", "--json")
    assert code == 0, out
    report = json.loads(out)
    assert report["accepted"] is True
    assert report["added_cc"] == ["jl.cc"]
    assert [(r["recipient"], r["direction"], r["channel"]) for r in report["recipients"]] == [
        ("jl.gov", "upward", "govnet"),
        ("jl.cc", "upward", "govnet"),
    ]
    verdicts = {r["rule"]: r["verdict"] for r in report["rules"]}
    assert verdicts["skip_level"] == "pass"
    assert verdicts["classified_marks"] == "not applicable"

    # nothing was written to the outbox, nothing sealed, nothing sent or failed
    assert list(nongan.outbox.iterdir()) == []
    assert nongan.state_rows("SELECT msg_id FROM outbound") == rows_before
    assert nongan.sent_folders() == sent_before
    assert nongan.failure_names() == failed_before
    assert nongan.logged("drop.claimed", name="试运行.txt") == []


async def test_dry_run_of_an_unknown_recipient_exits_1_with_the_spokes_own_sentence(
    shared: Exchange, tmp_path: Path
) -> None:
    nongan = shared.spokes["jl.cc.nongan"]
    document = tmp_path / "查无此人.txt"
    document.write_bytes(b"dry run\n")
    done = nongan.cli(
        "send",
        str(document),
        "--to",
        "jl.nowhere",
        "--classification",
        "内部",
        "--type",
        "函",
        "--title",
        "t",
        "--dry-run",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "drop.unknown_recipient" in done.stdout
    assert "jl.nowhere" in done.stdout
    assert list(nongan.outbox.iterdir()) == []


# ------------------------------------------------------------------ warn mode


async def test_warn_mode_sends_the_request_logs_rule_warned_and_records_it_in_status(
    exchanges: ExchangeFactory, world: World
) -> None:
    directory = live_directory(world)
    warned = directory.model_copy(
        update={"rules": {**directory.rules, "request_recipient": "warn"}}
    )
    exchange = exchanges(directory=warned)
    cc, gov, cn = await exchange.running("jl.cc", "jl.gov", "cn.gov")
    title = "关于申请防汛物资的请示"
    cc.drop("警告请示.txt", b"request to two superiors\n", request_to_two_superiors(title))

    for recipient in (gov, cn):
        status = await cc.wait_status("警告请示.txt", recipient.org)
        await recipient.wait_received(title)
    assert status["hub"] == "ACCEPTED"
    (warning,) = status["rule_warnings"]
    assert warning["rule"] == "request_recipient"
    assert warning["mode"] == "warn"
    assert warning["article"] == REQUEST_ARTICLE
    assert "2 primary recipients" in warning["en"]

    logged = cc.logged("rule.warned", msg_id=status["msg_id"])
    assert [(e["rule"], e["name"]) for e in logged] == [("request_recipient", "警告请示.txt")]
    assert title not in cc.log.read_text(encoding="utf-8", errors="replace")
    assert cc.failure_names() == []


# ------------------------------------------------------------------ what is sealed, offline


async def test_auto_cc_in_the_metadata_seals_the_file_key_for_the_skipped_city(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    nongan = offline_spoke("jl.cc.nongan")
    meta = {**skip_level_report("关于防汛准备情况的报告"), "自动抄送": True}
    nongan.drop("自动抄送.txt", b"county report\n", toml_meta(meta))
    await nongan.settle()

    (out,) = nongan.outbound()
    header = nongan.sealed(out).header
    assert header.to == ("jl.gov",)
    assert header.cc == ("jl.cc",)
    assert header.copy_numbers == {}  # 内部: no 份号
    for recipient in ("jl.gov", "jl.cc"):
        assert nongan.open_as(world, out, recipient) == {"自动抄送.txt": b"county report\n"}
    assert nongan.ctx.state.notes(out.msg_id)["added_cc"] == ["jl.cc"]


async def test_auto_cc_on_a_secret_report_numbers_every_copy_the_added_one_included(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    # 长春市 cleared for 机密 and on the classified channel (not so in config/topology.toml),
    # so that a secret report can skip the province on its way to the State Council.
    cleared = live_directory(world)
    orgs = tuple(
        o.model_copy(
            update={"clearance": Classification.SECRET, "channels": ("govnet", "classified")}
        )
        if o.id == "jl.cc"
        else o
        for o in cleared.orgs
    )
    frame = sign_directory(cleared.model_copy(update={"orgs": orgs}), world.hub_key)
    cc = offline_spoke("jl.cc")
    cc.ctx.verified = verify_directory(frame, world.hub_key.public, now=now_ms())
    meta = {
        "主送": "cn.gov",
        "密级": "机密★1年",
        "文种": "报告",
        "标题": "关于汛情的报告",
        "签发人": "张某",
        "自动抄送": True,
    }
    cc.drop("汛情报告.txt", b"secret report\n", toml_meta(meta))
    await cc.settle()

    (out,) = cc.outbound()
    header = cc.sealed(out).header
    assert (header.to, header.cc) == (("cn.gov",), ("jl.gov",))
    assert header.copy_numbers == {"cn.gov": "000001", "jl.gov": "000002"}
    assert header.secrecy_period == "1y"
    notes = cc.ctx.state.notes(out.msg_id)
    assert {k: notes[k] for k in ("added_cc", "copy_numbers", "rule_warnings")} == {
        "added_cc": ["jl.gov"],
        "copy_numbers": {"cn.gov": "000001", "jl.gov": "000002"},
        "rule_warnings": [],
    }
    assert list(cc.failed.iterdir()) == []


async def test_auto_cc_on_a_notice_down_past_a_level_seals_it_for_the_prefecture_passed_over(
    offline_spoke: OfflineSpokeFactory, world: World
) -> None:
    gov = offline_spoke("jl.gov")
    meta = {"主送": "jl.cc.nongan", "密级": "内部", "文种": "通知", "标题": "关于春耕的通知"}
    gov.drop("越级通知.txt", b"notice\n", toml_meta({**meta, "自动抄送": True}))
    await gov.settle()

    (out,) = gov.outbound()
    header = gov.sealed(out).header
    assert (header.to, header.cc) == (("jl.cc.nongan",), ("jl.cc",))
    for recipient in ("jl.cc.nongan", "jl.cc"):
        assert gov.open_as(world, out, recipient) == {"越级通知.txt": b"notice\n"}
    assert gov.ctx.state.notes(out.msg_id)["added_cc"] == ["jl.cc"]
    assert gov.ctx.state.notes(out.msg_id)["rule_warnings"] == []


async def test_a_notice_down_past_a_level_without_auto_cc_is_sealed_with_a_warning(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    gov = offline_spoke("jl.gov")
    meta = {"主送": "jl.cc.nongan", "密级": "内部", "文种": "通知", "标题": "关于秋收的通知"}
    gov.drop("越级通知.txt", b"notice\n", toml_meta(meta))
    await gov.settle()

    (out,) = gov.outbound()
    assert gov.sealed(out).header.cc == ()
    (warning,) = gov.ctx.state.notes(out.msg_id)["rule_warnings"]
    assert (warning["rule"], warning["mode"], warning["add_cc"]) == (
        "skip_level_down",
        "warn",
        ["jl.cc"],
    )
    assert list(gov.failed.iterdir()) == []


async def test_a_report_whose_title_asks_for_approval_is_sealed_with_a_warning_without_the_title(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    nongan = offline_spoke("jl.cc.nongan")
    title = "关于防汛工作情况的报告并请批准追加经费"
    meta = {"主送": "jl.cc", "密级": "内部", "文种": "报告", "标题": title, "签发人": "刘某"}
    nongan.drop("夹带请示.txt", b"report\n", toml_meta(meta))
    await nongan.settle()

    (out,) = nongan.outbound()
    notes = nongan.ctx.state.notes(out.msg_id)
    (warning,) = notes["rule_warnings"]
    assert warning["rule"] == "request_report_mixed"
    assert "contains 请批准" in warning["en"]
    assert title not in json.dumps(notes, ensure_ascii=False)


async def test_a_motion_to_a_peer_is_refused_at_the_spoke_naming_the_congress(
    offline_spoke: OfflineSpokeFactory,
) -> None:
    cc = offline_spoke("jl.cc")
    meta = {"主送": "jl.jl", "密级": "内部", "文种": "议案", "标题": "关于提请审议某条例草案的议案"}
    cc.drop("议案.txt", b"motion\n", toml_meta(meta))
    await cc.settle()

    assert cc.outbound() == []
    text = (cc.failed / "议案.txt.error.txt").read_text(encoding="utf-8")
    assert "[motion_recipient] 《党政机关公文处理工作条例》第八条（十三）" in text
    assert "请主送 jl.cc.congress（长春市人民代表大会常务委员会）" in text
    assert "address it to jl.cc.congress" in text
