//! How to point a client at llmlite: Claude Code (environment, and `~/.claude/settings.json`,
//! with a fixed key or with `llmlite key` as its `apiKeyHelper`), the OpenAI SDK, Codex CLI
//! (the Responses API) and curl. Shown with a new key (the key written in, this once) and on a
//! key's page (with `$KEY` in its place).

use axum::http::HeaderMap;

use super::html::escape;
use crate::state::AppState;

/// The base URL clients use: `LLMLITE_PUBLIC_URL`, else the address the browser used (plain
/// HTTP only on loopback).
pub(super) fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.config.sign_in.public_url {
        return public.clone();
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("llm.example.com");
    let scheme = if super::session::loopback(headers) {
        "http"
    } else {
        "https"
    };
    format!("{scheme}://{host}")
}

/// The catalog's first alias whose name has `family` (`opus`, `sonnet`, `haiku`), among those
/// `allowed` lets through.
fn alias(state: &AppState, family: &str, allowed: &dyn Fn(&str) -> bool) -> Option<String> {
    state
        .config
        .catalog
        .models()
        .iter()
        .map(|m| m.alias.as_str())
        .find(|a| a.contains(family) && allowed(a))
        .map(str::to_owned)
}

/// The snippets, as HTML. `key` is the key itself, or `$KEY`; `allowed` says which models the
/// key may use.
pub(super) fn snippets(
    state: &AppState,
    headers: &HeaderMap,
    key: &str,
    allowed: &dyn Fn(&str) -> bool,
) -> String {
    let base = base_url(state, headers);
    let sonnet = alias(state, "sonnet", allowed);
    let opus = alias(state, "opus", allowed);
    let haiku = alias(state, "haiku", allowed);
    let main = sonnet
        .clone()
        .or_else(|| opus.clone())
        .or_else(|| haiku.clone())
        .unwrap_or_else(|| "claude-sonnet-4-5".to_owned());
    let mut env = vec![
        ("ANTHROPIC_BASE_URL", base.clone()),
        ("ANTHROPIC_AUTH_TOKEN", key.to_owned()),
        ("ANTHROPIC_MODEL", main.clone()),
    ];
    for (name, model) in [
        ("ANTHROPIC_DEFAULT_OPUS_MODEL", &opus),
        ("ANTHROPIC_DEFAULT_SONNET_MODEL", &sonnet),
        ("ANTHROPIC_DEFAULT_HAIKU_MODEL", &haiku),
    ] {
        if let Some(model) = model {
            env.push((name, model.clone()));
        }
    }
    let exports: String = env
        .iter()
        .map(|(name, value)| format!("export {name}={value}\n"))
        .collect();
    let settings_env: serde_json::Map<String, serde_json::Value> = env
        .iter()
        .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(value.as_str())))
        .collect();
    let settings = serde_json::to_string_pretty(&serde_json::json!({ "env": settings_env }))
        .unwrap_or_default();
    let helper_env: serde_json::Map<String, serde_json::Value> = env
        .iter()
        .filter(|(name, _)| *name != "ANTHROPIC_AUTH_TOKEN")
        .map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(value.as_str())))
        .collect();
    let helper = serde_json::to_string_pretty(&serde_json::json!({
        "apiKeyHelper": format!("llmlite key --gateway {base}"),
        "env": helper_env,
    }))
    .unwrap_or_default();
    let codex = format!(
        "# ~/.codex/config.toml\n\
         model = \"{main}\"\n\
         model_provider = \"llmlite\"\n\n\
         [model_providers.llmlite]\n\
         name = \"llmlite\"\n\
         base_url = \"{base}/v1\"\n\
         env_key = \"LLMLITE_API_KEY\"\n\
         wire_api = \"responses\"\n\n\
         # then: export LLMLITE_API_KEY={key}"
    );
    let openai = format!(
        "from openai import OpenAI\n\
         client = OpenAI(base_url=\"{base}/v1\", api_key=\"{key}\")\n\
         reply = client.chat.completions.create(\n    model=\"{main}\",\n    \
         messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}],\n)\n\
         print(reply.choices[0].message.content)"
    );
    let curl = format!(
        "curl {base}/v1/chat/completions -H \"Authorization: Bearer {key}\" \\\n  \
         -H 'Content-Type: application/json' \\\n  \
         -d '{{\"model\": \"{main}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
    );
    format!(
        "<section id=\"set-up\"><h3>Set-up</h3>\
         <h4>Claude Code</h4><pre id=\"snippet-claude-code\">{}claude</pre>\
         <p class=\"note\">Or in <code>~/.claude/settings.json</code>:</p>\
         <pre id=\"snippet-claude-settings\">{}</pre>\
         <p class=\"note\">Or with a short-lived key that renews itself: run \
         <code>llmlite login --gateway {}</code> once, then:</p>\
         <pre id=\"snippet-claude-helper\">{}</pre>\
         <h4>OpenAI SDK (Python)</h4><pre id=\"snippet-openai\">{}</pre>\
         <h4>Codex CLI (Responses API)</h4><pre id=\"snippet-codex\">{}</pre>\
         <h4>curl</h4><pre id=\"snippet-curl\">{}</pre></section>",
        escape(&exports),
        escape(&settings),
        escape(&base),
        escape(&helper),
        escape(&openai),
        escape(&codex),
        escape(&curl),
    )
}
