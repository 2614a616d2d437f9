//! The console's HTML: escaping, the page frame every answer uses (with the navigation when
//! signed in), and small helpers for statuses and links.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Session;

/// HTML-escapes `text` for element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `title`, the navigation when signed in (with the sign-out form), and `body`.
pub(super) fn page(title: &str, session: Option<&Session>, body: &str) -> Response {
    let nav = match session {
        Some(session) if session.is_self_service() => format!(
            "<nav><a href=\"/ui/me\">My keys</a><a href=\"/ui/spend\">My spend</a>\
             <a href=\"/ui/models\">My models</a>\
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>\
             <span class=\"who\">{}</span></nav>",
            escape(session.csrf()),
            escape(&session.display_name()),
        ),
        Some(session) => format!(
            "<nav><a href=\"/ui/keys\">Keys</a><a href=\"/ui/keys/new\">New key</a>\
             <a href=\"/ui/teams\">Teams</a><a href=\"/ui/users\">Users</a>\
             <a href=\"/ui/spend\">Spend</a><a href=\"/ui/operations\">Operations</a>\
             <a href=\"/ui/models\">Models</a>\
             <a href=\"/ui/audit\">Audit</a>\
             <form method=\"post\" action=\"/ui/logout\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out</button></form>\
             <span class=\"who\">{}</span></nav>",
            escape(session.csrf()),
            escape(&session.display_name()),
        ),
        None => String::new(),
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · llmlite</title><link rel=\"stylesheet\" href=\"/ui/static/console.css\">\
         </head><body><header><h1>llmlite</h1>{nav}</header><main>{body}</main></body></html>\n",
        escape(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// `page`, with `status`.
pub(super) fn with_status(mut response: Response, status: StatusCode) -> Response {
    *response.status_mut() = status;
    response
}

/// `application/x-www-form-urlencoded` for a query value.
pub(super) fn form_encode(value: &str) -> String {
    serde_urlencoded::to_string([("v", value)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(form_encode("a b&c"), "a+b%26c");
    }
}
