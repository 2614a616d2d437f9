"""Compatibility check: the official Anthropic Python SDK against a running llmlite.

Run by functions/gateway/tests/anthropic_sdk.rs against `llmlite dev` (Bedrock double behind it):
    LLMLITE_BASE_URL=http://127.0.0.1:4000 LLMLITE_KEY=sk-... python3 anthropic_sdk.py
The base URL has no `/v1`, as Claude Code's ANTHROPIC_BASE_URL. Prints one line per check and a
closing "N passed, N failed"; exits 1 on any failure.
"""

import os
import sys
import traceback

import anthropic

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEY = os.environ["LLMLITE_KEY"]
MODEL = "claude-sonnet-4-5"

# `api_key` is sent as x-api-key; `auth_token` as Authorization: Bearer.
client = anthropic.Anthropic(base_url=BASE_URL, api_key=KEY, max_retries=0, timeout=30)
bearer = anthropic.Anthropic(base_url=BASE_URL, auth_token=KEY, max_retries=0, timeout=30)

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def create():
    m = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Hello there"}])
    assert m.type == "message" and m.role == "assistant", m
    assert m.model == MODEL, m.model
    assert [b.type for b in m.content] == ["text"], m.content
    assert m.content[0].text == "echo: Hello there", m.content
    assert m.stop_reason == "end_turn", m.stop_reason
    assert m.usage.input_tokens == 2 and m.usage.output_tokens == 3, m.usage


def bearer_token():
    m = bearer.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "by bearer"}])
    assert m.content[0].text == "echo: by bearer", m.content


def raw_headers():
    raw = client.messages.with_raw_response.create(
        model=MODEL,
        max_tokens=64,
        messages=[{"role": "user", "content": "cost please"}],
        extra_headers={"anthropic-beta": "interleaved-thinking-2025-05-14,made-up-beta-2030-01-01"},
    )
    assert raw.headers.get("x-request-id"), raw.headers
    assert raw.headers.get("x-litellm-response-cost"), raw.headers
    assert raw.headers.get("x-llmlite-dropped-betas") == "made-up-beta-2030-01-01", raw.headers
    assert raw.headers.get("x-llmlite-passed-betas") == "interleaved-thinking-2025-05-14", raw.headers
    raw.parse()


def streamed_text():
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "stream me a reply"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: stream me a reply", text
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.model == MODEL, final.model
    assert final.usage.output_tokens == 5, final.usage


def tool_round_trip():
    messages = [{"role": "user", "content": "call get_weather for Paris"}]
    with client.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER], messages=messages) as stream:
        first = stream.get_final_message()
    assert first.stop_reason == "tool_use", first
    calls = [b for b in first.content if b.type == "tool_use"]
    assert [c.name for c in calls] == ["get_weather"], first.content
    assert isinstance(calls[0].input, dict), calls[0].input
    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "18C"}]},
    ]
    with client.messages.stream(model=MODEL, max_tokens=256, tools=[WEATHER], messages=messages) as stream:
        answer = stream.get_final_message()
    assert answer.content[0].text == "Tool result: 18C", answer.content


def thinking():
    with client.messages.stream(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "think first"}],
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"], final.content
    assert final.content[0].signature, final.content[0]
    assert final.content[1].text == "echo: think first", final.content
    assert "message_start" in kinds and "message_stop" in kinds, kinds


def count_tokens():
    r = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count these four words"}])
    assert r.input_tokens > 0, r


def not_found():
    try:
        client.messages.create(model="gpt-nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    except anthropic.NotFoundError as e:
        assert e.status_code == 404
        assert e.body["error"]["type"] == "not_found_error", e.body
        return
    raise AssertionError("no NotFoundError")


def authentication():
    bad = anthropic.Anthropic(base_url=BASE_URL, api_key="sk-not-a-real-key-0000", max_retries=0)
    try:
        bad.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "x"}])
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401
        assert e.body["error"]["type"] == "authentication_error", e.body
        return
    raise AssertionError("no AuthenticationError")


def bad_request():
    try:
        client.messages.create(model=MODEL, max_tokens=0, messages=[{"role": "user", "content": "x"}])
    except anthropic.BadRequestError as e:
        assert e.status_code == 400
        assert e.body["error"]["type"] == "invalid_request_error", e.body
        assert "max_tokens" in e.body["error"]["message"], e.body
        return
    raise AssertionError("no BadRequestError")


def rate_limit():
    try:
        client.messages.create(model=MODEL, max_tokens=8, messages=[{"role": "user", "content": "[[throttle]]"}])
    except anthropic.RateLimitError as e:
        assert e.status_code == 429
        assert e.response.headers.get("retry-after"), e.response.headers
        assert e.body["error"]["type"] == "rate_limit_error", e.body
        return
    raise AssertionError("no RateLimitError")


def models():
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert MODEL in ids and "claude-sonnet-4-5-20250929" in ids, ids
    assert all(m.type == "model" for m in page.data), page.data
    one = client.models.retrieve(MODEL)
    assert one.id == MODEL and one.display_name == MODEL, one


CHECKS = [
    create,
    bearer_token,
    raw_headers,
    streamed_text,
    tool_round_trip,
    thinking,
    count_tokens,
    not_found,
    authentication,
    bad_request,
    rate_limit,
    models,
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
