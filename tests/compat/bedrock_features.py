"""1-hour prompt caching and service tiers through the official OpenAI and Anthropic Python SDKs.

Run by tests/tests/cache_ttl_and_tiers.rs against a gateway with a Bedrock double behind it:
    LLMLITE_BASE_URL=http://127.0.0.1:4000 LLMLITE_KEYS='{"open": "sk-...", ...}' python3 bedrock_features.py
The keys are `open` (no policy), `no_cache_1h` (allow_cache_1h false), `team_no_cache_1h` (its team
forbids 1-hour writes) and `priority` (key and team allow the priority tier). The model `sonnet`
offers 1-hour caching and the priority tier; `older` neither.

Each check asserts what the SDK sees; the request IDs and usage go to stdout as one JSON object
(the last line), for the Rust test to hold against the spend rows and the double's calls. Prints
one line per check and a closing "N passed, N failed"; exits 1 on any failure.
"""

import json
import os

import anthropic
import openai

import checklist

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEYS = json.loads(os.environ["LLMLITE_KEYS"])
MODEL = "sonnet"

# A prefix long enough to be worth caching (the double counts words).
PREFIX = " ".join(f"clause{i}" for i in range(300))

results = {}


def oai(key):
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=KEYS[key], max_retries=0, timeout=30)


def anth(key):
    return anthropic.Anthropic(base_url=BASE_URL, api_key=KEYS[key], max_retries=0, timeout=30)


def chat_cached(key, ttl, question, **extra):
    return oai(key).chat.completions.with_raw_response.create(
        model=MODEL,
        max_tokens=32,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "openai " + PREFIX, "cache_control": {"type": "ephemeral", "ttl": ttl}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        **extra,
    )


def openai_one_hour_write_then_read():
    raw = chat_cached("open", "1h", "first question")
    first = raw.parse()
    details = first.usage.prompt_tokens_details
    assert details.cached_tokens == 0, first.usage
    written = details.model_extra["cache_creation_token_details"]
    assert written["ephemeral_1h_input_tokens"] == 301, written
    assert written["ephemeral_5m_input_tokens"] == 0, written
    results["openai_write"] = {"id": raw.headers["x-request-id"], "usage": first.usage.model_dump()}

    raw = chat_cached("open", "1h", "second question")
    second = raw.parse()
    assert second.usage.prompt_tokens_details.cached_tokens == 301, second.usage
    assert second.usage.model_extra["cache_creation_input_tokens"] == 0, second.usage
    results["openai_read"] = {"id": raw.headers["x-request-id"], "usage": second.usage.model_dump()}


def anthropic_usage_splits_writes_by_ttl():
    client = anth("open")
    system = [{"type": "text", "text": "anthropic " + PREFIX, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    raw = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=32, system=system, messages=[{"role": "user", "content": "first"}]
    )
    first = raw.parse()
    assert first.usage.cache_creation_input_tokens == 301, first.usage
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 301, first.usage
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0, first.usage
    assert first.usage.cache_read_input_tokens == 0, first.usage
    results["anthropic_write"] = {"id": raw.headers["x-request-id"], "usage": first.usage.model_dump()}

    # Streamed, the repeat reads what the first wrote.
    with client.messages.stream(
        model=MODEL, max_tokens=32, system=system, messages=[{"role": "user", "content": "second"}]
    ) as stream:
        message = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert message.usage.cache_read_input_tokens == 301, message.usage
    assert message.usage.cache_creation_input_tokens == 0, message.usage
    results["anthropic_read"] = {"id": request_id, "usage": message.usage.model_dump()}

    # A 5-minute write on the same key is reported as one.
    five = client.messages.create(
        model=MODEL,
        max_tokens=32,
        system=[{"type": "text", "text": "five minutes " + PREFIX, "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "third"}],
    )
    assert five.usage.cache_creation.ephemeral_5m_input_tokens == 302, five.usage
    assert five.usage.cache_creation.ephemeral_1h_input_tokens == 0, five.usage


def forbidden_one_hour_writes_are_403s_naming_the_setting():
    for key, scope in [("no_cache_1h", "key"), ("team_no_cache_1h", "team")]:
        try:
            chat_cached(key, "1h", "not allowed")
            raise AssertionError("a 1-hour write went through for " + key)
        except openai.PermissionDeniedError as e:
            assert e.status_code == 403, e
            assert e.body["code"] == "feature_not_allowed" or e.body["type"] == "feature_not_allowed", e.body
            assert "allow_cache_1h" in e.body["message"] and scope in e.body["message"], e.body
            assert e.body["param"] == "cache_control.ttl", e.body
        try:
            anth(key).messages.create(
                model=MODEL,
                max_tokens=32,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
            )
            raise AssertionError("a 1-hour write went through for " + key)
        except anthropic.PermissionDeniedError as e:
            assert e.status_code == 403, e
            assert "allow_cache_1h" in e.body["error"]["message"], e.body
    # The same keys may still write for five minutes.
    ok = chat_cached("no_cache_1h", "5m", "five minutes is fine").parse()
    assert ok.choices[0].message.content, ok


def one_hour_on_a_model_without_it_is_a_400():
    try:
        oai("open").chat.completions.create(
            model="older",
            max_tokens=32,
            messages=[{"role": "user", "content": [
                {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
        )
        raise AssertionError("1-hour caching on a model without it went through")
    except openai.BadRequestError as e:
        assert "1-hour" in e.body["message"], e.body


def priority_tier_is_served_and_echoed_where_allowed():
    raw = oai("priority").chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=32, service_tier="priority", messages=[{"role": "user", "content": "fast please"}]
    )
    completion = raw.parse()
    assert completion.service_tier == "priority", completion
    results["openai_priority"] = {"id": raw.headers["x-request-id"], "usage": completion.usage.model_dump()}

    raw = anth("priority").messages.with_raw_response.create(
        model=MODEL,
        max_tokens=32,
        messages=[{"role": "user", "content": "fast too"}],
        extra_body={"service_tier": "priority"},
    )
    message = raw.parse()
    assert message.usage.service_tier == "priority", message.usage
    results["anthropic_priority"] = {"id": raw.headers["x-request-id"], "usage": message.usage.model_dump()}

    # Anthropic's own names: standard_only is the default tier, named.
    standard = anth("open").messages.create(
        model=MODEL, max_tokens=32, service_tier="standard_only", messages=[{"role": "user", "content": "std"}]
    )
    assert standard.usage.service_tier == "standard", standard.usage


def priority_without_the_policy_is_a_403():
    try:
        oai("open").chat.completions.create(
            model=MODEL, max_tokens=32, service_tier="priority", messages=[{"role": "user", "content": "fast"}]
        )
        raise AssertionError("priority went through on a key without it")
    except openai.PermissionDeniedError as e:
        assert "allowed_service_tiers" in e.body["message"], e.body
        assert e.body["param"] == "service_tier", e.body
    try:
        anth("open").messages.create(
            model=MODEL,
            max_tokens=32,
            messages=[{"role": "user", "content": "fast"}],
            extra_body={"service_tier": "priority"},
        )
        raise AssertionError("priority went through on a key without it")
    except anthropic.PermissionDeniedError as e:
        assert "allowed_service_tiers" in e.body["error"]["message"], e.body
    # Flex is in the default policy, but `older` does not offer it: a 400 naming the field.
    try:
        oai("open").chat.completions.create(
            model="older", max_tokens=32, service_tier="flex", messages=[{"role": "user", "content": "cheap"}]
        )
        raise AssertionError("a tier the model does not offer went through")
    except openai.BadRequestError as e:
        assert e.body["param"] == "service_tier", e.body


CHECKS = [
    openai_one_hour_write_then_read,
    anthropic_usage_splits_writes_by_ttl,
    forbidden_one_hour_writes_are_403s_naming_the_setting,
    one_hour_on_a_model_without_it_is_a_400,
    priority_tier_is_served_and_echoed_where_allowed,
    priority_without_the_policy_is_a_403,
]

if __name__ == "__main__":
    checklist.run(CHECKS, results)
