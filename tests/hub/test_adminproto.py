"""The admin socket's line protocol (hubd.admin.protocol): limits, the closed set of ops,
validated arguments, and refusals that name the rule and the value."""

from __future__ import annotations

import json

import pytest

from hubd.admin.protocol import (
    MAX_ANSWER,
    MAX_REQUEST,
    HubRefusedError,
    Op,
    ProtocolError,
    RedeliverArgs,
    encode_error,
    encode_request,
    encode_result,
    parse_answer,
    parse_request,
)

GOOD_ID = "61a070d374b748bfe08a02599b441ee2"


def line(value: object) -> bytes:
    return json.dumps(value).encode()


def request(op: str, **args: object) -> bytes:
    return line({"version": 1, "op": op, "args": args})


# ---------------------------------------------------------------------------- accepted


def test_a_redeliver_request_for_one_message_to_one_org_is_parsed() -> None:
    parsed = parse_request(request("redeliver", msg_id=GOOD_ID, to="jl.cc"))

    assert parsed.op is Op.REDELIVER
    assert isinstance(parsed.args, RedeliverArgs)
    assert parsed.args.msg_id_bytes == bytes.fromhex(GOOD_ID)
    assert (parsed.args.dead, parsed.args.to) == (False, "jl.cc")


def test_requests_round_trip_through_the_clients_encoder() -> None:
    for op, args in (
        (Op.PRESENCE, {}),
        (Op.DIRECTORY_PUBLISH, {}),
        (Op.REDELIVER, {"dead": True, "to": None}),
    ):
        encoded = encode_request(op, **args)
        assert encoded.endswith(b"\n")
        assert encoded.count(b"\n") == 1
        assert parse_request(encoded[:-1]).op is op


def test_only_redeliver_and_directory_publish_are_mutating() -> None:
    assert {op for op in Op if op.mutating} == {Op.REDELIVER, Op.DIRECTORY_PUBLISH}


# ---------------------------------------------------------------------------- refused


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b"x" * (MAX_REQUEST + 1), "request.too_large", [str(MAX_REQUEST + 1), str(MAX_REQUEST)]),
        (b"not json", "request.not_json", ["JSON"]),
        (b"[1, 2]", "request.not_an_object", ["object", "list"]),
        (b"[" * 3000 + b"]" * 3000, "request.too_large", []),
        (b"[" * 2000, "request.too_deep", ["nested"]),
        (line({"op": "presence"}), "request.version", ["None", "version 1"]),
        (line({"version": 2, "op": "presence"}), "request.version", ["version 2"]),
        (line({"version": True, "op": "presence"}), "request.version", ["True"]),
        (line({"version": 1, "op": "presence", "x": 1}), "request.unknown_field", ["'x'"]),
        (request("drop_table"), "request.op", ["'drop_table'", "presence", "redeliver"]),
        (line({"version": 1, "op": 7}), "request.op", ["'7'"]),
        (line({"version": 1, "op": "presence", "args": []}), "request.args", ["object"]),
        (request("presence", verbose=True), "request.args", ["verbose", "Extra inputs"]),
        (request("redeliver", msg_id="61A070D3"), "request.args", ["'61A070D3'", "32 lowercase"]),
        (request("redeliver", msg_id=GOOD_ID[:-1] + "g"), "request.args", ["32 lowercase"]),
        (request("redeliver", msg_id=7), "request.args", ["msg_id"]),
        (request("redeliver", dead=True, to="JL.CC"), "request.args", ["'JL.CC'", "capital"]),
        (request("redeliver", dead=True, to="jl.cc/#"), "request.args", ["'/'"]),
        (request("redeliver", dead=True, to="jl..cc"), "request.args", ["'..'"]),
        (request("redeliver", dead="yes"), "request.args", ["dead", "boolean"]),
        (request("redeliver"), "request.args", ["either msg_id", "dead"]),
        (request("redeliver", msg_id=GOOD_ID, dead=True), "request.args", ["not both"]),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_a_bad_request_is_refused_with_a_code_and_a_sentence_naming_the_value(
    raw: bytes, code: str, words: list[str]
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(raw)

    assert caught.value.code == code
    for word in words:
        assert word in caught.value.message
    assert "Value error," not in caught.value.message  # pydantic's prefix is not a sentence


def test_the_client_refuses_a_request_the_hub_would_refuse() -> None:
    with pytest.raises(ProtocolError) as caught:
        encode_request(Op.REDELIVER, dead=True, to="JL.CC")
    assert caught.value.code == "request.args"


# ---------------------------------------------------------------------------- answers


def test_a_result_and_an_error_round_trip() -> None:
    assert parse_answer(encode_result({"version": 7})[:-1]) == {"version": 7}
    with pytest.raises(HubRefusedError) as caught:
        parse_answer(encode_error("hub.draining", "the hub is stopping")[:-1])
    assert (caught.value.code, caught.value.message) == ("hub.draining", "the hub is stopping")


def test_an_answer_line_is_one_line_whatever_the_text_holds() -> None:
    encoded = encode_result({"name": "长春\u2028市\n"})
    assert encoded.count(b"\n") == 1
    assert parse_answer(encoded[:-1]) == {"name": "长春\u2028市\n"}


def test_an_answer_over_the_limit_becomes_an_error_naming_the_limit() -> None:
    encoded = encode_result({"spokes": ["x" * 1000] * (MAX_ANSWER // 1000 + 1)})

    assert len(encoded) < MAX_ANSWER
    with pytest.raises(HubRefusedError) as caught:
        parse_answer(encoded[:-1])
    assert caught.value.code == "answer.too_large"
    assert str(MAX_ANSWER) in caught.value.message


@pytest.mark.parametrize(
    "raw",
    [b"{}", line({"version": 1, "ok": "yes"}), line({"version": 1, "ok": True}), b"HTTP/1.1"],
)
def test_a_line_that_is_not_an_admin_answer_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_answer(raw)
