//! Short-lived keys for developers' machines over real HTTP, against a real OpenID Provider:
//! the device authorization (RFC 8628) answers in order (pending, too fast, approved once,
//! denied, expired), the approval needs a company sign-in, the key is the person's own and
//! ends when it should (injected clock), each refresh rotates the refresh token and asks the
//! provider, and a person disabled at the provider, by `/user/update` or by SCIM loses the
//! credential and the keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite_tests::oidc::{OidcProvider, Walk, company_gateway};
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::{Value, json};

const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

struct Company {
    gw: TestGateway,
    op: OidcProvider,
    base: String,
    http: reqwest::Client,
}

async fn company() -> Option<Company> {
    let (gw, op, base) = company_gateway(&[
        ("LLMLITE_OIDC_TEAM_MAP", r#"{"developers": "team-dev"}"#),
        ("LLMLITE_SHORT_KEY_HOURS", "2"),
    ])
    .await?;
    gw.admin(
        "/team/new",
        json!({"team_id": "team-dev", "max_keys_per_user": 1}),
    )
    .await;
    Some(Company {
        gw,
        op,
        base,
        http: reqwest::Client::new(),
    })
}

impl Company {
    async fn form(&self, path: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(pairs).unwrap())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn device_code(&self) -> Value {
        let (status, body) = self
            .form("/oauth/device/code", &[("client_id", "llmlite-cli")])
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn poll(&self, device_code: &str) -> (u16, Value) {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", DEVICE),
                ("client_id", "llmlite-cli"),
                ("device_code", device_code),
            ],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        self.form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", "llmlite-cli"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn chat(&self, key: &str) -> u16 {
        self.gw
            .post(
                "/v1/chat/completions",
                key,
                json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await
            .status
    }

    /// `account` signs in to the console and decides on `user_code`: the answer's status.
    async fn decide(&self, walk: &Walk, user_code: &str, decision: &str) -> u16 {
        let page = walk
            .get(&format!("{}/ui/device?user_code={user_code}", self.base))
            .await;
        assert_eq!(page.status, 200, "{page:?}");
        let marker = "name=\"csrf\" value=\"";
        let at = page.body.find(marker).unwrap() + marker.len();
        let csrf = page.body[at..].split('"').next().unwrap().to_owned();
        walk.post_form(
            &format!("{}/ui/device", self.base),
            &[
                ("csrf", &csrf),
                ("user_code", user_code),
                ("decision", decision),
            ],
        )
        .await
        .status
    }
}

/// The device flow up to the first key: (key, refresh token).
async fn signed_in_machine(c: &Company, walk: &Walk) -> (String, String) {
    let code = c.device_code().await;
    let user_code = code["user_code"].as_str().unwrap();
    assert_eq!(c.decide(walk, user_code, "approve").await, 200);
    let (status, tokens) = c.poll(code["device_code"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    (
        tokens["access_token"].as_str().unwrap().to_owned(),
        tokens["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn the_device_flow_answers_in_order_and_gives_a_key_once() {
    let Some(c) = company().await else { return };
    let code = c.device_code().await;
    let device_code = code["device_code"].as_str().unwrap().to_owned();
    let user_code = code["user_code"].as_str().unwrap().to_owned();
    assert_eq!(code["interval"], 5);
    assert_eq!(code["expires_in"], 600);
    assert_eq!(
        code["verification_uri_complete"],
        format!("{}/ui/device?user_code={user_code}", c.base)
    );
    // A client that is not llmlite's, or a grant that is not one, is refused.
    let (status, body) = c
        .form("/oauth/device/code", &[("client_id", "someone")])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, body) = c
        .form(
            "/oauth/token",
            &[("grant_type", "password"), ("client_id", "llmlite-cli")],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Not approved yet: pending; polled again at once: slow down.
    let (status, body) = c.poll(&device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (_, body) = c.poll(&device_code).await;
    assert_eq!(body["error"], "slow_down");

    // Signed out, the approval page sends the browser to sign in and back.
    let bob = Walk::new();
    let page = bob
        .get(&format!("{}/ui/device?user_code={user_code}", c.base))
        .await;
    assert_eq!(page.status, 303);
    let login = page.location.unwrap();
    assert!(login.contains("/ui/login?next=%2Fui%2Fdevice"), "{login}");
    let login_page = bob.get(&login).await;
    assert!(
        login_page
            .body
            .contains("/ui/oidc/start?next=%2Fui%2Fdevice"),
        "{}",
        login_page.body
    );
    let signed = bob.sign_in(&c.base, &c.op.issuer, "bob").await;
    assert_eq!(signed.status, 200);
    // A master-key session may not approve: the approval carries a person.
    let admin = Walk::new();
    admin
        .post_form(&format!("{}/ui/login", c.base), &[("key", MASTER_KEY)])
        .await;
    let refused = admin
        .get(&format!("{}/ui/device?user_code={user_code}", c.base))
        .await;
    assert_eq!(refused.status, 403);
    // A mistyped code changes nothing.
    assert_eq!(c.decide(&bob, "BCDF-GHJK", "approve").await, 404);
    assert_eq!(
        c.decide(&bob, &user_code.to_lowercase(), "approve").await,
        200
    );

    // Approved: one key, once.
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.gw.state.clock.advance(Duration::from_secs(6));
    let (status, tokens) = c.poll(&device_code).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 7200);
    let key = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-"));
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("llr_")
    );
    let (status, again) = c.poll(&device_code).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The key is bob's, of his team, marked as a short-lived one, and works.
    let row: (Option<String>, Option<String>, Value, Option<String>) = sqlx::query_as(
        "SELECT user_id, team_id, metadata, key_alias FROM litellm_verificationtoken
         WHERE is_active",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    assert_eq!(row.0.as_deref(), Some("bob@example.com"));
    assert_eq!(row.1.as_deref(), Some("team-dev"));
    assert!(
        row.2["llmlite_cli_credential"]
            .as_str()
            .unwrap()
            .starts_with("cred_")
    );
    assert!(row.3.unwrap().starts_with("llmlite key "));
    assert_eq!(c.chat(&key).await, 200);
    // Neither the refresh token nor the device code is stored as it is.
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM llmlite_cli_credential")
        .persistent(false)
        .fetch_one(&c.gw.db.pool)
        .await
        .unwrap();
    assert_ne!(stored, tokens["refresh_token"].as_str().unwrap());
    assert_eq!(stored.len(), 64);

    // A denied code, and an expired one.
    let denied = c.device_code().await;
    assert_eq!(
        c.decide(&bob, denied["user_code"].as_str().unwrap(), "deny")
            .await,
        200
    );
    let (_, body) = c.poll(denied["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "access_denied");
    let late = c.device_code().await;
    c.gw.state.clock.advance(Duration::from_secs(601));
    let (_, body) = c.poll(late["device_code"].as_str().unwrap()).await;
    assert_eq!(body["error"], "expired_token");
}

#[tokio::test]
async fn a_short_lived_key_ends_when_it_should_and_refreshing_rotates_the_credential() {
    let Some(c) = company().await else { return };
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let (key, refresh_token) = signed_in_machine(&c, &bob).await;
    assert_eq!(c.chat(&key).await, 200);
    // Short-lived keys do not count against the team's one live key: bob may still make one.
    let me = bob.get(&format!("{}/ui/me", c.base)).await;
    assert!(
        me.body.contains("llmlite key"),
        "listed as such: {}",
        me.body
    );

    // Two hours later the key has ended.
    c.gw.state.clock.advance(Duration::from_secs(2 * 3600 + 1));
    assert_eq!(c.chat(&key).await, 401);
    // A refresh asks the provider and gives a new key and a new refresh token; the old
    // refresh token stops.
    let (status, tokens) = c.refresh(&refresh_token).await;
    assert_eq!(status, 200, "{tokens}");
    let new_key = tokens["access_token"].as_str().unwrap().to_owned();
    let next = tokens["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(next, refresh_token);
    assert_eq!(c.chat(&new_key).await, 200);
    let (status, body) = c.refresh(&refresh_token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let log = c.op.log().await;
    let refreshes = log["token"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["grant_type"] == "refresh_token" && t["ok"] == true)
        .count();
    assert_eq!(refreshes, 1, "the provider was asked once: {log}");

    // Disabled at the provider: the next refresh ends the credential and its keys.
    c.op.accounts(json!({"bob": {"disabled": true}})).await;
    let (status, body) = c.refresh(&next).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    assert_eq!(c.chat(&new_key).await, 401);
    let revoked =
        c.gw.count("SELECT count(*) FROM llmlite_cli_credential WHERE revoked_at IS NOT NULL")
            .await;
    assert_eq!(revoked, 1);
    let recorded =
        c.gw.count("SELECT count(*) FROM llmlite_admin_action WHERE action = 'cli.revoke_idp'")
            .await;
    assert_eq!(recorded, 1);
}

#[tokio::test]
async fn disabling_a_user_by_the_admin_api_or_scim_ends_everything_at_once() {
    let Some(c) = company().await else { return };
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let (short, refresh_token) = signed_in_machine(&c, &bob).await;
    let long =
        c.gw.mint_raw_key(json!({"user_id": "bob@example.com", "key_alias": "bobs-own"}))
            .await;
    assert_eq!(c.chat(&long).await, 200);

    // SCIM: the provisioning connector (an admin key) sets active to false.
    let patch = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": false}}]
    });
    let response = c
        .http
        .patch(format!("{}/scim/v2/Users/bob@example.com", c.base))
        .bearer_auth(MASTER_KEY)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["active"], false);
    // At once: the short-lived key, the other key, the credential and the console session.
    assert_eq!(c.chat(&short).await, 401);
    assert_eq!(c.chat(&long).await, 401);
    let (_, body) = c.refresh(&refresh_token).await;
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(bob.get(&format!("{}/ui/me", c.base)).await.status, 303);
    // Without an admin key SCIM is refused; a body that is not a PatchOp is refused.
    let response = c
        .http
        .patch(format!("{}/scim/v2/Users/bob@example.com", c.base))
        .bearer_auth(&long)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = c
        .http
        .patch(format!("{}/scim/v2/Users/bob@example.com", c.base))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Enabled again by /user/update: a new sign-in works; blocked keys stay blocked until an
    // admin unblocks them.
    let updated =
        c.gw.admin(
            "/user/update",
            json!({"user_id": "bob@example.com", "disabled": false}),
        )
        .await;
    assert_eq!(updated["user_id"], "bob@example.com");
    assert_eq!(c.chat(&long).await, 401);
    let again = Walk::new();
    assert_eq!(
        again.sign_in(&c.base, &c.op.issuer, "bob").await.status,
        200
    );
    // And disabled by /user/update: the new session ends.
    c.gw.admin(
        "/user/update",
        json!({"user_id": "bob@example.com", "disabled": true}),
    )
    .await;
    assert_eq!(again.get(&format!("{}/ui/me", c.base)).await.status, 303);
    let actions: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, after FROM llmlite_admin_action
         WHERE action IN ('user.disable', 'user.enable') ORDER BY id",
    )
    .persistent(false)
    .fetch_all(&c.gw.db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = actions.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(names, ["user.disable", "user.enable", "user.disable"]);
    assert_eq!(actions[0].1["keys_blocked"], 1);
    assert_eq!(actions[0].1["short_lived_keys_ended"], 1);
    assert_eq!(actions[0].1["credentials_revoked"], 1);
}

/// Hostile input to every new route: NUL bytes, odd Unicode, an oversized body, a code that is
/// not one. Each is refused in its protocol's shape, nothing is stored and no session is made.
#[tokio::test]
async fn hostile_input_to_the_sign_in_routes_is_refused_and_changes_nothing() {
    let Some(c) = company().await else { return };
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let state = |sql: &'static str| c.gw.count(sql);
    let before = (
        state("SELECT count(*) FROM llmlite_device_grant").await,
        state("SELECT count(*) FROM llmlite_cli_credential").await,
        state("SELECT count(*) FROM llmlite_console_session").await,
        state("SELECT count(*) FROM litellm_verificationtoken").await,
    );
    for hostile in [
        "a\0b",
        "\u{202e}llr_\u{fe0f}",
        "ｌｌｒ_𝕏",
        &"x".repeat(10_000),
    ] {
        let (status, body) = c.refresh(hostile).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{hostile:?}"
        );
        let (status, body) = c.poll(hostile).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{hostile:?}"
        );
        let (status, body) = c
            .form(
                "/oauth/token",
                &[("grant_type", hostile), ("client_id", "llmlite-cli")],
            )
            .await;
        assert_eq!(status, 400, "{body}");
        let (status, _) = c
            .form("/oauth/device/code", &[("client_id", hostile)])
            .await;
        assert_eq!(status, 401);
        // The approval page and the callback refuse the same, with no session made.
        let page = bob
            .get(&format!(
                "{}/ui/device?user_code={}",
                c.base,
                llmlite_tests::oidc::encode(hostile)
            ))
            .await;
        assert_eq!(page.status, 200, "the form, with the code escaped");
        assert!(!page.body.contains('\0'));
        let stranger = Walk::new();
        let callback = stranger
            .get(&format!(
                "{}/ui/oidc/callback?code=x&state={}",
                c.base,
                llmlite_tests::oidc::encode(hostile)
            ))
            .await;
        assert_eq!(callback.status, 400, "{hostile:?}");
        assert!(stranger.cookie("llmlite_session").is_none());
    }
    // A body past the gateway's limit is refused before it is read, in OpenAI's shape.
    let big = "client_id=llmlite-cli&x=".to_owned() + &"a".repeat(12 * 1024 * 1024);
    let response = c
        .http
        .post(format!("{}/oauth/device/code", c.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "413", "{body}");
    // SCIM: a user ID with a NUL byte or odd Unicode, and a PatchOp whose value is not a
    // boolean, are refused in SCIM's shape.
    for user in ["bob%00@example.com", "b%C3%B6b%E2%80%AE"] {
        let response = c
            .http
            .patch(format!("{}/scim/v2/Users/{user}", c.base))
            .bearer_auth(MASTER_KEY)
            .json(
                &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                          "Operations": [{"op": "replace", "path": "active", "value": false}]}),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert!(matches!(status, 400 | 404), "{user}: {status} {body}");
        assert_eq!(body["status"], status.to_string(), "{body}");
    }
    let response = c
        .http
        .patch(format!("{}/scim/v2/Users/bob@example.com", c.base))
        .bearer_auth(MASTER_KEY)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "replace", "path": "active", "value": "no\u{0}"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let after = (
        state("SELECT count(*) FROM llmlite_device_grant").await,
        state("SELECT count(*) FROM llmlite_cli_credential").await,
        state("SELECT count(*) FROM llmlite_console_session").await,
        state("SELECT count(*) FROM litellm_verificationtoken").await,
    );
    assert_eq!(after, before);
    assert_eq!(
        state("SELECT count(*) FROM litellm_usertable WHERE disabled_at IS NOT NULL").await,
        0
    );
    assert_eq!(bob.get(&format!("{}/ui/me", c.base)).await.status, 200);
}

/// The database goes away for ten seconds in the middle of a device sign-in: every route says
/// so (503, nothing half-written), the console session survives it, and afterwards the same
/// sign-in finishes and its key's first request pays exactly once.
#[tokio::test]
async fn a_ten_second_database_outage_loses_no_session_and_no_sign_in() {
    let outage =
        llmlite_tests::Outage::forward(llmlite_tests::authority(llmlite_tests::server_url())).await;
    let Some((gw, op, base)) = llmlite_tests::oidc::company_gateway_via(
        &[("LLMLITE_OIDC_TEAM_MAP", r#"{"developers": "team-dev"}"#)],
        Some(outage.endpoint.trim_start_matches("http://")),
    )
    .await
    else {
        return;
    };
    gw.admin("/team/new", json!({"team_id": "team-dev"})).await;
    let c = Company {
        gw,
        op,
        base,
        http: reqwest::Client::new(),
    };
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let code = c.device_code().await;
    let device_code = code["device_code"].as_str().unwrap().to_owned();

    outage.cut();
    let (status, body) = c.poll(&device_code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let (status, body) = c.refresh("llr_anything").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );
    let me = bob.get(&format!("{}/ui/me", c.base)).await;
    assert_eq!(
        me.status, 503,
        "the session is not ended by an outage: {me:?}"
    );
    let start = Walk::new().get(&format!("{}/ui/oidc/start", c.base)).await;
    assert_eq!(start.status, 503);
    let login = Walk::new()
        .post_form(&format!("{}/ui/login", c.base), &[("key", MASTER_KEY)])
        .await;
    assert_eq!(login.status, 503);
    tokio::time::sleep(Duration::from_secs(10)).await;
    outage.restore();

    // Back: the same session, the same device code.
    assert_eq!(bob.get(&format!("{}/ui/me", c.base)).await.status, 200);
    assert_eq!(
        c.decide(&bob, code["user_code"].as_str().unwrap(), "approve")
            .await,
        200
    );
    let (status, tokens) = c.poll(&device_code).await;
    assert_eq!(status, 200, "{tokens}");
    let key = tokens["access_token"].as_str().unwrap();
    assert_eq!(c.chat(key).await, 200);
    c.gw.settled().await;
    assert_eq!(c.gw.count("SELECT count(*) FROM litellm_spend").await, 1);
    assert_eq!(c.gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
    assert_eq!(
        c.gw.count("SELECT count(*) FROM llmlite_cli_credential")
            .await,
        1
    );
}
