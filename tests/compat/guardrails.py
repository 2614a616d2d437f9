"""Bedrock Guardrails through the official OpenAI and Anthropic Python SDKs.

Run by tests/tests/guardrails.rs against a gateway with a Bedrock double behind it:
    LLMLITE_BASE_URL=http://127.0.0.1:4000 LLMLITE_KEYS='{"guarded": "sk-...", ...}' python3 guardrails.py
The keys: `guarded` names a guardrail; `team_guarded` has none, its team does. The double's
guardrail masks employee IDs (EMP- and six digits) and blocks the topic "mergers".

Each check asserts what the SDK sees; request IDs go to stdout as one JSON object (the last line),
for the Rust test to hold against the spend rows, the audit records and the double's calls.
Prints one line per check and a closing "N passed, N failed"; exits 1 on any failure.
"""

import base64
import json
import os

import anthropic
import openai

import checklist

BASE_URL = os.environ["LLMLITE_BASE_URL"]
KEYS = json.loads(os.environ["LLMLITE_KEYS"])
MODEL = "sonnet"
BLOCKED_INPUT = "Sorry, this request is about a denied topic (mergers)."
BLOCKED_OUTPUT = "Sorry, the answer touched a denied topic (mergers)."

# An answer the model gives (the double's say64 directive): over one guardrail window of benign
# text, then the denied topic.
LONG_BENIGN = " ".join(f"word{i}." for i in range(250))
LATE_MERGER = LONG_BENIGN + " And now the secret merger plan."

results = {}


def say(text):
    return "[[say64:" + base64.b64encode(text.encode()).decode() + "]]"


def oai(key):
    return openai.OpenAI(base_url=BASE_URL + "/v1", api_key=KEYS[key], max_retries=0, timeout=30)


def anth(key):
    return anthropic.Anthropic(base_url=BASE_URL, api_key=KEYS[key], max_retries=0, timeout=30)


def masked_prompt_reaches_bedrock_masked():
    raw = oai("guarded").chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Please file EMP-123456 under finance"}]
    )
    answer = raw.parse().choices[0].message.content
    assert "{EMPLOYEE_ID}" in answer and "EMP-123456" not in answer, answer
    results["openai_masked"] = raw.headers["x-request-id"]

    raw = anth("team_guarded").messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Ask EMP-765432 to call back"}]
    )
    message = raw.parse()
    assert "{EMPLOYEE_ID}" in message.content[0].text, message
    results["anthropic_masked"] = raw.headers["x-request-id"]


def masked_answer_reaches_the_client_masked():
    answer = oai("guarded").chat.completions.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": say("Your contact is EMP-555000.")}]
    )
    text = answer.choices[0].message.content
    assert text == "Your contact is {EMPLOYEE_ID}.", text
    streamed = ""
    with anth("guarded").messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": say("Ask EMP-555001 today.")}]
    ) as stream:
        for delta in stream.text_stream:
            streamed += delta
    assert streamed == "Ask {EMPLOYEE_ID} today.", streamed


def blocked_prompt_is_a_400_in_each_shape():
    try:
        oai("guarded").chat.completions.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Tell me about the merger"}]
        )
        raise AssertionError("a blocked prompt was answered")
    except openai.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body["type"] == "guardrail_blocked", e.body
        assert BLOCKED_INPUT in e.body["message"], e.body
        results["openai_blocked"] = e.response.headers["x-request-id"]
    try:
        oai("guarded").responses.create(model=MODEL, input="Any merger news?")
        raise AssertionError("a blocked prompt was answered")
    except openai.BadRequestError as e:
        assert e.body["type"] == "guardrail_blocked", e.body
        assert BLOCKED_INPUT in e.body["message"], e.body
    try:
        anth("team_guarded").messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "The Merger, please"}]
        )
        raise AssertionError("a blocked prompt was answered")
    except anthropic.BadRequestError as e:
        assert e.status_code == 400, e
        assert e.body["error"]["type"] == "invalid_request_error", e.body
        assert BLOCKED_INPUT in e.body["error"]["message"], e.body
        results["anthropic_blocked"] = e.response.headers["x-request-id"]


def blocked_answer_is_withheld():
    try:
        oai("guarded").chat.completions.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": say("The merger is on.")}]
        )
        raise AssertionError("a blocked answer was delivered")
    except openai.BadRequestError as e:
        assert e.body["type"] == "guardrail_blocked", e.body
        assert BLOCKED_OUTPUT in e.body["message"], e.body
        assert "charged" in e.body["message"], e.body


def blocked_mid_stream_ends_with_an_error():
    received = ""
    stream = oai("guarded").chat.completions.with_raw_response.create(
        model=MODEL, max_tokens=2000, stream=True, messages=[{"role": "user", "content": say(LATE_MERGER)}]
    )
    results["openai_stream_blocked"] = stream.headers["x-request-id"]
    try:
        for chunk in stream.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                received += chunk.choices[0].delta.content
        raise AssertionError("the stream ended without an error")
    except openai.APIError as e:
        assert BLOCKED_OUTPUT in str(e.message), e
    # The first window was judged and sent; nothing of the denied topic was.
    assert received.startswith("word0. word1."), received[:80]
    assert "merger" not in received, received[-80:]

    received = ""
    try:
        with anth("guarded").messages.stream(
            model=MODEL, max_tokens=2000, messages=[{"role": "user", "content": say(LATE_MERGER)}]
        ) as stream:
            results["anthropic_stream_blocked"] = stream.response.headers["x-request-id"]
            for delta in stream.text_stream:
                received += delta
        raise AssertionError("the stream ended without an error")
    except anthropic.APIStatusError as e:
        assert BLOCKED_OUTPUT in str(e), e
    assert received.startswith("word0."), received[:80]
    assert "merger" not in received, received[-80:]


CHECKS = [
    masked_prompt_reaches_bedrock_masked,
    masked_answer_reaches_the_client_masked,
    blocked_prompt_is_a_400_in_each_shape,
    blocked_answer_is_withheld,
    blocked_mid_stream_ends_with_an_error,
]

if __name__ == "__main__":
    checklist.run(CHECKS, results)
