"""Compatibility check: the official OpenAI Python SDK against a running llmlite.

Run by functions/gateway/tests/openai_sdk.rs against `llmlite dev` (Bedrock double behind it):
    LLMLITE_BASE_URL=http://127.0.0.1:4000/v1 LLMLITE_KEY=sk-... python3 openai_sdk.py
Prints one line per check and a closing "N passed, N failed"; exits 1 on any failure.
"""

import hashlib
import json
import os
import sys
import traceback

import openai

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEY = os.environ["LLMLITE_KEY"]
MODEL = "claude-sonnet-4-5"
TITAN = "titan-embed-text-v2"
COHERE = "cohere-embed-english-v3"

client = openai.OpenAI(base_url=BASE_URL, api_key=KEY, max_retries=0, timeout=30)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    },
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}},
]


def plain():
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello there"}])
    assert r.object == "chat.completion", r
    assert r.model == MODEL, r.model
    assert r.choices[0].message.content == "echo: Hello there", r.choices[0].message
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 3, r.usage


def raw_headers():
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "cost please"}]
    )
    assert raw.headers.get("x-request-id"), raw.headers
    assert raw.headers.get("x-litellm-response-cost"), raw.headers
    raw.parse()


def streamed():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me a reply"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == "echo: stream me a reply", text
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 5, usage
    assert chunks > 3, chunks


def tools():
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "call get_weather and get_time"}],
        tools=TOOLS,
    )
    calls = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_time"], calls
    json.loads(calls[0].function.arguments)
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "user", "content": "call get_weather and get_time"},
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": calls[0].id, "content": "18C"},
            {"role": "tool", "tool_call_id": calls[1].id, "content": "noon"},
        ],
        tools=TOOLS,
    )
    assert answer.choices[0].message.content == "Tool result: 18C; noon", answer.choices[0].message


def streamed_tools():
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "call get_weather and get_time"}],
        tools=TOOLS,
        stream=True,
    )
    calls = {}
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                if delta.function.name:
                    call["name"] = delta.function.name
                call["arguments"] += delta.function.arguments or ""
    assert sorted(calls) == [0, 1], calls
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_time"], calls
    for call in calls.values():
        json.loads(call["arguments"])


def not_found():
    try:
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404
        return
    raise AssertionError("no NotFoundError")


def authentication():
    bad = openai.OpenAI(base_url=BASE_URL, api_key="sk-not-a-real-key-0000", max_retries=0)
    try:
        bad.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    except openai.AuthenticationError as e:
        assert e.status_code == 401
        return
    raise AssertionError("no AuthenticationError")


def rate_limit():
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[throttle]]"}])
    except openai.RateLimitError as e:
        assert e.status_code == 429
        assert e.response.headers.get("retry-after"), e.response.headers
        return
    raise AssertionError("no RateLimitError")


def models():
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids and "claude-3-opus" in ids and TITAN in ids and COHERE in ids, ids


def expected_vector(text, dimensions=1024):
    """The Bedrock double's deterministic vector for `text` (shared/src/bedrock_double.rs)."""
    h = hashlib.sha256(text.encode()).digest()
    return [(2 * (h[j % 32] ^ ((j // 32) % 256)) - 255) / 256 for j in range(dimensions)]


def embeddings_string():
    # No encoding_format: the SDK asks for base64 and decodes it.
    for model in (TITAN, COHERE):
        r = client.embeddings.create(model=model, input="hello embedding world")
        assert r.object == "list" and r.model == model, r
        assert len(r.data) == 1 and r.data[0].index == 0
        assert list(r.data[0].embedding) == expected_vector("hello embedding world"), model
        assert r.usage.prompt_tokens == 3 and r.usage.total_tokens == 3, r.usage


def embeddings_batch_of_300():
    texts = [f"passage {i} of the corpus" for i in range(300)]
    for model in (TITAN, COHERE):
        r = client.embeddings.create(model=model, input=texts)
        assert [d.index for d in r.data] == list(range(300)), model
        for text, item in zip(texts, r.data):
            assert list(item.embedding) == expected_vector(text), (model, text)
        assert r.usage.prompt_tokens == 300 * 5, r.usage


def embeddings_dimensions_and_float():
    r = client.embeddings.create(model=TITAN, input=["a short text", "another"], dimensions=256, encoding_format="float")
    assert [len(d.embedding) for d in r.data] == [256, 256]
    assert r.data[1].embedding == expected_vector("another", 256)
    r = client.embeddings.create(model=COHERE, input=["float please"], encoding_format="float")
    assert r.data[0].embedding == expected_vector("float please")
    try:
        client.embeddings.create(model=COHERE, input="x", dimensions=256)
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "dimensions", e.body
    else:
        raise AssertionError("dimensions on Cohere was not refused")
    try:
        client.chat.completions.create(model=TITAN, messages=[{"role": "user", "content": "hi"}])
    except openai.BadRequestError as e:
        assert e.body["param"] == "model", e.body
    else:
        raise AssertionError("a chat on an embedding model was not refused")


CHECKS = [plain, raw_headers, streamed, tools, streamed_tools, not_found, authentication, rate_limit, models,
          embeddings_string, embeddings_batch_of_300, embeddings_dimensions_and_float]

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
