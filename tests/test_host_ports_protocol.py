"""The ports protocol envelope: the request-id rule, parsing errors, response shapes."""

import json

import pytest

from copperline.host.ports.protocol import (
    PortsError, arg_int, encode, error_response, ok_response, parse_request)


def test_args_form_id_is_the_request_id():
    r = parse_request(b'{"id":"r1","cmd":"start","args":{"id":42},"caps":"t"}')
    assert (r.cmd, r.req_id, r.args, r.caps, r.form) == ("start", "r1", {"id": 42}, "t", "args")


def test_flat_form_id_is_the_program_for_target_commands():
    for cmd in ("start", "stop", "unload", "status", "wait"):
        r = parse_request(json.dumps({"cmd": cmd, "id": 42}))
        assert r.args == {"id": 42} and r.req_id is None, cmd


def test_flat_form_req_carries_the_request_id():
    r = parse_request('{"cmd":"start","id":42,"req":"r7"}')
    assert r.args == {"id": 42} and r.req_id == "r7"


def test_flat_form_id_is_the_request_id_for_other_commands():
    r = parse_request('{"id":"load1","cmd":"load","program":{"version":1}}')
    assert r.req_id == "load1" and r.args == {"program": {"version": 1}}
    r = parse_request('{"id":7,"cmd":"ping"}')
    assert r.req_id == 7 and r.args == {}


def test_flat_form_cancel_id_names_the_request_to_cancel():
    r = parse_request('{"cmd":"cancel","id":"w1","req":"c1"}')
    assert r.args == {"id": "w1"} and r.req_id == "c1"


def test_the_rule_does_not_depend_on_the_value_type():
    # A string program id stays an argument (and the handler rejects it as BAD_ARG).
    assert parse_request('{"cmd":"status","id":"abc"}').args == {"id": "abc"}


def test_args_form_rejects_arguments_outside_args():
    with pytest.raises(PortsError) as e:
        parse_request('{"id":1,"cmd":"start","args":{},"program":{}}')
    assert e.value.code == "BAD_CMD" and e.value.field == "program" and e.value.req_id == 1


def test_flat_form_with_both_ids_for_a_non_target_command_is_refused():
    with pytest.raises(PortsError) as e:
        parse_request('{"cmd":"ping","id":1,"req":2}')
    assert e.value.code == "BAD_CMD"


@pytest.mark.parametrize("line, fragment", [
    (b"{nope", "not valid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[1,2]", "must be a JSON object"),
    (b'{"args":{}}', "missing 'cmd'"),
    (b'{"cmd":"ping","args":[]}', "args must be a JSON object"),
    (b'{"cmd":"ping","id":1.5}', "string or an integer"),
    (b'{"cmd":"ping","id":true}', "string or an integer"),
    (b'{"cmd":"ping","caps":5}', "caps must be a string"),
])
def test_malformed_envelopes_are_bad_cmd(line, fragment):
    with pytest.raises(PortsError) as e:
        parse_request(line)
    assert e.value.code == "BAD_CMD" and fragment in e.value.message


def test_ok_response_mirrors_result_and_echoes_the_request_id():
    assert ok_response("r1", {"id": 3}) == {"ok": True, "id": "r1", "result": {"id": 3}}
    # no request id: the seed's {"ok":true,"id":42} for load
    assert ok_response(None, {"id": 42}) == {"ok": True, "id": 42, "result": {"id": 42}}
    r = ok_response(None, {"state": "running", "pc": 7})
    assert r["id"] is None and r["state"] == "running" and r["result"]["pc"] == 7


def test_error_response_and_encoding():
    msg = encode(error_response(None, PortsError("BAD_ARG", "w must be >0", field="w")))
    assert msg.endswith(b"\n") and b"\n" not in msg[:-1]
    assert json.loads(msg) == {"ok": False, "id": None,
                               "error": {"code": "BAD_ARG", "message": "w must be >0", "field": "w"}}


def test_arg_int_names_the_field():
    with pytest.raises(PortsError) as e:
        arg_int({"id": "x"}, "id")
    assert e.value.code == "BAD_ARG" and e.value.field == "id" and "'id'" in e.value.message
    with pytest.raises(PortsError) as e:
        arg_int({}, "value")
    assert e.value.field == "value" and "missing" in e.value.message
    assert arg_int({"v": 3}, "v", minimum=0) == 3
