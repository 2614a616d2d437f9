"""Residency through the official OpenAI and Anthropic Python SDKs.

Run by tests/tests/residency.rs against a gateway with a Bedrock double behind it:
    LLMLITE_BASE_URL=http://127.0.0.1:4000 LLMLITE_KEYS='{"eu_team": "sk-...", ...}' python3 residency.py
The model `sonnet` is served by a `global.` profile first, then an `eu.` one; `global-only` by a
`global.` profile alone. The key `eu_team` belongs to a team whose residency is `["eu"]`,
`anywhere` to a team without one, and `eu_key` names `["eu"]` itself in the second team.

Each check asserts what the SDK sees; request IDs go to stdout as one JSON object (the last line),
for the Rust test to hold against the double's calls and the spend rows. Prints one line per check
and a closing "N passed, N failed"; exits 1 on any failure.
"""

import json
import os

import anthropic
import openai

import checklist

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEYS = json.loads(os.environ["LLMLITE_KEYS"])

results = {}


def oai(key):
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=KEYS[key], max_retries=0, timeout=30)


def anth(key):
    return anthropic.Anthropic(base_url=BASE_URL, api_key=KEYS[key], max_retries=0, timeout=30)


def every_key_is_served_and_answers_name_the_alias():
    for key in ["eu_team", "anywhere", "eu_key"]:
        raw = oai(key).chat.completions.with_raw_response.create(
            model="sonnet", max_tokens=16, messages=[{"role": "user", "content": "where am I " + key}]
        )
        completion = raw.parse()
        assert completion.model == "sonnet", completion
        results["openai_" + key] = raw.headers["x-request-id"]
        raw = anth(key).messages.with_raw_response.create(
            model="sonnet", max_tokens=16, messages=[{"role": "user", "content": "and here " + key}]
        )
        message = raw.parse()
        assert message.model == "sonnet", message
        results["anthropic_" + key] = raw.headers["x-request-id"]


def no_allowed_route_is_a_403_naming_residency():
    for key, scope in [("eu_team", "team"), ("eu_key", "key")]:
        try:
            oai(key).chat.completions.create(
                model="global-only", max_tokens=16, messages=[{"role": "user", "content": "x"}]
            )
            raise AssertionError("a global-only model served " + key)
        except openai.PermissionDeniedError as e:
            assert e.body["type"] == "feature_not_allowed", e.body
            assert "residency" in e.body["message"] and scope in e.body["message"], e.body
            assert "`global`" in e.body["message"], e.body
            assert e.body["param"] == "model", e.body
        try:
            anth(key).messages.create(
                model="global-only", max_tokens=16, messages=[{"role": "user", "content": "x"}]
            )
            raise AssertionError("a global-only model served " + key)
        except anthropic.PermissionDeniedError as e:
            assert e.body["error"]["type"] == "permission_error", e.body
            assert "residency" in e.body["error"]["message"], e.body
    # A team without residency is served there.
    answer = oai("anywhere").chat.completions.create(
        model="global-only", max_tokens=16, messages=[{"role": "user", "content": "x"}]
    )
    assert answer.choices[0].message.content, answer


CHECKS = [every_key_is_served_and_answers_name_the_alias, no_allowed_route_is_a_403_naming_residency]

if __name__ == "__main__":
    checklist.run(CHECKS, results)
