"""Why a drop is not sent, in Chinese and in English: every refusal an integrator can see.

A refusal names its rule (``drop.*`` for the spoke's own checks, ``rule.*`` for the
document rules, the hub's reason code for the hub's), a sentence with the values, and what
to do, in both languages. The spoke's own sentences live in :data:`CATALOGUE`, one entry
per rule, so that docs/integrators.md can list them all (``python -m spoke.refusals``
prints the table) and a test can hold the two together. The hub's refusals arrive as a
reason code and an English sentence; :data:`HUB_REASONS` says in Chinese what each code
means and what to do.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from schemas.errors import Reason, XchgError
from schemas.rules import Finding, Mode


@dataclass(frozen=True)
class Refusal(XchgError):  # noqa: N818 - a refusal is a value that also travels as an exception
    """Why a drop is not sent: a rule id, a sentence with the values and what to do, in
    English (``message``, ``hint``) and Chinese (``message_zh``, ``hint_zh``).

    A refusal by the document rules also carries every finding (``rule`` is then the
    first one's reason, ``rule.<id>``)."""

    rule: str
    message: str
    hint: str
    values: dict[str, Any] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    message_zh: str = ""
    hint_zh: str = ""

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message} {self.hint}"

    @property
    def loggable(self) -> str | None:
        """The sentence for a log line, or None where it may quote what the metadata says
        (a 发文字号, a value): logs get the rule, never the document's words."""
        if self.rule.startswith("rule.") or self.rule in QUOTES_METADATA:
            return None
        return self.message

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "message": self.message,
            "hint": self.hint,
            "message_zh": self.message_zh,
            "hint_zh": self.hint_zh,
            "values": self.values,
        }
        if self.findings:
            out["findings"] = [f.as_dict(Mode.ENFORCE) for f in self.findings]
        return out


@dataclass(frozen=True, slots=True)
class Texts:
    """One rule's sentences: ``{name}`` fields are filled from the refusal's values."""

    zh: str
    en: str
    hint_zh: str
    hint_en: str


# Refusals whose sentence quotes what the metadata says: kept out of log lines.
QUOTES_METADATA: Final = frozenset(
    {"drop.bad_metadata", "drop.duplicate_doc_number", "drop.declared_mismatch"}
)
_AGAIN_ZH = "修改后重新投递。"
_AGAIN_EN = "Correct it and drop the document again."

CATALOGUE: Final[dict[str, Texts]] = {
    # ---- the outbox: what is there, and whether it is complete
    "drop.no_metadata": Texts(
        "“{document}”已等待 {waited_s} 秒，旁边仍没有元数据文件“{document}.meta.toml”或"
        "“{document}.meta.json”。",
        "'{document}' has waited {waited_s} s without '{document}.meta.toml' or "
        "'{document}.meta.json'.",
        "请在文件旁写入元数据文件（最后写入，作为提交标记）后重新投递；文件已原样移入 failed/。",
        "Write the metadata file next to the document (last, as the commit marker) and drop "
        "it again; the document was moved to failed/ unchanged.",
    ),
    "drop.metadata_without_document": Texts(
        "元数据文件“{metadata}”指向的文件“{document}”已等待 {waited_s} 秒仍不在发件箱中。",
        "'{metadata}' names the document '{document}', which has not been in the outbox for "
        "{waited_s} s.",
        "请先放入文件，最后写入元数据文件；元数据文件名应为“文件名.meta.toml”。",
        "Put the document in first, then write the metadata file last, named after the "
        "document ('NAME.meta.toml').",
    ),
    "drop.two_metadata": Texts(
        "“{document}”有两个元数据文件：{metadata}；无法判断以哪一个为准。",
        "'{document}' has two metadata files: {metadata}; the spoke cannot tell which one counts.",
        "只保留一个元数据文件（.meta.toml 或 .meta.json），与文件一起重新投递。",
        "Keep one metadata file (.meta.toml or .meta.json) and drop the document again with it.",
    ),
    "drop.temporary_name": Texts(
        "元数据文件“{metadata}”指向“{document}”，这是临时文件的名字（以 .part、.tmp 结尾，或以 ~$ "
        "开头），交换程序视其为仍在写入的文件，永远不会发送。",
        "'{metadata}' names '{document}', a temporary file's name (ending in .part or .tmp, "
        "or starting with ~$), which the spoke takes for a file still being written and "
        "never sends.",
        "文件写完后改为正式名称，并将元数据文件命名为“正式名称.meta.toml”，然后重新投递。",
        "Once the document is complete, give it its final name, name the metadata file "
        "after it ('NAME.meta.toml') and drop both again.",
    ),
    "drop.incomplete": Texts(
        "“{document}”尚未写完：临时文件 {temporaries}"
        "（正在复制、正被编辑器打开，或中断的复制留下的文件）已 {waited_s} 秒没有变化。",
        "'{document}' is not complete: {temporaries} (being copied, held open by an editor, "
        "or left by an interrupted copy) unchanged for {waited_s} s.",
        "临时文件已与它一起移到 failed/。请完成复制（或关闭文档）后，重新投递文件和元数据文件。",
        "The temporary files are here with it. Finish the copy (or close the document), "
        "then drop it and its metadata again.",
    ),
    "drop.cannot_move": Texts(
        "交换程序无法把“{document}”移出发件箱：{error}。",
        "the spoke cannot move '{document}' out of the outbox: {error}.",
        "请让交换程序的运行用户可以写这个文件夹和发件箱"
        "（移动文件夹需要对文件夹本身有写权限：chmod u+w 或 g+w），或以该用户的身份复制进来；"
        "文件一有变化，交换程序就会再试。",
        "Give the spoke's user write permission on it and on the outbox (moving a folder "
        "needs write permission on the folder itself: chmod u+w or g+w), or copy it in as "
        "that user; the spoke tries again as soon as anything of it changes.",
    ),
    "drop.bad_name": Texts(
        "名称 {name} {problem_zh}。",
        "the name {name} {problem}.",
        '请改名后重新投递：名称须为 UTF-8 文本，不含 / \\ 控制字符和 < > : " | ? *，'
        "不以 .. 开头，不超过 255 字节，且不是 CON、NUL、COM1 等设备名。",
        "Rename it and drop it again: a name is UTF-8 text without / \\, control characters "
        "or < > : \" | ? *, does not start with '..', is at most 255 bytes and is not a "
        "device name such as CON, NUL or COM1.",
    ),
    "drop.symlink": Texts(
        "“{file}”是符号链接。",
        "'{file}' is a symbolic link.",
        "请把文件本身（而不是指向它的链接）放入发件箱，元数据文件也一样。",
        "Put the file itself in the outbox, not a link to it; the same goes for the metadata file.",
    ),
    "drop.not_a_file": Texts(
        "“{file}”不是普通文件（而是设备、管道或套接字）。",
        "'{file}' is not a regular file (a device, a pipe or a socket).",
        "只能发送普通文件；请复制真正的文件后重新投递。",
        "Only ordinary files can be sent; copy the real file into the outbox and drop it again.",
    ),
    "drop.hard_link": Texts(
        "“{file}”有 {links} 个硬链接。",
        "'{file}' has {links} hard links.",
        "请把文件复制（而不是链接）到发件箱，以免发送过程中被其他位置修改。",
        "Copy the file into the outbox instead of linking it, so it cannot change while it "
        "is sent.",
    ),
    "drop.empty_file": Texts(
        "“{file}”是空文件（0 字节）。",
        "'{file}' is empty (0 bytes).",
        "请确认文件已完整写入后重新投递。",
        "Check that the document was written completely, then drop it again.",
    ),
    "drop.file_too_large": Texts(
        "“{file}”有 {size} 字节，超过上限 {limit} 字节。",
        "'{file}' is {size} bytes; the limit is {limit}.",
        "请拆分文件，或请运维人员调大 [limits] max_file_bytes。",
        "Split the document, or ask the operator to raise [limits] max_file_bytes.",
    ),
    "drop.nested_folder": Texts(
        "“{document}/{name}”是文件夹；一次投递只能是一个文件，或一个只含文件的文件夹。",
        "'{document}/{name}' is a folder; a drop is one file, or one folder of files.",
        "请把所有文件直接放在投递文件夹中（不要再嵌套文件夹）后重新投递。",
        "Put every file directly in the drop folder, with no folder inside it, and drop it again.",
    ),
    "drop.empty_folder": Texts(
        "文件夹“{document}”是空的。",
        "the folder '{document}' is empty.",
        "请放入正文和附件后重新投递。",
        "Put the document and its attachments in it and drop it again.",
    ),
    "drop.too_many_files": Texts(
        "文件夹“{document}”有 {files} 个文件，上限为 {limit} 个。",
        "the folder '{document}' holds {files} files; the limit is {limit}.",
        "请把附件打包（如 zip）后重新投递。",
        "Bundle the attachments (a zip file, say) and drop the document again.",
    ),
    "drop.unreadable": Texts(
        "交换程序无法读取“{file}”：{error}。",
        "the spoke cannot read '{file}': {error}.",
        "请让交换程序的运行用户可以读取该文件及其所在文件夹后重新投递。",
        "Give the spoke's user read access to the file and its folder, then drop it again.",
    ),
    # ---- the metadata
    "drop.bad_metadata": Texts(
        "元数据文件“{metadata}”无法使用：{problems_zh}。",
        "'{metadata}' cannot be used: {problems_en}.",
        "请按 docs/integrators.md 和 schemas/metadata.schema.json 修改元数据后重新投递。",
        "Correct the metadata (see docs/integrators.md and schemas/metadata.schema.json) "
        "and drop the document again.",
    ),
    "drop.already_expired": Texts(
        "失效时间 {expires} 已经过去，文件送达前就已失效。",
        "its expiry ({expires}) has already passed: it would expire before it is delivered.",
        "请改为将来的失效时间，或删去“失效时间”后重新投递。",
        "Set expires (失效时间) to a time in the future, or remove it, and drop the "
        "document again.",
    ),
    "drop.deadline_past": Texts(
        "{deadline} {at} 已经过去，收文机关无法按时完成。",
        "its {deadline} deadline ({at}) has already passed: no recipient could meet it.",
        "请改为将来的时间或发出后的时长（如 3天、30分钟），或删去该时限后重新投递。",
        "Set it to a time in the future or a span after sending (3d, 30m), or remove it, and "
        "drop the document again.",
    ),
    "drop.declared_mismatch": Texts(
        "“{document}”与元数据中声明的文件不符：{problems_zh}。",
        "'{document}' does not match the files its metadata declares: {problems_en}.",
        "请核对文件是否完整写入、声明的大小和 SHA-256（sha256sum 文件名）是否正确，"
        "修改后重新投递。",
        "Check that every file was written completely and that the declared size and "
        "SHA-256 (sha256sum FILE) are right, then drop the document again.",
    ),
    "drop.duplicate": Texts(
        "同样的文件（相同内容和元数据）已于 {first_at} 发送，msg_id 为 {first_msg_id}。",
        "the same document (the same bytes and metadata) was sent at {first_at} as {first_msg_id}.",
        "如确需再次发送，请在元数据中写 resend = true（重发）后重新投递；否则无需处理。",
        "If it must go again, set resend = true (重发) in the metadata and drop it again; "
        "otherwise nothing needs doing.",
    ),
    "drop.duplicate_doc_number": Texts(
        "发文字号 {doc_number} 已于 {first_at} 由本机关发出，msg_id 为 {first_msg_id}。",
        "the document number {doc_number} was already sent by this organisation at "
        "{first_at} as {first_msg_id}.",
        "发文字号不能重复：请核对发文字号；如确为同一文件需要重发（如更正后重发），"
        "请在元数据中写 resend = true（重发）。",
        "A document number is used once: check it; if this is the same document sent again "
        "on purpose (a corrected version, say), set resend = true (重发) in the metadata.",
    ),
    # ---- addresses and labels
    "drop.sender_unknown": Texts(
        "本机关（{org}）不在第 {version} 版交换目录中。",
        "this organisation ({org}) is not in directory version {version}.",
        "请联系枢纽运维人员将本机关加入目录。",
        "Ask the hub operator to add it to the directory.",
    ),
    "drop.unknown_recipient": Texts(
        "收文地址 {unknown} 不在第 {version} 版交换目录中（既不是机关代码，也不是 @分组）。",
        "{problem}.",
        "请核对地址：'spoke directory --config 配置文件 地址' 向枢纽查询该地址"
        "（目录证明其不存在时即为不在目录中）。",
        "Check the address: 'spoke directory --config FILE ADDRESS' looks it up at the hub "
        "(an address the directory proves absent is not listed).",
    ),
    "drop.recipient_awaiting_keys": Texts(
        "收文机关 {org}（{name}）在第 {version} 版交换目录中尚待提交密钥，暂不能收文。",
        "recipient {org} ({name}) is awaiting keys in directory version {version}: it cannot "
        "receive documents yet.",
        "请把 {org} 从收文机关中去掉、另行送达；或请枢纽运维人员在收到其公钥后重新签发目录，"
        "本交换程序取得新目录后再投递。",
        "Leave {org} out and deliver it to them another way; or ask the hub operator to sign "
        "a new directory once its public keys are in, and drop the document again when this "
        "spoke holds it.",
    ),
    "drop.recipient_no_key": Texts(
        "收文机关 {org}（{name}）在第 {version} 版交换目录中没有可用的加密公钥（已吊销或已过期），"
        "文件无法加密给它。",
        "recipient {org} ({name}) has no valid, unrevoked encryption key in directory version "
        "{version}: the document cannot be sealed to it.",
        "请把 {org} 从收文机关中去掉、另行送达；或请枢纽运维人员发布其新公钥并重新签发目录，"
        "本交换程序取得新目录后再投递。",
        "Leave {org} out and deliver it to them another way; or ask the hub operator to "
        "publish its new key in a new directory, and drop the document again when this "
        "spoke holds it.",
    ),
    "drop.group_awaiting_keys": Texts(
        "分组 @{group}（{name}）的成员 {members} 在第 {version} 版交换目录中都尚待提交密钥，"
        "该分组无人可以收文。",
        "every member of the group @{group} ({name_en}), {members}, is awaiting keys in "
        "directory version {version}: nobody in it can receive documents yet.",
        "请把 @{group} 从收文机关中去掉、另行送达；或请枢纽运维人员在收到其成员的公钥后重新签发"
        "目录，本交换程序取得新目录后再投递。",
        "Leave @{group} out and deliver it to its members another way; or ask the hub "
        "operator to sign a new directory once their public keys are in, and drop the "
        "document again when this spoke holds it.",
    ),
    "drop.no_recipient": Texts(
        "展开分组后，除本机关外没有主送机关。",
        "after expanding groups, no primary recipient (主送) remains besides this organisation.",
        "请至少主送一个其他机关。",
        "Name at least one other organisation as a primary recipient (to).",
    ),
    "drop.too_many_recipients": Texts(
        "展开分组后共有 {count} 个收文机关（主送和抄送合计；{groups_zh}），"
        "超过一份公文信封可容纳的上限 {limit} 个。",
        "after expanding groups the drop has {count} recipients (to and cc together; "
        "{groups}), more than the {limit} one envelope can carry.",
        "请把收文机关分成几批、每批不超过 {limit} 个分别投递"
        "（例如每份只写一个分组或名单的一部分），或少写几个分组。",
        "Split the recipients into several drops of at most {limit} each (one group, or part "
        "of the list, per drop), or address fewer groups.",
    ),
    "drop.sender_clearance": Texts(
        "密级{classification_zh}高于本机关（{org}）的定密权限{clearance_zh}。",
        "classification {classification} is above this organisation's own clearance "
        "({org}: {clearance}).",
        "本机关不能经交换发送该密级的文件：请核对密级；如密级无误，请通过有相应权限的机关或涉密渠道办理。",
        "This organisation may not send documents of that classification through the "
        "exchange: check the label; if it is right, have an organisation cleared for it "
        "send the document.",
    ),
    "drop.above_clearance": Texts(
        "密级{classification_zh}高于收文机关 {org}（{name}）的密级权限{clearance_zh}。",
        "classification {classification} is above the clearance of {org} ({name}), which "
        "is {clearance}.",
        "只发给有相应密级权限的机关，或在文件允许时降低密级。",
        "Send it only to organisations cleared for it, or lower the label if the document allows.",
    ),
    "drop.no_channel": Texts(
        "本机关接入的通道（{channels}）都不能承载密级{classification_zh}的文件。",
        "this organisation is on {channels}, and none of these channels carries {classification}.",
        "请降低密级（如文件允许），或由接入相应涉密通道的机关发送。",
        "Lower the label if the document allows, or send it from an organisation "
        "provisioned on a channel that carries it.",
    ),
    "drop.no_route": Texts(
        "没有通道能把密级{classification_zh}的文件从本机关（{org}）送到 {recipient}（{name}）："
        "双方共同接入的通道（{shared_zh}）都不能承载该密级，枢纽会拒收（policy.no_channel）。",
        "no channel carries {classification} from {org} to {recipient} ({name}): the "
        "channels both are on ({shared}) all have a lower ceiling, so the hub would refuse "
        "it (policy.no_channel).",
        "请把 {recipient} 从收文机关中去掉、另行送达，或在文件允许时降低密级；如确需经交换发送，"
        "请联系枢纽运维人员为双方开通能承载该密级的共同通道。",
        "Leave {recipient} out and deliver it to them another way, or lower the label if "
        "the document allows; if it must go through the exchange, ask the hub operator to "
        "provision a channel both are on that carries it.",
    ),
    # ---- sealing
    "drop.changed": Texts(
        "“{document}”在加密封装过程中被修改，且发件箱中又出现了同名的新投递。",
        "'{document}' changed while it was being sealed, and a new drop of the same name "
        "is already in the outbox.",
        "旧版本已原样移到 failed/；发件箱中的新版本会正常发送。请确保文件写完后再写入元数据文件。",
        "The older version is here unchanged; the new one in the outbox is sent as usual. "
        "Write the metadata file only once the document is complete.",
    ),
    "drop.not_sealed": Texts(
        "无法加密封装该文件：{error}。",
        "the drop could not be sealed: {error}.",
        "请确认文件在发件箱中时没有被修改，然后重新投递；如仍失败，请把本文件交给运维人员。",
        "Make sure no file changes while it is in the outbox and drop it again; if it "
        "fails again, give this file to the operator.",
    ),
    "drop.internal_error": Texts(
        "交换程序处理该投递时发生意外错误（{error}），文件未发送。",
        "the spoke met an unexpected error while handling this drop ({error}); nothing was sent.",
        "文件已原样放在这里。请把本文件和交换程序日志中的 drop.error 事件交给运维人员；"
        "问题排除后可重新投递。",
        "The drop is here unchanged. Give this file and the drop.error event of the spoke's "
        "log to the operator; once it is fixed, drop the document again.",
    ),
}

# The hub's reason codes (REJECTED receipts), said in Chinese: what happened, what to do.
_KEYS_OUTDATED = "本机关的密钥或交换目录可能已过期：请联系枢纽运维人员。"
_BROKEN = "发来的数据不完整或已损坏：请重新投递；如反复出现，请联系运维人员。"
HUB_REASONS: Final[dict[str, tuple[str, str]]] = {
    Reason.DECODE_TOO_LARGE: ("消息超过枢纽允许的大小", "请拆分文件后重新投递。"),
    Reason.DECODE_MALFORMED: ("消息格式有误", _BROKEN),
    Reason.DECODE_LIMIT: ("消息超出解码限制", _BROKEN),
    Reason.DECODE_TOO_DEEP: ("消息嵌套过深", _BROKEN),
    Reason.DECODE_NON_CANONICAL: ("消息不是规范编码", _BROKEN),
    Reason.DECODE_FORBIDDEN_TYPE: ("消息含有不允许的数据类型", _BROKEN),
    Reason.DECODE_TRAILING_BYTES: ("消息末尾有多余数据", _BROKEN),
    Reason.SCHEMA_INVALID: ("消息字段有误", _BROKEN),
    Reason.SCHEMA_VERSION: ("消息版本不受支持", "请升级本机关的交换程序。"),
    Reason.SIG_INVALID: ("签名验证失败", _KEYS_OUTDATED),
    Reason.SIG_UNKNOWN_SENDER: ("发文机关不在交换目录中", _KEYS_OUTDATED),
    Reason.SIG_UNKNOWN_KEY: ("签名密钥不在交换目录中", _KEYS_OUTDATED),
    Reason.SIG_KEY_REVOKED: (
        "签名密钥已被吊销",
        "请联系枢纽运维人员更换密钥（spoke keygen --rotate）。",
    ),
    Reason.SIG_KEY_NOT_YET_VALID: ("签名密钥尚未生效", "请等待新密钥生效，或联系枢纽运维人员。"),
    Reason.SIG_KEY_EXPIRED: (
        "签名密钥已过期",
        "请联系枢纽运维人员更换密钥（spoke keygen --rotate）。",
    ),
    Reason.SIG_SENDER_MISMATCH: ("发文机关与连接身份不一致", _KEYS_OUTDATED),
    Reason.ENV_NO_RECIPIENT: ("信封中没有收文机关", "请至少填写一个主送机关后重新投递。"),
    Reason.ENV_DUPLICATE_RECIPIENT: ("收文机关重复", "每个机关只写一次后重新投递。"),
    Reason.ENV_TOO_MANY_RECIPIENTS: (
        "收文机关超过一件信封的上限",
        "请将收文机关分成几批，分别投递。",
    ),
    Reason.ENV_KEYS_MISMATCH: ("收文机关与加密密钥不对应", _KEYS_OUTDATED),
    Reason.ENV_NOT_A_RECIPIENT: ("收文机关不是本文件的收件人", _KEYS_OUTDATED),
    Reason.ENV_UNKNOWN_RECIPIENT: ("收文机关不在交换目录中", "请核对收文机关后重新投递。"),
    Reason.ENV_RECIPIENT_AWAITING_KEYS: (
        "收文机关尚待提交密钥，暂不能收文",
        "请另行送达，或请枢纽运维人员在收到其公钥后重新签发目录。",
    ),
    Reason.ENV_KEY_UNSEAL_FAILED: ("文件密钥无法解封", _KEYS_OUTDATED),
    Reason.ENV_BAD_LABEL: ("信封的标签字段有误（如失效时间早于发文时间）", _AGAIN_ZH),
    Reason.ENV_BAD_SLOTS: ("大范围发文的收文机关列表与签名不符", _BROKEN),
    Reason.BODY_SIZE_MISMATCH: ("正文大小与信封不符", _BROKEN),
    Reason.BODY_HASH_MISMATCH: ("正文摘要与信封不符", _BROKEN),
    Reason.BODY_DECRYPT_FAILED: ("正文无法解密", _BROKEN),
    Reason.BODY_TRUNCATED: ("正文不完整", _BROKEN),
    Reason.BODY_MISSING_FINAL: ("正文缺少结束块", _BROKEN),
    Reason.BODY_TRAILING_DATA: ("正文末尾有多余数据", _BROKEN),
    Reason.INNER_MALFORMED: ("内层记录有误", _BROKEN),
    Reason.INNER_BAD_SIGNATURE: ("内层签名验证失败", _KEYS_OUTDATED),
    Reason.INNER_HEADER_MISMATCH: ("内层记录与信封不符", _BROKEN),
    Reason.INNER_FILE_DIGEST: ("文件摘要不符", _BROKEN),
    Reason.REPLAY_DUPLICATE: ("同一 msg_id 已收到过", "无需处理：该文件此前已被接收。"),
    Reason.REPLAY_CLOCK_SKEW: ("本机时间与枢纽相差过大", "请校准本服务器时间（NTP）后重新投递。"),
    Reason.REPLAY_EXPIRED: ("文件在到达枢纽前已失效", "请改为将来的失效时间后重新投递。"),
    Reason.DIR_BAD_SIGNATURE: ("交换目录签名有误", _KEYS_OUTDATED),
    Reason.DIR_ROLLBACK: ("交换目录版本回退", _KEYS_OUTDATED),
    Reason.DIR_EQUIVOCATION: ("同一版本出现了不同的交换目录", _KEYS_OUTDATED),
    Reason.DIR_EXPIRED: ("交换目录已过期", _KEYS_OUTDATED),
    Reason.DIR_NOT_YET_VALID: ("交换目录尚未生效", _KEYS_OUTDATED),
    Reason.DIR_INCONSISTENT: ("交换目录内容不一致", _KEYS_OUTDATED),
    Reason.DIR_BAD_PROOF: ("交换目录条目的证明不成立", _KEYS_OUTDATED),
    Reason.POLICY_SENDER_NOT_ON_CHANNEL: (
        "本机关没有接入文件到达的通道",
        "请降低密级或改由接入相应通道的机关发送。",
    ),
    Reason.POLICY_ARRIVAL_CHANNEL: (
        "文件密级高于其到达通道的承载上限，已被隔离",
        "涉密文件只能经相应的涉密通道发送：请立即报告保密管理人员，并联系枢纽运维人员。",
    ),
    Reason.POLICY_SENDER_CLEARANCE: ("密级高于本机关的密级权限", "请核对密级后重新投递。"),
    Reason.POLICY_RECIPIENT_CLEARANCE: (
        "密级高于收文机关的密级权限",
        "只发给有相应密级权限的机关，或在文件允许时降低密级。",
    ),
    Reason.POLICY_NO_CHANNEL: (
        "没有能承载该密级、且本机关与收文机关都接入的通道",
        "请降低密级（如文件允许）或更换收文机关。",
    ),
    Reason.ENV_CASE_NOT_HELD: (
        "该信访件编号的案件从未经过本机关，不能由本机关转送或续办",
        "请核对信访件编号；新的信访件请使用新的编号。",
    ),
    Reason.ENV_EXTENSION_TOO_LONG: (
        "信访件办理期限延长超过 30 日",
        "依《信访工作条例》，办理期限最多延长 30 日：请改正办理时限后重新投递。",
    ),
    Reason.ENV_DEADLINE_PAST: (
        "文件的签收、受理或办理时限在到达枢纽时已经过去",
        "请改为将来的时限（或删去时限）后重新投递。",
    ),
    Reason.HUB_BUSY: ("枢纽繁忙，暂时无法接收", "请稍后重新投递。"),
    Reason.HUB_DISK_LOW: (
        "枢纽磁盘空间不足，暂停接收新文件",
        "请稍后重新投递，并告知枢纽运维人员。",
    ),
    Reason.RCPT_BAD_SIGNATURE: ("回执签名验证失败", _KEYS_OUTDATED),
    Reason.RCPT_WRONG_ISSUER: ("回执签发者不符", _KEYS_OUTDATED),
    Reason.LEDGER_BAD_SIGNATURE: ("账本检查点签名验证失败", _KEYS_OUTDATED),
    # recall and return (spoke.flows): the hub's REFUSED of a statement
    Reason.FLOW_UNKNOWN_MESSAGE: (
        "枢纽没有此文件",
        "请核对 msg_id（见 sent/ 或 inbox/ 中的文件夹名）。",
    ),
    Reason.FLOW_NOT_SENDER: ("只有发文单位可以撤回此文件", "请由发文单位撤回。"),
    Reason.FLOW_NOT_RECIPIENT: ("此文件不是发给本单位的", "请核对 msg_id。"),
    Reason.FLOW_NOT_RECEIVED: ("此文件尚未送达本单位或已被撤回", "无需退文。"),
    Reason.FLOW_NOT_RECALLED: ("此文件没有待答复的撤回", "无需答复。"),
    Reason.FLOW_WRONG_SUBJECT: ("声明所指的文件版本不符", "请联系枢纽运维人员。"),
    Reason.FLOW_ONE_PER_BATCH: ("撤回、退文声明须单独发送", "请联系枢纽运维人员（交换程序缺陷）。"),
    Reason.FLOW_BAD_NOTE: ("理由无法解密或不是文字", "请重新填写理由后再试。"),
    Reason.FLOW_NOT_PETITION: ("此文件不是信访件，无所谓受理与否", "请改报已阅、办理中或办结。"),
    Reason.FED_OUTSIDE_PREFIX: (
        "转发枢纽不服务于发文机关（超出其机构代码前缀）",
        "请联系枢纽运维人员：发文机关须经其所属省级枢纽发文。",
    ),
    Reason.FED_MEMBERSHIP: (
        "转发枢纽的成员密钥已吊销或过期",
        "请联系枢纽运维人员：须在上级交换目录中登记新的成员密钥后重发。",
    ),
    Reason.FED_WRONG_HOP: (
        "外部机关不能直接接入本枢纽发文",
        "请经该机关所属枢纽发文；如属误配置，请联系枢纽运维人员。",
    ),
    Reason.FED_LOOP: (
        "收文机关均在来文枢纽一侧，文件被退回原路",
        "请联系枢纽运维人员（交换目录前缀配置有误）。",
    ),
}
HUB_RULE_ZH: Final = (
    "枢纽依据行文规则拒收",
    "请按拒收说明（中英文）修改后重新投递；docs/rules.md 解释了每条规则。",
)
HUB_UNKNOWN_ZH: Final = (
    "枢纽拒收",
    "请按拒收原因修改后重新投递；如不明白原因，请联系枢纽运维人员。",
)
HUB_RETRIABLE_ZH: Final = "枢纽暂时无法接收，请稍后重新投递。"


def hub_reason_zh(reason: str | None, *, retriable: bool) -> tuple[str, str]:
    """(what the hub's reason code means, what to do), in Chinese."""
    what, todo = HUB_UNKNOWN_ZH
    if reason is not None and reason.startswith("rule."):
        what, todo = HUB_RULE_ZH
    elif reason is not None and reason in HUB_REASONS:
        what, todo = HUB_REASONS[reason]
    return what, (HUB_RETRIABLE_ZH if retriable else todo)


def refuse(rule: str, values: Mapping[str, Any] | None = None, /, **fill: object) -> Refusal:
    """The refusal ``rule`` of :data:`CATALOGUE`, its sentences filled from ``fill``;
    ``values`` (default: ``fill``) is what NAME.error.json carries for systems."""
    texts = CATALOGUE[rule]
    shown = {k: _shown(v) for k, v in fill.items()}
    return Refusal(
        rule,
        texts.en.format(**shown),
        texts.hint_en.format(**shown),
        dict(fill) if values is None else dict(values),
        message_zh=texts.zh.format(**shown),
        hint_zh=texts.hint_zh.format(**shown),
    )


def _shown(value: object) -> object:
    if isinstance(value, float):
        return f"{value:g}"
    return value


def markdown_table() -> str:
    """The table of docs/integrators.md: every rule with its sentences as written here."""
    lines = ["| rule | 中文 | English |", "| --- | --- | --- |"]
    for rule, t in CATALOGUE.items():
        zh = f"{t.zh} {t.hint_zh}".replace("|", "\\|")
        en = f"{t.en} {t.hint_en}".replace("|", "\\|")
        lines.append(f"| `{rule}` | {zh} | {en} |")
    return "\n".join(lines) + "\n"


def markdown_hub_table() -> str:
    """The hub's reason codes with what each means and what to do, in Chinese."""
    lines = ["| reason | 含义 | 处理办法 |", "| --- | --- | --- |"]
    lines += [f"| `{reason}` | {what} | {todo} |" for reason, (what, todo) in HUB_REASONS.items()]
    lines.append(f"| `rule.*` | {HUB_RULE_ZH[0]} | {HUB_RULE_ZH[1]} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the tables of docs/integrators.md
    sys.stdout.write(markdown_table() + "\n" + markdown_hub_table())
