"""Writes shared/openapi.json, the OpenAPI 3 document served at /openapi.json. Run: python3 tests/openapi/generate.py"""
from pathlib import Path
import json
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def nullable(s): return {**s, "nullable": True}
S = lambda **kw: kw
string = {"type": "string"}
money = {"type": "number", "minimum": 0, "maximum": 1000000000}
dt = {"type": "string", "format": "date-time"}
integer = {"type": "integer"}
duration = {"type": "string", "pattern": "^[1-9][0-9]{0,2}(s|m|h|d|w|mo)$", "description": "A number and s, m, h, d, w or mo (`30d`)."}
text = {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}
models = {"type": "array", "maxItems": 100, "items": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\u0000-\\u001f\\u007f]+$"}}
metadata = {"type": "object", "description": "Any JSON object of at most 16 KiB."}
rate = {"type": "integer", "minimum": 0, "maximum": 1000000000000}
parallel = {"type": "integer", "minimum": 0, "maximum": 100000}
pii_policy = {"type": "object", "description": "Entity (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, UK_NINO, IP_ADDRESS, AWS_ACCESS_KEY, PRIVATE_KEY, a custom one, or *) to action",
    "additionalProperties": False,
    "properties": {e: {"type": "string", "enum": ["BLOCK", "MASK", "LOG", "ALLOW"]} for e in
        ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "UK_NINO", "IP_ADDRESS", "AWS_ACCESS_KEY", "PRIVATE_KEY", "*"]}}

limits_in = {
  "models": nullable(models), "max_budget": nullable(money), "soft_budget": nullable(money),
  "budget_duration": nullable(duration), "tpm_limit": nullable(rate), "rpm_limit": nullable(rate),
  "max_parallel_requests": nullable(parallel), "metadata": nullable(metadata),
}
limits_out = {
  "models": {"type": "array", "items": string}, "spend": {"type": "number"},
  "max_budget": nullable({"type": "number"}), "soft_budget": nullable({"type": "number"}),
  "budget_duration": nullable(string), "budget_reset_at": nullable(dt),
  "tpm_limit": nullable(integer), "rpm_limit": nullable(integer), "max_parallel_requests": nullable(integer),
  "metadata": {"type": "object"},
}
features_in = {
  "allow_cache_1h": nullable({"type": "boolean", "description": "May write the prompt cache for an hour (default true; null: the default)"}),
  "allowed_service_tiers": nullable({"type": "array", "maxItems": 3, "items": {"type": "string", "enum": ["default", "flex", "priority"]},
      "description": "The Bedrock service tiers a request may name (default [default, flex]; null: the default); of key and team the narrower wins"}),
  "guardrail": nullable({"type": "object", "additionalProperties": False, "required": ["id", "version"],
      "properties": {
        "id": {"type": "string", "pattern": "^([a-z0-9]{1,64}|arn:aws(-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]{1,64})$"},
        "version": {"type": "string", "pattern": "^([1-9][0-9]{0,7}|DRAFT)$"}},
      "description": "The Bedrock guardrail every request runs under (ApplyGuardrail on prompt and answer; null: none); a key's wins over its team's"}),
  "residency": nullable({"type": "array", "minItems": 1, "maxItems": 9,
      "items": {"type": "string", "enum": ["eu", "us", "us-gov", "apac", "jp", "au", "ca", "global", "in_region"]},
      "description": "The geographies whose inference profiles may serve it (null: any route the catalog lists); key and team must both allow a route"}),
}
features_out = {
  "allow_cache_1h": {"type": "boolean"},
  "allowed_service_tiers": {"type": "array", "items": {"type": "string", "enum": ["default", "flex", "priority"]}},
  "guardrail": nullable({"type": "object", "properties": {"id": string, "version": string}}),
  "residency": nullable({"type": "array", "items": string}),
}
key_out_props = {
  "token": {"type": "string", "pattern": "^[0-9a-f]{64}$"}, "key_name": string, "key_alias": nullable(string),
  "user_id": nullable(string), "team_id": nullable(string), "tier": nullable({"type": "string", "enum": ["standard", "admin", "none"]}),
  **limits_out, "expires": nullable(dt), "is_active": {"type": "boolean"}, "blocked": {"type": "boolean"},
  "created_by": nullable(string), "updated_by": nullable(string), "created_at": dt, "updated_at": dt, "last_active": nullable(dt),
  "pii_policy": nullable({"type": "object"}), **features_out,
}
schemas = {
  "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"], "properties": {
      "message": string, "type": string, "param": nullable(string), "code": string}}}},
  "Key": {"type": "object", "required": list(key_out_props), "properties": key_out_props},
  "MintedKey": {"allOf": [ref("Key"), {"type": "object", "required": ["key"], "properties": {"key": {"type": "string", "pattern": "^sk-"}}}]},
  "KeyRequest": {"type": "object", "additionalProperties": False, "properties": {
      "key": {"type": "string", "description": "generate: your own raw key (`sk-` and 16+ printable characters); update: the key to change, raw or hash"},
      "key_alias": nullable(text), "duration": nullable(duration), **limits_in,
      "user_id": nullable(text), "team_id": nullable(text), "blocked": {"type": "boolean"},
      "tier": {"type": "string", "enum": ["standard", "admin", "none"], "description": "The limits a new key starts from (default LLMLITE_DEFAULT_TIER, standard); fields given override them. none, or a limit given as null, needs the master key."}, "pii_policy": nullable(pii_policy), **features_in}},
  "KeyUpdateRequest": {"allOf": [ref("KeyRequest"), {"type": "object", "required": ["key"]}]},
  "User": {"type": "object", "required": ["user_id", "user_role", "teams", "spend"], "properties": {
      "user_id": string, "user_alias": nullable(string), "user_email": nullable(string),
      "user_role": {"type": "string", "enum": ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"]},
      "teams": {"type": "array", "items": string}, **limits_out, "created_at": dt, "updated_at": dt,
      "key": {"type": "string"}, "token": {"type": "string"}, "key_name": {"type": "string"}}},
  "UserRequest": {"type": "object", "additionalProperties": False, "properties": {
      "user_id": text, "user_alias": nullable(text), "user_email": nullable(text),
      "user_role": {"type": "string", "enum": ["proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"]},
      "teams": nullable({"type": "array", "maxItems": 100, "items": text}), **limits_in,
      "auto_create_key": {"type": "boolean", "description": "/user/new only (default true)"},
      "key_tier": {"type": "string", "enum": ["standard", "admin", "none"], "description": "/user/new only: the tier of the key it mints (default LLMLITE_DEFAULT_TIER); none needs the master key"}}},
  "Team": {"type": "object", "required": ["team_id", "blocked", "spend"], "properties": {
      "team_id": string, "team_alias": nullable(string), **limits_out, "blocked": {"type": "boolean"},
      "created_by": nullable(string), "created_at": dt, "updated_at": dt, **features_out}},
  "TeamRequest": {"type": "object", "additionalProperties": False, "properties": {
      "team_id": text, "team_alias": nullable(text), **limits_in, "blocked": {"type": "boolean"},
      "pii_policy": nullable(pii_policy), **features_in}},
  "SpendLog": {"type": "object", "required": ["request_id", "api_key", "model", "spend", "startTime", "endTime", "status"], "properties": {
      "request_id": string, "call_type": string, "api_key": {"type": "string", "description": "The hash of the key charged"},
      "presented_key_hash": nullable({"type": "string", "description": "The hash of the key the client presented: an old key's during a rotation grace period (null on rows from before it was recorded)"}),
      "key_alias": nullable(string), "user": nullable(string),
      "team_id": nullable(string), "end_user": nullable(string), "model": string, "model_id": nullable(string),
      "custom_llm_provider": string, "prompt_tokens": integer, "completion_tokens": integer,
      "cache_read_input_tokens": integer, "cache_creation_input_tokens": integer, "total_tokens": integer,
      "spend": {"type": "number"}, "startTime": dt, "endTime": dt, "request_duration_ms": integer,
      "status": {"type": "string", "enum": ["success", "failure", "lost"]}, "error_type": nullable(string), "metadata": {"type": "object"}}},
  "SpendReportRow": {"type": "object", "required": ["date", "spend", "api_requests"], "properties": {
      "date": {"type": "string", "format": "date"}, "team_id": nullable(string), "user_id": nullable(string),
      "api_key": nullable(string), "model": nullable(string), "spend": {"type": "number"},
      "prompt_tokens": integer, "completion_tokens": integer, "total_tokens": integer,
      "api_requests": integer, "successful_requests": integer, "failed_requests": integer}},
  "ChatCompletionRequest": {"type": "object", "required": ["model", "messages"], "properties": {
      "model": string, "messages": {"type": "array", "items": {"type": "object", "required": ["role"], "properties": {
          "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
          "content": {"oneOf": [string, {"type": "array", "items": {"type": "object"}}], "nullable": True},
          "tool_calls": {"type": "array", "items": {"type": "object"}}, "tool_call_id": string}}},
      "max_tokens": nullable({"type": "integer", "minimum": 0}), "max_completion_tokens": nullable({"type": "integer", "minimum": 0}),
      "temperature": nullable({"type": "number"}), "top_p": nullable({"type": "number"}),
      "stop": {"oneOf": [string, {"type": "array", "items": string}], "nullable": True},
      "stream": nullable({"type": "boolean"}), "stream_options": nullable({"type": "object", "properties": {"include_usage": {"type": "boolean"}}}),
      "tools": nullable({"type": "array", "items": {"type": "object"}}), "tool_choice": {"oneOf": [string, {"type": "object"}], "nullable": True},
      "response_format": nullable({"type": "object"}), "reasoning_effort": nullable({"type": "string", "enum": ["minimal", "low", "medium", "high"]}),
      "user": nullable(string), "metadata": nullable({"type": "object"}), "n": nullable({"type": "integer"}),
      "service_tier": nullable({"type": "string", "enum": ["auto", "default", "flex", "priority"],
          "description": "Bedrock's service tier (auto: Bedrock's default); the key's and team's allowed_service_tiers must list it"})}},
  "ChatCompletion": {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"], "properties": {
      "id": string, "object": {"type": "string", "enum": ["chat.completion"]}, "created": integer, "model": string,
      "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"], "properties": {
          "index": integer, "finish_reason": {"type": "string", "enum": ["stop", "length", "tool_calls", "content_filter"]},
          "logprobs": nullable({"type": "object"}),
          "message": {"type": "object", "required": ["role", "content"], "properties": {
              "role": {"type": "string", "enum": ["assistant"]}, "content": nullable(string), "reasoning_content": string,
              "tool_calls": {"type": "array", "items": {"type": "object", "required": ["id", "type", "function"], "properties": {
                  "id": string, "type": string, "function": {"type": "object", "required": ["name", "arguments"], "properties": {"name": string, "arguments": string}}}}}}}}}},
      "usage": {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {
          "prompt_tokens": integer, "completion_tokens": integer, "total_tokens": integer,
          "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": integer, "cache_creation_tokens": integer,
              "cache_creation_token_details": {"type": "object", "properties": {
                  "ephemeral_5m_input_tokens": integer, "ephemeral_1h_input_tokens": integer}}}},
          "cache_read_input_tokens": integer, "cache_creation_input_tokens": integer}},
      "system_fingerprint": nullable(string),
      "service_tier": {"type": "string", "enum": ["default", "flex", "priority"]}}},
  "Model": {"type": "object", "required": ["id", "object", "created", "owned_by"], "properties": {
      "id": string, "object": {"type": "string", "enum": ["model"]}, "created": integer, "owned_by": string}},
}
# Anthropic's Messages API (/v1/messages): its request as llmlite reads it (the rest of the body
# goes to Bedrock as it came), its answers, and its error shape.
block = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
         "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string", "minLength": 1, "maxLength": 2000}}}
content = {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 2000}, {"type": "array", "minItems": 1, "maxItems": 4, "items": block}]}
anthropic_messages = {"type": "array", "minItems": 1, "maxItems": 4, "items": {"type": "object", "required": ["role", "content"], "additionalProperties": False,
    "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "content": content}}}
anthropic_base = {"model": {"type": "string", "enum": ["claude-sonnet-4-5", "claude-haiku-4-5-20251001", "claude-opus-4-5"]},
    "messages": anthropic_messages, "system": content,
    "metadata": {"type": "object", "additionalProperties": False, "properties": {"user_id": text}}}
schemas["MessagesRequest"] = {"type": "object", "required": ["model", "max_tokens", "messages"], "additionalProperties": False, "properties": {
    **anthropic_base, "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "stream": {"type": "boolean"}, "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "stop_sequences": {"type": "array", "maxItems": 4, "items": {"type": "string", "minLength": 1, "maxLength": 20}}}}
schemas["CountTokensRequest"] = {"type": "object", "required": ["model", "messages"], "additionalProperties": False, "properties": anthropic_base}
schemas["Message"] = {"type": "object", "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"], "properties": {
    "id": string, "type": {"type": "string", "enum": ["message"]}, "role": {"type": "string", "enum": ["assistant"]}, "model": string,
    "content": {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {"type": string}}},
    "stop_reason": nullable(string), "stop_sequence": nullable(string),
    "usage": {"type": "object", "required": ["input_tokens", "output_tokens"], "properties": {
        "input_tokens": integer, "output_tokens": integer, "cache_read_input_tokens": integer, "cache_creation_input_tokens": integer}}}}
schemas["AnthropicError"] = {"type": "object", "required": ["type", "error"], "properties": {"type": {"type": "string", "enum": ["error"]},
    "error": {"type": "object", "required": ["type", "message"], "properties": {"type": {"type": "string", "enum": [
        "invalid_request_error", "authentication_error", "permission_error", "not_found_error", "request_too_large",
        "rate_limit_error", "api_error", "overloaded_error"]}, "message": string}}}}
# OpenAI's embeddings (/v1/embeddings) on Bedrock's embedding models.
embedding_models = ["titan-embed-text-v2", "cohere-embed-english-v3", "cohere-embed-multilingual-v3"]
schemas["EmbeddingRequest"] = {"type": "object", "required": ["model", "input"], "additionalProperties": False, "properties": {
    "model": {"type": "string", "enum": embedding_models},
    "input": {"oneOf": [{"type": "string", "minLength": 1, "maxLength": 2000},
                        {"type": "array", "minItems": 1, "maxItems": 8, "items": {"type": "string", "minLength": 1, "maxLength": 200}}],
              "description": "a text or up to 2,048 texts (token arrays are refused: Bedrock's models take text)"},
    "encoding_format": {"type": "string", "enum": ["float", "base64"]},
    "dimensions": {"type": "integer", "enum": [256, 512, 1024], "description": "Titan v2 only"},
    "input_type": {"type": "string", "enum": ["search_document", "search_query", "classification", "clustering"], "description": "Cohere only (llmlite); default search_document"},
    "user": text}}
schemas["EmbeddingList"] = {"type": "object", "required": ["object", "data", "model", "usage"], "properties": {
    "object": {"type": "string", "enum": ["list"]}, "model": string,
    "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"], "properties": {
        "object": {"type": "string", "enum": ["embedding"]}, "index": integer,
        "embedding": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "description": "base64 of little-endian f32s"}]}}}},
    "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"], "properties": {"prompt_tokens": integer, "total_tokens": integer}}}}
# OpenAI's Responses API (/v1/responses), stateless: the request as llmlite reads it and the
# response object. Stored state (previous_response_id, store: true) and built-in tools are 400s.
resp_text = {"type": "string", "minLength": 1, "maxLength": 2000}
resp_part = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
    "properties": {"type": {"type": "string", "enum": ["input_text", "output_text"]}, "text": resp_text}}
resp_message = {"type": "object", "required": ["role", "content"], "additionalProperties": False, "properties": {
    "type": {"type": "string", "enum": ["message"]}, "role": {"type": "string", "enum": ["user", "assistant", "system", "developer"]},
    "content": {"oneOf": [resp_text, {"type": "array", "minItems": 1, "maxItems": 4, "items": resp_part}]}}}
resp_tool = {"type": "object", "required": ["type", "name"], "additionalProperties": False, "properties": {
    "type": {"type": "string", "enum": ["function"]}, "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
    "description": {"type": "string", "maxLength": 200}, "parameters": {"type": "object", "additionalProperties": False,
        "required": ["type"], "properties": {"type": {"type": "string", "enum": ["object"]}}}}}
schemas["ResponsesRequest"] = {"type": "object", "required": ["model", "input"], "additionalProperties": False, "properties": {
    "model": {"type": "string", "enum": ["claude-sonnet-4-5", "claude-haiku-4-5"]},
    "input": {"oneOf": [resp_text, {"type": "array", "minItems": 1, "maxItems": 4, "items": resp_message}]},
    "instructions": nullable({"type": "string", "maxLength": 2000}),
    "tools": {"type": "array", "maxItems": 4, "items": resp_tool},
    "tool_choice": {"type": "string", "enum": ["auto", "none"]},
    "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "stream": {"type": "boolean"}, "store": {"type": "boolean", "enum": [False], "description": "true is refused: llmlite stores nothing"},
    "user": text, "metadata": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 64, "pattern": "^[^\\u0000-\\u001f]*$"}}}}
resp_item = {"type": "object", "required": ["type", "id"], "properties": {
    "type": {"type": "string", "enum": ["message", "function_call", "reasoning"]}, "id": string, "status": string,
    "role": string, "content": {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {"type": string, "text": string}}},
    "call_id": string, "name": string, "arguments": string, "summary": {"type": "array", "items": {"type": "object"}}}}
schemas["Response"] = {"type": "object", "required": ["id", "object", "created_at", "status", "model", "output", "usage", "error", "incomplete_details"], "properties": {
    "id": {"type": "string", "pattern": "^resp_"}, "object": {"type": "string", "enum": ["response"]}, "created_at": integer,
    "status": {"type": "string", "enum": ["completed", "incomplete", "failed"]}, "model": string,
    "output": {"type": "array", "items": resp_item},
    "usage": {"type": "object", "required": ["input_tokens", "output_tokens", "total_tokens"], "properties": {
        "input_tokens": integer, "output_tokens": integer, "total_tokens": integer,
        "input_tokens_details": {"type": "object"}, "output_tokens_details": {"type": "object"}}},
    "error": nullable({"type": "object"}), "incomplete_details": nullable({"type": "object"}), "store": {"type": "boolean"}}}
anthropic_err = {"description": "An error, in Anthropic's shape", "content": {"application/json": {"schema": ref("AnthropicError")}}}
err = {"description": "An error, in OpenAI's shape", "content": {"application/json": {"schema": ref("Error")}}}
def ok(schema, desc="OK", extra=None):
    content = {"application/json": {"schema": schema}}
    if extra: content.update(extra)
    return {"200": {"description": desc, "content": content}, "default": err}
def body(schema): return {"required": True, "content": {"application/json": {"schema": schema}}}
def q(name, schema, required=False, desc=None):
    p = {"name": name, "in": "query", "required": required, "schema": schema}
    if desc: p["description"] = desc
    return p
page = [q("page", {"type": "integer", "minimum": 1}), q("size", {"type": "integer", "minimum": 1, "maximum": 100})]
# Routes whose LiteLLM name is `page_size` take `size` too (not both at once: that is a 400).
page_either = page + [q("page_size", {"type": "integer", "minimum": 1, "maximum": 100}, desc="LiteLLM's name for `size`")]
# The nested key list of /user/info and /team/info: a page of keys, and its totals.
key_page = {"keys": {"type": "array", "items": ref("Key")}, "keys_total_count": integer, "keys_page": integer, "keys_page_size": integer, "keys_total_pages": integer}
date = {"type": "string", "format": "date"}
key_ref = {"type": "string", "pattern": "^(sk-[!-~]{1,253}|[0-9a-f]{64})$", "description": "a raw key or its SHA-256 hash"}
# In a URL only the hash: URLs are kept by access logs, and a raw key there is refused (400).
hash_ref = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "a key's SHA-256 hash (a raw key in a URL is refused: send it in a body)"}
keys_body = {"type": "object", "additionalProperties": False, "properties": {"keys": {"type": "array", "maxItems": 100, "items": key_ref}, "key_aliases": {"type": "array", "maxItems": 100, "items": string},
    "erase": {"type": "boolean", "description": "remove the keys and their personal data from spend rows and the audit table (llmlite)"}}}
paths = {
  "/v1/chat/completions": {"post": {"operationId": "chatCompletions", "tags": ["chat"], "summary": "Chat completion on Bedrock (stream: true answers with server-sent events)",
      "requestBody": body(ref("ChatCompletionRequest")),
      "responses": ok(ref("ChatCompletion"), extra={"text/event-stream": {"schema": {"type": "object", "description": "One server-sent event", "required": ["data"], "properties": {
          "data": {"type": "string", "description": "A chat.completion.chunk as JSON, an error, or [DONE]"}}}}})}},
  "/v1/responses": {"post": {"operationId": "responses", "tags": ["responses"], "summary": "OpenAI's Responses API, stateless, on Bedrock Converse (stream: true answers with Responses events)",
      "requestBody": body(ref("ResponsesRequest")),
      "responses": ok(ref("Response"), extra={"text/event-stream": {"schema": {"type": "object", "description": "One server-sent event", "required": ["event", "data"], "properties": {
          "event": {"type": "string", "description": "response.created, response.output_text.delta, ..., response.completed (or response.failed)"},
          "data": {"type": "string", "description": "The event as JSON, with its type and sequence_number"}}}}})}},
  "/v1/messages": {"post": {"operationId": "messages", "tags": ["anthropic"], "summary": "Anthropic's Messages API on Bedrock InvokeModel (stream: true answers with Anthropic's server-sent events)",
      "requestBody": body(ref("MessagesRequest")),
      "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref("Message")}, "text/event-stream": {"schema": {"type": "object", "description": "One server-sent event", "required": ["event", "data"], "properties": {
          "event": {"type": "string", "enum": ["message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop", "error"]},
          "data": {"type": "string", "description": "The event as JSON"}}}}}}, "default": anthropic_err}}},
  "/v1/messages/count_tokens": {"post": {"operationId": "countTokens", "tags": ["anthropic"], "summary": "Input tokens: Bedrock's CountTokens, or an estimate (x-llmlite-token-count says which)",
      "requestBody": body(ref("CountTokensRequest")),
      "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object", "required": ["input_tokens"], "properties": {"input_tokens": integer}}}}}, "default": anthropic_err}}},
  "/v1/embeddings": {"post": {"operationId": "embeddings", "tags": ["embeddings"], "summary": "Embeddings on Bedrock's Titan and Cohere models (a batch split per call and reassembled in order)",
      "requestBody": body(ref("EmbeddingRequest")), "responses": ok(ref("EmbeddingList"))}},
  "/v1/models": {"get": {"operationId": "listModels", "tags": ["chat"], "responses": ok({"type": "object", "required": ["object", "data"], "properties": {"object": {"type": "string", "enum": ["list"]}, "data": {"type": "array", "items": ref("Model")}}})}},
  "/v1/models/{model}": {"get": {"operationId": "getModel", "tags": ["chat"], "parameters": [{"name": "model", "in": "path", "required": True, "schema": string}], "responses": ok(ref("Model"))}},
  "/key/generate": {"post": {"operationId": "keyGenerate", "tags": ["keys"], "requestBody": body(ref("KeyRequest")), "responses": ok(ref("MintedKey"))}},
  "/key/update": {"post": {"operationId": "keyUpdate", "tags": ["keys"], "requestBody": body(ref("KeyUpdateRequest")), "responses": ok(ref("Key"))}},
  "/key/delete": {"post": {"operationId": "keyDelete", "tags": ["keys"], "requestBody": body(keys_body),
      "responses": ok({"type": "object", "required": ["deleted_keys"], "properties": {"deleted_keys": {"type": "array", "items": string}}})}},
  "/key/info": {"get": {"operationId": "keyInfo", "tags": ["keys"], "parameters": [q("key", hash_ref, desc="the key's hash; a plain key may omit it to read itself")],
      "responses": ok({"type": "object", "required": ["key", "info"], "properties": {"key": string, "info": ref("Key")}})},
    "post": {"operationId": "keyInfoByBody", "tags": ["keys"], "summary": "As GET, with the raw key in the body, where access logs do not keep it",
      "requestBody": body({"type": "object", "additionalProperties": False, "properties": {"key": key_ref}}),
      "responses": ok({"type": "object", "required": ["key", "info"], "properties": {"key": string, "info": ref("Key")}})}},
  "/key/list": {"get": {"operationId": "keyList", "tags": ["keys"], "parameters": page_either + [q("user_id", string), q("team_id", string), q("key_alias", string),
      q("older_than_days", {"type": "integer", "minimum": 0, "maximum": 36500}, desc="only keys created at least this many days ago"), q("return_full_object", {"type": "boolean"})],
      "responses": ok({"type": "object", "required": ["keys", "total_count", "current_page", "total_pages"], "properties": {
          "keys": {"type": "array", "items": {"oneOf": [string, ref("Key")]}}, "total_count": integer, "current_page": integer, "total_pages": integer}})}},
  "/key/regenerate": {"post": {"operationId": "keyRegenerate", "tags": ["keys"], "requestBody": body({"type": "object", "additionalProperties": False, "required": ["key"], "properties": {
      "key": key_ref, "grace_period": duration, "new_key": {"type": "string", "pattern": "^sk-[!-~]{16,253}$"}}}), "responses": ok(ref("MintedKey"))}},
  "/key/{key}/regenerate": {"post": {"operationId": "keyRegeneratePath", "tags": ["keys"], "parameters": [{"name": "key", "in": "path", "required": True, "schema": hash_ref}],
      "requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": False, "properties": {"grace_period": duration, "new_key": {"type": "string", "pattern": "^sk-[!-~]{16,253}$"}}}}}},
      "responses": ok(ref("MintedKey"))}},
  "/key/block": {"post": {"operationId": "keyBlock", "tags": ["keys"], "requestBody": body({"type": "object", "additionalProperties": False, "required": ["key"], "properties": {"key": key_ref}}), "responses": ok(ref("Key"))}},
  "/key/unblock": {"post": {"operationId": "keyUnblock", "tags": ["keys"], "requestBody": body({"type": "object", "additionalProperties": False, "required": ["key"], "properties": {"key": key_ref}}), "responses": ok(ref("Key"))}},
  "/user/new": {"post": {"operationId": "userNew", "tags": ["users"], "requestBody": body(ref("UserRequest")), "responses": ok(ref("User"))}},
  "/user/info": {"get": {"operationId": "userInfo", "tags": ["users"], "parameters": [q("user_id", string, True)] + page_either,
      "responses": ok({"type": "object", "required": ["user_id", "user_info", "teams", *key_page], "properties": {"user_id": string, "user_info": ref("User"), **key_page, "teams": {"type": "array", "items": string}}})}},
  "/user/update": {"post": {"operationId": "userUpdate", "tags": ["users"], "requestBody": body({"allOf": [ref("UserRequest"), {"type": "object", "required": ["user_id"]}]}), "responses": ok(ref("User"))}},
  "/user/delete": {"post": {"operationId": "userDelete", "tags": ["users"], "requestBody": body({"type": "object", "additionalProperties": False, "required": ["user_ids"], "properties": {"user_ids": {"type": "array", "minItems": 1, "maxItems": 100, "items": string},
      "erase": {"type": "boolean", "description": "erase: remove the users, their keys and every trace of their IDs, e-mails and free text (llmlite)"}}}),
      "responses": ok({"type": "object", "required": ["deleted_users"], "properties": {"deleted_users": {"type": "array", "items": string}, "erased": {"type": "boolean"}, "pseudonyms": {"type": "array", "items": string}}})}},
  "/user/list": {"get": {"operationId": "userList", "tags": ["users"], "parameters": page_either + [q("role", string)],
      "responses": ok({"type": "object", "required": ["users", "total", "page", "page_size", "total_pages"], "properties": {"users": {"type": "array", "items": ref("User")}, "total": integer, "page": integer, "page_size": integer, "total_pages": integer}})}},
  "/team/new": {"post": {"operationId": "teamNew", "tags": ["teams"], "requestBody": body(ref("TeamRequest")), "responses": ok(ref("Team"))}},
  "/team/info": {"get": {"operationId": "teamInfo", "tags": ["teams"], "parameters": [q("team_id", string, True)] + page_either,
      "responses": ok({"type": "object", "required": ["team_id", "team_info", *key_page], "properties": {"team_id": string, "team_info": ref("Team"), **key_page}})}},
  "/team/list": {"get": {"operationId": "teamList", "tags": ["teams"], "parameters": page_either,
      "responses": ok({"type": "object", "required": ["teams", "total", "page", "page_size", "total_pages"], "properties": {"teams": {"type": "array", "items": ref("Team")}, "total": integer, "page": integer, "page_size": integer, "total_pages": integer}})}},
  "/team/update": {"post": {"operationId": "teamUpdate", "tags": ["teams"], "requestBody": body({"allOf": [ref("TeamRequest"), {"type": "object", "required": ["team_id"]}]}), "responses": ok(ref("Team"))}},
  "/team/delete": {"post": {"operationId": "teamDelete", "tags": ["teams"], "requestBody": body({"type": "object", "additionalProperties": False, "required": ["team_ids"], "properties": {"team_ids": {"type": "array", "minItems": 1, "maxItems": 100, "items": string}}}),
      "responses": ok({"type": "object", "required": ["deleted_teams"], "properties": {"deleted_teams": {"type": "array", "items": string}}})}},
  "/spend/logs": {"get": {"operationId": "spendLogs", "tags": ["spend"], "parameters": [q("api_key", hash_ref), q("user_id", string), q("request_id", string), q("start_date", date), q("end_date", date)] + page_either,
      "responses": {"200": {"description": "A page of rows, newest first", "content": {"application/json": {"schema": {"type": "array", "items": ref("SpendLog")}}},
          "headers": {"x-total-count": {"description": "How many rows match, on all pages", "schema": integer}, "x-total-pages": {"description": "How many pages they fill", "schema": integer}}}, "default": err}}},
  "/global/spend/report": {"get": {"operationId": "spendReport", "tags": ["spend"], "summary": "Totals per UTC day and group, from the daily rollups and the rows not rolled up yet, over at most 366 days",
      "parameters": [q("start_date", date, True), q("end_date", date, True), q("group_by", {"type": "string", "enum": ["team", "user", "key", "model"]})],
      "responses": ok({"type": "array", "items": ref("SpendReportRow")})}},
  "/health": {"get": {"operationId": "health", "tags": ["health"], "security": [], "responses": ok({"type": "object", "required": ["status"], "properties": {"status": string, "version": string}})}},
  "/health/liveliness": {"get": {"operationId": "liveliness", "tags": ["health"], "security": [], "responses": ok(string)}},
  "/health/readiness": {"get": {"operationId": "readiness", "tags": ["health"], "security": [], "responses": {
      "200": {"description": "The database answers", "content": {"application/json": {"schema": {"type": "object", "required": ["status", "db"], "properties": {"status": string, "db": string, "version": string}}}}},
      "503": {"description": "The database does not answer", "content": {"application/json": {"schema": {"type": "object", "required": ["status", "db", "error"]}}}}}}},
}
doc = {
  "openapi": "3.0.3",
  "info": {"title": "llmlite", "version": "0.1.0", "description": "An OpenAI- and Anthropic-compatible gateway to Claude on Amazon Bedrock, with LiteLLM's admin API. Every error is `{\"error\": {\"message\", \"type\", \"param\", \"code\"}}`, except on `/v1/messages`, where it is Anthropic's `{\"type\": \"error\", \"error\": {\"type\", \"message\"}}`."},
  "security": [{"bearer": []}, {"apiKey": []}],
  "paths": paths,
  "components": {"schemas": schemas, "securitySchemes": {
      "bearer": {"type": "http", "scheme": "bearer", "description": "The master key or a virtual key, `sk-...`"},
      "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
}
json.dump(doc, open(Path(__file__).resolve().parents[2] / "shared" / "openapi.json", "w"), indent=1)
print(len(paths), "paths")
