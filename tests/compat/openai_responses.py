"""Compatibility check: the official OpenAI Python SDK's Responses API against a running llmlite.

Run by functions/gateway/tests/openai_responses.rs against `llmlite dev` (Bedrock double behind it):
    LLMLITE_BASE_URL=http://127.0.0.1:4000/v1 LLMLITE_KEY=sk-... python3 openai_responses.py
Prints one line per check and a closing "N passed, N failed"; exits 1 on any failure.
"""

import json
import os
import sys
import traceback

import openai

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEY = os.environ["LLMLITE_KEY"]
MODEL = "claude-sonnet-4-5"

client = openai.OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0, timeout=30)

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
    {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}},
]

SCHEMA = {
    "type": "object",
    "properties": {"input": {"type": "string"}},
    "required": ["input"],
    "additionalProperties": False,
}


def create_text():
    r = client.responses.create(model=MODEL, instructions="Be brief.", input="Hello there")
    assert r.object == "response", r
    assert r.id.startswith("resp_"), r.id
    assert r.model == MODEL, r.model
    assert r.status == "completed", r.status
    assert r.output_text == "echo: Hello there", r.output_text
    assert r.output[0].type == "message" and r.output[0].role == "assistant", r.output
    assert r.usage.input_tokens == 4 and r.usage.output_tokens == 3, r.usage
    assert r.usage.total_tokens == 7, r.usage


def stream_text():
    with client.responses.stream(model=MODEL, input="stream me a reply") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "echo: stream me a reply", deltas
    assert len(deltas) > 1, deltas
    assert final.output_text == "echo: stream me a reply", final
    assert final.status == "completed"
    assert final.usage.output_tokens == 5, final.usage


def raw_stream_events():
    events = list(client.responses.create(model=MODEL, input="count my events", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"], kinds
    assert kinds[-1] == "response.completed", kinds
    assert [e.sequence_number for e in events] == list(range(len(events))), events


def function_calling_loop():
    history = [{"role": "user", "content": "call get_weather and get_time"}]
    first = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"], first.output
    json.loads(calls[0].arguments)
    # The loop the SDK docs show: the output items go back in, then each call's output.
    history += first.output
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C"})
    history.append({"type": "function_call_output", "call_id": calls[1].call_id, "output": "noon"})
    second = client.responses.create(model=MODEL, input=history, tools=TOOLS)
    assert second.output_text == "Tool result: 18C; noon", second.output
    # A follow-up that offers no tools, its history holding tool calls (Bedrock needs toolConfig).
    third = client.responses.create(model=MODEL, input=history)
    assert third.output_text == "Tool result: 18C; noon", third.output


def streamed_function_calls():
    with client.responses.stream(
        model=MODEL, input="call get_weather and get_time", tools=TOOLS
    ) as stream:
        argument_deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather", "get_time"], final.output
    assert argument_deltas, "no argument deltas"
    for call in calls:
        json.loads(call.arguments)
        assert call.call_id, call


def json_schema_format():
    text = {"format": {"type": "json_schema", "name": "answer", "schema": SCHEMA, "strict": True}}
    # claude-sonnet-4-5 answers through Bedrock's native structured output; claude-sonnet-4,
    # which has none, through the forced-tool emulation (which the double answers with the input).
    r = client.responses.create(model=MODEL, input="give me json", text=text)
    answer = json.loads(r.output_text)
    assert set(answer) == {"input"} and isinstance(answer["input"], str), r.output_text
    r = client.responses.create(model="claude-sonnet-4", input="give me json", text=text)
    assert json.loads(r.output_text) == {"input": "give me json"}, r.output_text
    with client.responses.stream(model="claude-sonnet-4", input="stream json", text=text) as stream:
        final = stream.get_final_response()
    assert json.loads(final.output_text) == {"input": "stream json"}, final.output_text


def stored_state_is_refused():
    for kwargs, param in [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ]:
        try:
            client.responses.create(model=MODEL, input="x", **kwargs)
        except openai.BadRequestError as e:
            assert e.status_code == 400
            assert e.body["param"] == param, e.body
            continue
        raise AssertionError(f"no BadRequestError for {kwargs}")


def mid_stream_failure():
    # The double breaks its stream after two events: the SDK sees `response.failed`.
    with client.responses.stream(model=MODEL, input="one two three four [[break:4]]") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.failed", kinds
    assert "response.completed" not in kinds, kinds


CHECKS = [
    create_text,
    stream_text,
    raw_stream_events,
    function_calling_loop,
    streamed_function_calls,
    json_schema_format,
    stored_state_is_refused,
    mid_stream_failure,
]

passed = failed = 0
for check in CHECKS:
    try:
        check()
        passed += 1
        print(f"ok   {check.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {check.__name__}")
        traceback.print_exc()
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
