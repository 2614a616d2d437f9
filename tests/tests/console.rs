//! The admin console's sign-in, session and pages over real HTTP: who may sign in, what the
//! cookie holds and how it is refused (none, forged, expired, a key since blocked), CSRF on
//! state-changing forms, the security headers, and the keys table.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite::console::{CSP, SESSION_COOKIE};
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::json;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in with `key`: the status and the session cookie's `name=value`, if one was set.
async fn sign_in(gw: &TestGateway, key: &str) -> (u16, Option<String>, String) {
    let response = form(browser().post(gw.url("/ui/login")), &[("key", key)])
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.text().await.unwrap();
    (status, set_cookie, body)
}

/// `builder` with `pairs` as an HTML form's body.
fn form(builder: reqwest::RequestBuilder, pairs: &[(&str, &str)]) -> reqwest::RequestBuilder {
    builder
        .header("content-type", "application/x-www-form-urlencoded")
        .body(serde_urlencoded::to_string(pairs).unwrap())
}

/// Unpadded URL-safe base64, as the cookie's parts are written.
fn base64_url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn get(gw: &TestGateway, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = browser().get(gw.url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

/// A signed-in page's HTML.
async fn page_text(gw: &TestGateway, path: &str, cookie: &str) -> String {
    get(gw, path, Some(cookie)).await.text().await.unwrap()
}

/// The CSRF token of a signed-in page's sign-out form.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").unwrap() + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_master_key_signs_in_and_the_cookie_holds_a_session_not_the_key() {
    let gw = TestGateway::start().await;
    let minted = gw
        .mint_key(json!({"key_alias": "team-<b>bot</b>", "max_budget": 5, "rpm_limit": 60}))
        .await;
    let raw = minted["key"].as_str().unwrap().to_owned();

    // Signed out: every page sends the browser to the sign-in page, which has the CSP.
    let response = get(&gw, "/ui/keys", None).await;
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/ui/login");
    let response = get(&gw, "/ui/login", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], CSP);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("<form method=\"post\" action=\"/ui/login\"")
    );

    let (status, set_cookie, _) = sign_in(&gw, MASTER_KEY).await;
    assert_eq!(status, 303);
    let set_cookie = set_cookie.expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    // Loopback (llmlite dev): no Secure, which a browser would drop over plain HTTP.
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    assert!(!set_cookie.contains(MASTER_KEY), "{set_cookie}");
    assert!(set_cookie.starts_with(&format!("{SESSION_COOKIE}=")));
    let cookie = cookie_pair(&set_cookie);

    let response = get(&gw, "/ui/keys", Some(&cookie)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-security-policy"], CSP);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    // The alias, escaped; the key's short name; never the raw key or the master key.
    assert!(page.contains("team-&lt;b&gt;bot&lt;/b&gt;"), "{page}");
    assert!(!page.contains("<b>bot</b>"));
    assert!(
        page.contains(minted["key_name"].as_str().unwrap()),
        "{page}"
    );
    assert!(!page.contains(&raw));
    assert!(!page.contains(MASTER_KEY));
    assert!(page.contains("$0 of $5"), "{page}");
    assert!(page.contains("60 / –"), "{page}");
    assert!(!page.contains("<script"), "no inline script: {page}");
}

#[tokio::test]
async fn no_cookie_a_forged_one_an_expired_one_or_a_blocked_keys_one_is_refused() {
    let gw = TestGateway::start().await;
    let (_, set_cookie, _) = sign_in(&gw, MASTER_KEY).await;
    let cookie = cookie_pair(&set_cookie.unwrap());
    assert_eq!(get(&gw, "/ui/keys", Some(&cookie)).await.status(), 200);

    // Forged: the payload changed (a key hash in place of `master`), or the MAC.
    let value = cookie.split_once('=').unwrap().1;
    let (payload, mac) = value.split_once('.').unwrap();
    let flip = |text: &str| {
        let mut flipped = text.to_owned();
        flipped.replace_range(0..1, if text.starts_with('A') { "B" } else { "A" });
        flipped
    };
    // A payload of our own (a later expiry), signed with nothing valid.
    let own = base64_url(&format!("v1|master|{}|csrf", i64::MAX));
    for forged in [
        format!("{SESSION_COOKIE}={}.{mac}", flip(payload)),
        format!("{SESSION_COOKIE}={own}.{mac}"),
        format!("{SESSION_COOKIE}={payload}.{}", flip(mac)),
        format!("{SESSION_COOKIE}={payload}"),
        format!("{SESSION_COOKIE}=garbage"),
    ] {
        let response = get(&gw, "/ui/keys", Some(&forged)).await;
        assert_eq!(response.status(), 303, "{forged}");
        assert_eq!(response.headers()["location"], "/ui/login?ended=1");
    }

    // Expired: eight hours later. The sign-in page says why.
    gw.state.clock.advance(Duration::from_secs(8 * 3600 + 1));
    let expired = get(&gw, "/ui/keys", Some(&cookie)).await;
    assert_eq!(expired.status(), 303);
    assert_eq!(expired.headers()["location"], "/ui/login?ended=1");
    let login = get(&gw, "/ui/login?ended=1", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(login.contains("Your session has ended"), "{login}");
    // An expired session's form changes nothing.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    let request = browser()
        .post(gw.url("/ui/keys/new"))
        .header("cookie", &cookie);
    let response = form(request, &[("csrf", "x"), ("key_alias", "late")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(after, before);

    // An admin key's session ends the moment the key is blocked.
    gw.admin(
        "/user/new",
        json!({"user_id": "ops", "user_role": "proxy_admin", "auto_create_key": false}),
    )
    .await;
    let admin_key = gw.mint_raw_key(json!({"user_id": "ops"})).await;
    let (status, set_cookie, _) = sign_in(&gw, &admin_key).await;
    assert_eq!(status, 303);
    let set_cookie = set_cookie.unwrap();
    assert!(!set_cookie.contains(&admin_key));
    let cookie = cookie_pair(&set_cookie);
    let page = page_text(&gw, "/ui/keys", &cookie).await;
    assert!(page.contains("admin key"), "{page}");
    assert!(!page.contains(&admin_key));
    gw.admin("/key/block", json!({"key": admin_key})).await;
    assert_eq!(get(&gw, "/ui/keys", Some(&cookie)).await.status(), 303);
}

#[tokio::test]
async fn a_key_that_is_not_an_admin_key_cannot_sign_in() {
    let gw = TestGateway::start().await;
    let plain = gw.mint_raw_key(json!({"key_alias": "dev"})).await;
    let (status, set_cookie, body) = sign_in(&gw, &plain).await;
    assert_eq!(status, 403);
    assert!(set_cookie.is_none());
    assert!(body.contains("not an admin key"), "{body}");
    assert!(!body.contains(&plain));
    let (status, set_cookie, body) = sign_in(&gw, "sk-nobody-0000000000000000").await;
    assert_eq!(status, 401);
    assert!(set_cookie.is_none());
    assert!(body.contains("was not accepted"), "{body}");
    let (status, _, _) = sign_in(&gw, "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn signing_out_needs_the_csrf_token_and_ends_the_session() {
    let gw = TestGateway::start().await;
    let (_, set_cookie, _) = sign_in(&gw, MASTER_KEY).await;
    let cookie = cookie_pair(&set_cookie.unwrap());
    let page = page_text(&gw, "/ui/keys", &cookie).await;
    let token = csrf(&page);

    for bad in ["", "not-the-token"] {
        let request = browser()
            .post(gw.url("/ui/logout"))
            .header("cookie", &cookie);
        let response = form(request, &[("csrf", bad)]).send().await.unwrap();
        assert_eq!(response.status(), 403, "{bad:?}");
        assert!(response.headers().get("set-cookie").is_none());
    }
    assert_eq!(get(&gw, "/ui/keys", Some(&cookie)).await.status(), 200);

    let request = browser()
        .post(gw.url("/ui/logout"))
        .header("cookie", &cookie);
    let response = form(request, &[("csrf", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let cleared = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The browser drops the cookie; without it /ui refuses.
    assert_eq!(get(&gw, "/ui/keys", None).await.status(), 303);
}

#[tokio::test]
async fn the_keys_table_is_filtered_and_paginated_by_the_server() {
    let gw = TestGateway::start().await;
    gw.admin("/team/new", json!({"team_id": "blue"})).await;
    for n in 0..55 {
        let team = if n % 5 == 0 {
            json!("blue")
        } else {
            json!(null)
        };
        gw.mint_key(json!({"key_alias": format!("svc-{n:02}"), "team_id": team}))
            .await;
    }
    let (_, set_cookie, _) = sign_in(&gw, MASTER_KEY).await;
    let cookie = cookie_pair(&set_cookie.unwrap());
    let rows = |page: &str| page.matches("<tr data-token=").count();

    let first = page_text(&gw, "/ui/keys", &cookie).await;
    assert_eq!(rows(&first), 50);
    assert!(first.contains("55 keys · page 1 of 2"), "{first}");
    let second = page_text(&gw, "/ui/keys?page=2", &cookie).await;
    assert_eq!(rows(&second), 5);

    let blue = page_text(&gw, "/ui/keys?team=blue", &cookie).await;
    assert_eq!(rows(&blue), 11, "{blue}");
    let one = page_text(&gw, "/ui/keys?q=svc-07", &cookie).await;
    assert_eq!(rows(&one), 1, "{one}");
    // A wildcard in the filter is text, not a pattern.
    let none = page_text(&gw, "/ui/keys?q=%25", &cookie).await;
    assert_eq!(rows(&none), 0, "{none}");
    let underscore = page_text(&gw, "/ui/keys?q=svc_0", &cookie).await;
    assert_eq!(rows(&underscore), 0, "{underscore}");
    let bad = get(&gw, "/ui/keys?page=abc", Some(&cookie)).await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("The page number must be")
    );
}

/// A signed-in master session: the cookie and a page's CSRF token.
async fn master_session(gw: &TestGateway) -> (String, String) {
    let (_, set_cookie, _) = sign_in(gw, MASTER_KEY).await;
    let cookie = cookie_pair(&set_cookie.unwrap());
    let page = get(gw, "/ui/keys", Some(&cookie))
        .await
        .text()
        .await
        .unwrap();
    (cookie, csrf(&page))
}

async fn post_form(
    gw: &TestGateway,
    path: &str,
    cookie: &str,
    pairs: &[(&str, &str)],
) -> (u16, String) {
    let request = browser().post(gw.url(path)).header("cookie", cookie);
    let response = form(request, pairs).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn key_count(gw: &TestGateway) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_made_in_the_console_is_shown_once_works_and_is_blocked_from_there() {
    let gw = TestGateway::start().await;
    gw.admin("/team/new", json!({"team_id": "blue"})).await;
    let (cookie, token) = master_session(&gw).await;
    let (status, created) = post_form(
        &gw,
        "/ui/keys/new",
        &cookie,
        &[
            ("csrf", &token),
            ("key_alias", "console-made"),
            ("team_id", "blue"),
            ("max_budget", "2.5"),
            ("rpm_limit", "10"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let at = created.find("value=\"sk-").unwrap() + "value=\"".len();
    let secret = created[at..].split('"').next().unwrap().to_owned();
    assert!(created.contains("only time the key is shown"));
    assert!(created.contains("src=\"/ui/static/console.js\""));

    // The key works; the keys page names it but never shows it again.
    let chat = gw
        .post(
            "/v1/chat/completions",
            &secret,
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status, 200);
    gw.settled().await;
    let keys = page_text(&gw, "/ui/keys", &cookie).await;
    assert!(keys.contains("console-made"), "{keys}");
    assert!(keys.contains("team blue"));
    assert!(!keys.contains(&secret));
    // Nor on any other page.
    let hash: String = sqlx::query_scalar(
        "SELECT token FROM litellm_verificationtoken WHERE key_alias = 'console-made'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    for path in [
        format!("/ui/keys/{hash}"),
        "/ui/teams".to_owned(),
        "/ui/teams/blue".to_owned(),
        "/ui/users".to_owned(),
        "/ui/spend?group=key".to_owned(),
        "/ui/spend.json?group=key".to_owned(),
        "/ui/spend.csv?group=key".to_owned(),
        "/ui/models".to_owned(),
        "/ui/audit".to_owned(),
    ] {
        let body = page_text(&gw, &path, &cookie).await;
        assert!(!body.contains(&secret), "{path}");
        assert!(!body.contains(MASTER_KEY), "{path}");
    }

    // The action is the admin API's, recorded in the audit trail as the master key's.
    let actions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, action, via FROM llmlite_admin_action WHERE object_type = 'key' ORDER BY at",
    )
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert!(
        actions
            .iter()
            .any(|(actor, action, via)| actor == "master_key"
                && action.contains("generate")
                && via == "console"),
        "{actions:?}"
    );

    // Block it from the table: the next chat is refused.
    let (status, _) = post_form(
        &gw,
        "/ui/keys/action",
        &cookie,
        &[("csrf", &token), ("key", &hash), ("action", "block")],
    )
    .await;
    assert_eq!(status, 303);
    let chat = gw
        .post(
            "/v1/chat/completions",
            &secret,
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status, 401);
    let keys = page_text(&gw, "/ui/keys", &cookie).await;
    assert!(keys.contains("status-blocked"), "{keys}");
}

#[tokio::test]
async fn bad_input_in_a_console_form_says_why_and_changes_nothing() {
    let gw = TestGateway::start().await;
    let (cookie, token) = master_session(&gw).await;
    let before = key_count(&gw).await;

    let (status, page) = post_form(
        &gw,
        "/ui/keys/new",
        &cookie,
        &[("csrf", &token), ("key_alias", "x"), ("max_budget", "lots")],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("max_budget"), "{page}");
    // The form comes back as it was sent.
    assert!(page.contains("value=\"lots\""), "{page}");

    let (status, page) = post_form(
        &gw,
        "/ui/keys/new",
        &cookie,
        &[("csrf", &token), ("team_id", "no-such-team")],
    )
    .await;
    assert!(status == 400 || status == 404, "{status}: {page}");
    assert!(page.contains("role=\"alert\""), "{page}");

    // No CSRF token, or another session's: refused before anything is read.
    let (status, _) = post_form(&gw, "/ui/keys/new", &cookie, &[("key_alias", "sneaky")]).await;
    assert_eq!(status, 403);
    let (other_cookie, _) = master_session(&gw).await;
    let (status, _) = post_form(
        &gw,
        "/ui/keys/new",
        &other_cookie,
        &[("csrf", &token), ("key_alias", "sneaky")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = post_form(
        &gw,
        "/ui/keys/action",
        &cookie,
        &[("csrf", &token), ("key", "nope"), ("action", "explode")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(key_count(&gw).await, before);
}

#[tokio::test]
async fn the_spend_chart_reads_the_rollup_and_what_is_not_rolled_up_yet() {
    let gw = TestGateway::start().await;
    gw.admin("/team/new", json!({"team_id": "red"})).await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "red-1", "team_id": "red"}))
        .await;
    let chat = |text: &'static str| {
        gw.post(
            "/v1/chat/completions",
            &key,
            json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": text}]}),
        )
    };
    assert_eq!(chat("rolled up later").await.status, 200);
    gw.settled().await;
    let reports =
        std::env::temp_dir().join(format!("llmlite-console-spend-{}", std::process::id()));
    llmlite::rollup::run(
        &gw.state,
        &llmlite::clients::audit::Sink::Directory(reports.clone()),
        90,
        gw.state.clock.now(),
    )
    .await
    .unwrap();
    assert_eq!(chat("not rolled up yet").await.status, 200);
    gw.settled().await;
    let expected: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT sum(spend) FROM litellm_spend")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();

    // Without a session the data is a 401, as an API.
    let response = get(&gw, "/ui/spend.json?group=team&days=7", None).await;
    assert_eq!(response.status(), 401);
    let (cookie, _) = master_session(&gw).await;
    let data: serde_json::Value = get(&gw, "/ui/spend.json?group=team&days=7", Some(&cookie))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(data["days"].as_array().unwrap().len(), 7);
    assert_eq!(data["series"][0]["name"], "red", "{data}");
    let today: rust_decimal::Decimal = data["series"][0]["values"][6]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(today, expected, "both requests, each once: {data}");
    assert_eq!(data["totals"]["requests"], 2);

    let page = page_text(&gw, "/ui/spend?group=key&days=30", &cookie).await;
    assert!(
        page.contains(&format!("${}", expected.normalize())),
        "{page}"
    );
    assert!(page.contains("red-1"));
    assert!(
        page.contains("data-src=\"/ui/spend.json?group=key&amp;days=30\""),
        "{page}"
    );
    let csv = get(&gw, "/ui/spend.csv?group=model&days=30", Some(&cookie)).await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("date,model,requests,tokens,spend\n"),
        "{csv}"
    );
    assert!(csv.contains(",claude-haiku-4-5,2,"), "{csv}");

    for bad in [
        "/ui/spend?days=91",
        "/ui/spend?days=0",
        "/ui/spend?group=colour",
    ] {
        let response = get(&gw, bad, Some(&cookie)).await;
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.text().await.unwrap().contains("role=\"alert\""));
    }
    let _ = std::fs::remove_dir_all(reports);
}

#[tokio::test]
async fn the_models_and_audit_pages_show_the_catalog_and_the_trail() {
    let gw = TestGateway::start().await;
    let raw = gw.mint_raw_key(json!({"key_alias": "audited"})).await;
    let (cookie, _) = master_session(&gw).await;
    let models = page_text(&gw, "/ui/models", &cookie).await;
    assert!(
        models.contains("eu.anthropic.claude-haiku-4-5-20251001-v1:0"),
        "{models}"
    );
    assert!(
        models.contains("$1.10") && models.contains("$5.50"),
        "{models}"
    );

    let audit = page_text(&gw, "/ui/audit", &cookie).await;
    assert!(audit.contains("<td>key.generate</td>"), "{audit}");
    assert!(audit.contains("<td>api</td>"), "{audit}");
    let filtered = page_text(&gw, "/ui/audit?action=user.new", &cookie).await;
    assert!(!filtered.contains("<td>key.generate</td>"), "{filtered}");
    // Keys appear as hashes only.
    let hash: String = sqlx::query_scalar("SELECT token FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert!(audit.contains(&hash), "{audit}");
    assert!(!audit.contains(&raw), "{audit}");
}

#[tokio::test]
async fn a_keys_page_shows_every_limit_that_applies_and_which_would_refuse() {
    let gw = TestGateway::start().await;
    gw.admin(
        "/team/new",
        json!({"team_id": "tight", "max_budget": "0.00000001"}),
    )
    .await;
    gw.admin(
        "/user/new",
        json!({"user_id": "u1", "rpm_limit": 100, "auto_create_key": false}),
    )
    .await;
    let raw = gw
        .mint_raw_key(
            json!({"key_alias": "limited", "user_id": "u1", "team_id": "tight",
                            "rpm_limit": 5, "max_parallel_requests": 2}),
        )
        .await;
    let response = gw
        .post(
            "/v1/chat/completions",
            &raw,
            json!({"model": "claude-haiku-4-5", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "one"}]}),
        )
        .await;
    let first = response.status;
    gw.settled().await;
    let token: String = sqlx::query_scalar("SELECT token FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    let (cookie, _) = master_session(&gw).await;
    let keys = page_text(&gw, "/ui/keys", &cookie).await;
    assert!(
        keys.contains(&format!("href=\"/ui/keys/{token}\"")),
        "{keys}"
    );
    let page = page_text(&gw, &format!("/ui/keys/{token}"), &cookie).await;
    for scope in ["<td>key</td>", "<td>user</td>", "<td>team</td>"] {
        assert!(page.contains(scope), "{scope}: {page}");
    }
    assert!(page.contains("of 2 in flight"), "{page}");
    assert!(page.contains("5 ("), "the key's RPM and its level: {page}");
    // The team's budget is smaller than any request (a token of the cheapest model, an
    // embedding at $0.02 per million, is $0.00000002): it refuses.
    assert_eq!(first, 403, "the team budget refused the chat");
    assert!(
        page.contains("The next request would be refused by the team budget"),
        "{page}"
    );
    assert!(
        page.contains("ANTHROPIC_BASE_URL=http://127.0.0.1"),
        "{page}"
    );
    assert!(!page.contains(&raw));

    let missing = get(&gw, &format!("/ui/keys/{}", "0".repeat(64)), Some(&cookie)).await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_key_is_regenerated_from_its_page_with_a_grace_period() {
    let gw = TestGateway::start().await;
    let old = gw.mint_raw_key(json!({"key_alias": "rotating"})).await;
    let token: String = sqlx::query_scalar("SELECT token FROM litellm_verificationtoken")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    let (cookie, csrf_token) = master_session(&gw).await;
    let detail = page_text(&gw, &format!("/ui/keys/{token}"), &cookie).await;
    assert!(
        detail.contains("action=\"/ui/keys/regenerate\""),
        "{detail}"
    );
    let (status, page) = post_form(
        &gw,
        "/ui/keys/regenerate",
        &cookie,
        &[
            ("csrf", &csrf_token),
            ("key", &token),
            ("grace_period", "1h"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Key regenerated"));
    let at = page.find("value=\"sk-").unwrap() + "value=\"".len();
    let new = page[at..].split('"').next().unwrap().to_owned();
    assert_ne!(new, old);
    let chat = |key: String| {
        let gw = &gw;
        async move {
            gw.post(
                "/v1/chat/completions",
                &key,
                json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .status
        }
    };
    assert_eq!(chat(new.clone()).await, 200);
    assert_eq!(
        chat(old.clone()).await,
        200,
        "the old key works for its grace period"
    );
    gw.state.clock.advance(Duration::from_secs(3601));
    assert_eq!(chat(old).await, 401, "and not after it");
    assert_eq!(chat(new).await, 200);
    gw.settled().await;
    let via: String =
        sqlx::query_scalar("SELECT via FROM llmlite_admin_action WHERE action = 'key.regenerate'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(via, "console");
    // An hour went by: the session was idle past its timeout, so sign in again.
    let (cookie, csrf_token) = master_session(&gw).await;
    // A grace period that is not one is a message, and changes nothing.
    let (status, page) = post_form(
        &gw,
        "/ui/keys/regenerate",
        &cookie,
        &[
            ("csrf", &csrf_token),
            ("key", &token),
            ("grace_period", "soon"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("role=\"alert\""));
}

#[tokio::test]
async fn teams_and_users_are_listed_created_and_their_limits_edited() {
    let gw = TestGateway::start().await;
    let (cookie, token) = master_session(&gw).await;
    // Create a team and a user from the console.
    let (status, _) = post_form(
        &gw,
        "/ui/teams",
        &cookie,
        &[
            ("csrf", &token),
            ("mode", "create"),
            ("id", "green"),
            ("label", "Green team"),
            ("max_budget", "100"),
            ("rpm_limit", "50"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (status, _) = post_form(
        &gw,
        "/ui/users",
        &cookie,
        &[
            ("csrf", &token),
            ("mode", "create"),
            ("id", "grace"),
            ("label", "grace@example.com"),
            ("role", "internal_user"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    gw.mint_key(json!({"key_alias": "grace-green", "user_id": "grace", "team_id": "green"}))
        .await;

    let teams = page_text(&gw, "/ui/teams", &cookie).await;
    assert!(teams.contains("href=\"/ui/teams/green\""), "{teams}");
    assert!(
        teams.contains("Green team") && teams.contains("$0 of $100"),
        "{teams}"
    );
    let team = page_text(&gw, "/ui/teams/green", &cookie).await;
    assert!(team.contains("href=\"/ui/users/grace\""), "members: {team}");
    assert!(team.contains("grace-green"), "keys: {team}");
    assert!(
        team.contains("value=\"50\""),
        "the form holds the limits: {team}"
    );
    let user = page_text(&gw, "/ui/users/grace", &cookie).await;
    assert!(user.contains("href=\"/ui/teams/green\""), "{user}");

    // Edit the team's limits: a new budget, the RPM limit cleared.
    let (status, _) = post_form(
        &gw,
        "/ui/teams",
        &cookie,
        &[
            ("csrf", &token),
            ("mode", "update"),
            ("id", "green"),
            ("label", "Green team"),
            ("max_budget", "250"),
            ("rpm_limit", ""),
        ],
    )
    .await;
    assert_eq!(status, 303);
    let (max_budget, rpm): (Option<rust_decimal::Decimal>, Option<i64>) = sqlx::query_as(
        "SELECT max_budget, rpm_limit FROM litellm_teamtable WHERE team_id = 'green'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(max_budget, Some(rust_decimal::Decimal::from(250)));
    assert_eq!(rpm, None);
    let vias: Vec<String> = sqlx::query_scalar(
        "SELECT via FROM llmlite_admin_action WHERE object_type IN ('team', 'user') ORDER BY id",
    )
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(vias, ["console", "console", "console"]);

    // Bad input: a message, the form as sent, nothing changed.
    let (status, page) = post_form(
        &gw,
        "/ui/teams",
        &cookie,
        &[
            ("csrf", &token),
            ("mode", "update"),
            ("id", "green"),
            ("max_budget", "-5"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("role=\"alert\"") && page.contains("value=\"-5\""),
        "{page}"
    );
    let (status, page) = post_form(
        &gw,
        "/ui/teams",
        &cookie,
        &[("csrf", &token), ("mode", "create"), ("id", "green")],
    )
    .await;
    assert_eq!(status, 409, "{page}");
    let missing = get(&gw, "/ui/teams/nobody", Some(&cookie)).await;
    assert_eq!(missing.status(), 404);
    let unchanged: Option<rust_decimal::Decimal> =
        sqlx::query_scalar("SELECT max_budget FROM litellm_teamtable WHERE team_id = 'green'")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(unchanged, Some(rust_decimal::Decimal::from(250)));
}

#[tokio::test]
async fn a_key_made_in_the_console_without_limits_gets_the_default_tier() {
    // The production default: LLMLITE_DEFAULT_TIER unset.
    let gw = TestGateway::start_with(&[("LLMLITE_DEFAULT_TIER", "")]).await;
    let (cookie, token) = master_session(&gw).await;
    let form_page = page_text(&gw, "/ui/keys/new", &cookie).await;
    assert!(form_page.contains("default (standard)"), "{form_page}");
    let (status, created) = post_form(
        &gw,
        "/ui/keys/new",
        &cookie,
        &[("csrf", &token), ("key_alias", "console-default")],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert!(
        created
            .contains("Tier standard · 100 requests/min · 10000 tokens/min · budget $50 per 30d"),
        "{created}"
    );
    let stored: (
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<rust_decimal::Decimal>,
    ) = sqlx::query_as(
        "SELECT tier, tpm_limit, rpm_limit, max_budget FROM litellm_verificationtoken
             WHERE key_alias = 'console-default'",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored,
        (
            Some("standard".to_owned()),
            Some(10_000),
            Some(100),
            Some(rust_decimal::Decimal::from(50))
        )
    );
    let via: String = sqlx::query_scalar(
        // The record names the key by its hash (the alias is free text, kept out of it).
        "SELECT via FROM llmlite_admin_action WHERE action = 'key.generate'
           AND object_id = (SELECT token FROM litellm_verificationtoken
                             WHERE key_alias = 'console-default')",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(via, "console");

    // `none` from the form, with the master key's session: no limits.
    let (status, created) = post_form(
        &gw,
        "/ui/keys/new",
        &cookie,
        &[
            ("csrf", &token),
            ("key_alias", "console-none"),
            ("tier", "none"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert!(
        created.contains("Tier none · no limit requests/min"),
        "{created}"
    );
}
