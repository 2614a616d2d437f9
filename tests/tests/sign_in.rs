//! Company sign-in over real HTTP, against a real OpenID Provider (npm `oidc-provider` on
//! loopback, `tests/oidc/provider.mjs`): the whole code flow with PKCE, people made just in time
//! with the role and teams their groups map to, every way a callback or its ID token can be
//! wrong refused with no session made, a removed group taking the role away at the next
//! sign-in, sign-out at the provider too, developers' self-service within their team's policy,
//! and the idle timeout and sign-in throttle with the injected clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite_tests::oidc::{OidcProvider, Walk, company_gateway};
use llmlite_tests::{MASTER_KEY, TestGateway};
use serde_json::json;

/// The gateway with company sign-in, and its provider.
struct Company {
    gw: TestGateway,
    op: OidcProvider,
    base: String,
}

const ROLE_MAP: &str = r#"{"llm-admins": "proxy_admin", "auditors": "proxy_admin_viewer"}"#;
const TEAM_MAP: &str = r#"{"developers": "team-dev", "data": "team-data"}"#;

async fn company(extra: &[(&str, &str)]) -> Option<Company> {
    let mut env = vec![
        ("LLMLITE_OIDC_ROLE_MAP", ROLE_MAP),
        ("LLMLITE_OIDC_TEAM_MAP", TEAM_MAP),
    ];
    env.extend_from_slice(extra);
    let (gw, op, base) = company_gateway(&env).await?;
    gw.admin(
        "/team/new",
        json!({"team_id": "team-dev", "max_keys_per_user": 2, "max_self_service_tier": "standard"}),
    )
    .await;
    gw.admin("/team/new", json!({"team_id": "team-data"})).await;
    Some(Company { gw, op, base })
}

impl Company {
    async fn sessions(&self) -> i64 {
        self.gw
            .count("SELECT count(*) FROM llmlite_console_session")
            .await
    }

    async fn user(&self, user_id: &str) -> serde_json::Value {
        let row: Option<(String, Vec<String>, Option<String>)> = sqlx::query_as(
            "SELECT user_role, teams, sso_subject FROM litellm_usertable WHERE user_id = $1",
        )
        .bind(user_id)
        .persistent(false)
        .fetch_optional(&self.gw.db.pool)
        .await
        .unwrap();
        match row {
            Some((role, teams, subject)) => json!({"role": role, "teams": teams, "sub": subject}),
            None => serde_json::Value::Null,
        }
    }

    async fn actions(&self, action: &str) -> Vec<(String, String, serde_json::Value)> {
        sqlx::query_as(
            "SELECT actor, via, COALESCE(after, 'null') FROM llmlite_admin_action
             WHERE action = $1 ORDER BY id",
        )
        .bind(action)
        .persistent(false)
        .fetch_all(&self.gw.db.pool)
        .await
        .unwrap()
    }
}

/// The CSRF token of a signed-in page.
fn csrf(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).expect("a CSRF field") + marker.len();
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn people_sign_in_through_the_provider_with_the_role_and_teams_their_groups_give() {
    let Some(c) = company(&[]).await else { return };
    // The sign-in page offers the company's sign-in and keeps the break-glass form.
    let login = Walk::new().get(&format!("{}/ui/login", c.base)).await;
    assert!(login.body.contains("/ui/oidc/start"), "{}", login.body);
    assert!(login.body.contains("Break-glass"), "{}", login.body);

    // alice (llm-admins): an admin, made just in time, lands on the admin console.
    let alice = Walk::new();
    let signed = alice.sign_in(&c.base, &c.op.issuer, "alice").await;
    assert_eq!(signed.status, 200, "{signed:?}");
    assert!(signed.body.contains("url=/ui"), "{}", signed.body);
    let home = alice
        .follow(alice.get(&format!("{}/ui", c.base)).await, |_| true)
        .await;
    assert_eq!(home.status, 200);
    assert!(home.url.ends_with("/ui/keys"), "{}", home.url);
    assert!(home.body.contains("Alice Admin"), "{}", home.body);
    let user = c.user("alice@example.com").await;
    assert_eq!(user["role"], "proxy_admin");
    assert_eq!(user["sub"], "alice");
    // The code was exchanged once, with PKCE; the ID token came from the provider.
    let log = c.op.log().await;
    let exchanges = log["token"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["grant_type"] == "authorization_code")
        .count();
    assert_eq!(exchanges, 1, "{log}");

    // bob (developers): an internal user of team-dev, on his own page; admin pages are 403.
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let user = c.user("bob@example.com").await;
    assert_eq!(user["role"], "internal_user");
    assert_eq!(user["teams"], json!(["team-dev"]));
    let home = bob
        .follow(bob.get(&format!("{}/ui", c.base)).await, |_| true)
        .await;
    assert!(home.url.ends_with("/ui/me"), "{}", home.url);
    assert!(home.body.contains("My keys"), "{}", home.body);
    for path in [
        "/ui/keys",
        "/ui/users",
        "/ui/teams",
        "/ui/audit",
        "/ui/operations",
    ] {
        let page = bob.get(&format!("{}{path}", c.base)).await;
        assert_eq!(page.status, 403, "{path}: {page:?}");
    }

    // Each creation is an admin action of the person, from the console; so is each sign-in.
    let created = c.actions("user.sign_in_create").await;
    let actors: Vec<&str> = created.iter().map(|(a, _, _)| a.as_str()).collect();
    assert_eq!(actors, ["user:alice@example.com", "user:bob@example.com"]);
    assert!(created.iter().all(|(_, via, _)| via == "console"));
    assert_eq!(c.actions("console.sign_in").await.len(), 2);
    // No token reached the audit trail or the session table in a form a log would show.
    let audit: String = sqlx::query_scalar(
        "SELECT COALESCE(string_agg(before::text || after::text, ''), '') FROM llmlite_admin_action",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    assert!(!audit.contains("eyJ"), "a JWT in the audit trail: {audit}");

    // A removed group takes the role away at the next sign-in, recorded with before and after.
    c.op.accounts(json!({"alice": {"groups": ["platform"]}}))
        .await;
    let again = Walk::new();
    assert_eq!(
        again.sign_in(&c.base, &c.op.issuer, "alice").await.status,
        200
    );
    assert_eq!(c.user("alice@example.com").await["role"], "internal_user");
    let updated = c.actions("user.sign_in_update").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].2["user_role"], "internal_user");
    // Her old session is now an internal user's too: the role is read on every request.
    let keys = alice.get(&format!("{}/ui/keys", c.base)).await;
    assert_eq!(keys.status, 403, "{keys:?}");
}

#[tokio::test]
async fn every_wrong_callback_or_id_token_is_refused_and_makes_no_session() {
    let Some(c) = company(&[]).await else { return };

    // A state that is not the one this browser started with.
    let walk = Walk::new();
    let callback = walk.to_callback(&c.base, &c.op.issuer, "bob").await;
    let wrong = callback.replace("state=", "state=x");
    let refused = walk.get(&wrong).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(
        refused.body.contains("state does not match"),
        "{}",
        refused.body
    );
    assert_eq!(c.sessions().await, 0);

    // A callback from another browser (no state cookie): login CSRF.
    let walk = Walk::new();
    let callback = walk.to_callback(&c.base, &c.op.issuer, "bob").await;
    let stranger = Walk::new();
    let refused = stranger.get(&callback).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(c.sessions().await, 0);

    // A replayed callback: the first makes a session, the replay (same code, same state, same
    // cookie) makes none.
    let walk = Walk::new();
    let callback = walk.to_callback(&c.base, &c.op.issuer, "bob").await;
    let state_cookie = walk.cookie("llmlite_oidc_state").unwrap();
    assert_eq!(walk.get(&callback).await.status, 200);
    assert_eq!(c.sessions().await, 1);
    let replayer = Walk::new();
    replayer.set_cookie("llmlite_oidc_state", &state_cookie);
    let replayed = replayer.get(&callback).await;
    assert_eq!(replayed.status, 400, "{replayed:?}");
    assert!(replayed.body.contains("already used"), "{}", replayed.body);
    assert_eq!(c.sessions().await, 1);
    assert!(replayer.cookie("llmlite_session").is_none());

    // ID tokens signed by another key, for another audience, expired, with another nonce, or
    // from another issuer: each refused with the reason, no session, no user.
    for (mode, reason) in [
        ("wrong_key", "signature"),
        ("wrong_audience", "audience"),
        ("expired", "expired"),
        ("nonce", "nonce"),
        ("wrong_issuer", "issuer"),
    ] {
        c.op.tamper(mode).await;
        let walk = Walk::new();
        let step = walk.sign_in(&c.base, &c.op.issuer, "carol").await;
        assert_eq!(step.status, 401, "{mode}: {step:?}");
        assert!(
            step.body.to_lowercase().contains(reason),
            "{mode}: the page should name the {reason} check: {}",
            step.body
        );
        assert!(
            !step.body.contains("eyJ"),
            "{mode}: a token echoed: {}",
            step.body
        );
        assert_eq!(c.sessions().await, 1, "{mode}");
        assert!(c.user("carol@example.com").await.is_null(), "{mode}");
        assert!(walk.cookie("llmlite_session").is_none(), "{mode}");
    }
    // The provider's own refusal (it sends `error`) is refused too.
    let walk = Walk::new();
    walk.get(&format!("{}/ui/oidc/start", c.base)).await;
    let state = walk.cookie("llmlite_oidc_state").unwrap();
    let denied = walk
        .get(&format!(
            "{}/ui/oidc/callback?error=access_denied&state={state}",
            c.base
        ))
        .await;
    assert_eq!(denied.status, 401);
    assert!(denied.body.contains("access_denied"));
    assert_eq!(c.sessions().await, 1);
}

#[tokio::test]
async fn a_developer_serves_themselves_within_the_team_policy_and_nothing_more() {
    let Some(c) = company(&[]).await else { return };
    let alice_key =
        c.gw.mint_raw_key(json!({"user_id": "someone-else", "key_alias": "not-bobs"}))
            .await;
    let alice_hash: String = sqlx::query_scalar(
        "SELECT token FROM litellm_verificationtoken WHERE key_alias = 'not-bobs'",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let me = bob.get(&format!("{}/ui/me", c.base)).await;
    assert_eq!(me.status, 200);
    assert!(me.body.contains("up to 2 live keys"), "{}", me.body);
    let token = csrf(&me.body);

    // A key of his own, shown once with its set-up snippets; it works.
    let made = bob
        .post_form(
            &format!("{}/ui/me/keys", c.base),
            &[
                ("csrf", &token),
                ("key_alias", "laptop"),
                ("team_id", "team-dev"),
            ],
        )
        .await;
    assert_eq!(made.status, 200, "{made:?}");
    let secret = made
        .body
        .split("id=\"secret\" class=\"secret\" readonly value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the new key on the page")
        .to_owned();
    assert!(secret.starts_with("sk-"));
    for snippet in [
        format!("export ANTHROPIC_BASE_URL={}", c.base),
        format!("export ANTHROPIC_AUTH_TOKEN={secret}"),
        "&quot;apiKeyHelper&quot;".to_owned(),
        format!("base_url=&quot;{}/v1&quot;", c.base),
        "wire_api = &quot;responses&quot;".to_owned(),
        format!("curl {}/v1/chat/completions", c.base),
    ] {
        assert!(
            made.body.contains(&snippet),
            "{snippet} missing: {}",
            made.body
        );
    }
    let chat =
        c.gw.post(
            "/v1/chat/completions",
            &secret,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(chat.status, 200, "{chat:?}");
    // The key is his, of his team, with the standard tier's limits.
    let row: (Option<String>, Option<String>, Option<String>, Option<i64>) = sqlx::query_as(
        "SELECT user_id, team_id, tier, rpm_limit FROM litellm_verificationtoken
         WHERE key_alias = 'laptop'",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            Some("bob@example.com".into()),
            Some("team-dev".into()),
            Some("standard".into()),
            Some(100)
        )
    );
    let generated = c.actions("key.generate").await;
    let mine: Vec<_> = generated
        .iter()
        .filter(|(actor, _, _)| actor == "user:bob@example.com")
        .collect();
    assert_eq!(mine.len(), 1, "{generated:?}");
    assert_eq!(mine[0].1, "console");

    let keys_before =
        c.gw.count("SELECT count(*) FROM litellm_verificationtoken")
            .await;
    // Above his team's tier, with a limit of his own choosing, for a team not his, or through
    // the admin form: refused, nothing made.
    for (form, expected) in [
        (vec![("tier", "admin"), ("team_id", "team-dev")], 403),
        (vec![("max_budget", "1000"), ("team_id", "team-dev")], 403),
        (vec![("rpm_limit", "100000")], 403),
        (vec![("team_id", "team-data")], 403),
    ] {
        let mut pairs = vec![("csrf", token.as_str())];
        pairs.extend(form.iter().copied());
        let refused = bob
            .post_form(&format!("{}/ui/me/keys", c.base), &pairs)
            .await;
        assert_eq!(refused.status, expected, "{form:?}: {refused:?}");
    }
    let admin_form = bob
        .post_form(
            &format!("{}/ui/keys/new", c.base),
            &[
                ("csrf", &token),
                ("user_id", "bob@example.com"),
                ("tier", "admin"),
            ],
        )
        .await;
    assert_eq!(admin_form.status, 403);
    // Nor may he raise the limits of another key, or block one.
    let action = bob
        .post_form(
            &format!("{}/ui/keys/action", c.base),
            &[("csrf", &token), ("key", &alice_hash), ("action", "block")],
        )
        .await;
    assert_eq!(action.status, 403);
    assert_eq!(
        c.gw.count("SELECT count(*) FROM litellm_verificationtoken")
            .await,
        keys_before
    );
    assert_eq!(
        c.gw.count("SELECT count(*) FROM litellm_verificationtoken WHERE blocked")
            .await,
        0
    );

    // Another's key page is 403 (whether or not it exists); his own opens.
    let other = bob.get(&format!("{}/ui/keys/{alice_hash}", c.base)).await;
    assert_eq!(other.status, 403);
    assert!(!other.body.contains("not-bobs"));
    let missing = bob
        .get(&format!("{}/ui/keys/{}", c.base, "0".repeat(64)))
        .await;
    assert_eq!(missing.status, 403);
    let own_hash: String = sqlx::query_scalar(
        "SELECT token FROM litellm_verificationtoken WHERE key_alias = 'laptop'",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        bob.get(&format!("{}/ui/keys/{own_hash}", c.base))
            .await
            .status,
        200
    );
    // Nor may he regenerate or delete another's key.
    for path in ["/ui/me/keys/regenerate", "/ui/me/keys/delete"] {
        let refused = bob
            .post_form(
                &format!("{}{path}", c.base),
                &[("csrf", &token), ("key", &alice_hash)],
            )
            .await;
        assert_eq!(refused.status, 403, "{path}");
    }
    let alive =
        c.gw.post(
            "/v1/chat/completions",
            &alice_key,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(alive.status, 200, "the other key still works");

    // His spend is his keys' only.
    c.gw.settled().await;
    let spend: serde_json::Value = serde_json::from_str(
        &bob.get(&format!("{}/ui/spend.json?group=key", c.base))
            .await
            .body,
    )
    .unwrap();
    let names: Vec<&str> = spend["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop"], "{spend}");

    // The team allows two live keys: the second is made, the third refused.
    let second = bob
        .post_form(
            &format!("{}/ui/me/keys", c.base),
            &[
                ("csrf", &token),
                ("key_alias", "ci"),
                ("team_id", "team-dev"),
            ],
        )
        .await;
    assert_eq!(second.status, 200);
    let third = bob
        .post_form(
            &format!("{}/ui/me/keys", c.base),
            &[
                ("csrf", &token),
                ("key_alias", "third"),
                ("team_id", "team-dev"),
            ],
        )
        .await;
    assert_eq!(third.status, 403, "{third:?}");
    assert!(third.body.contains("2 live keys"), "{}", third.body);
    // Deleting one frees a place; regenerating his own works and the old secret stops.
    let deleted = bob
        .post_form(
            &format!("{}/ui/me/keys/delete", c.base),
            &[("csrf", &token), ("key", &own_hash)],
        )
        .await;
    assert_eq!(deleted.status, 303);
    let stopped =
        c.gw.post(
            "/v1/chat/completions",
            &secret,
            json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(stopped.status, 401);
    assert_eq!(c.actions("key.delete").await[0].0, "user:bob@example.com");
}

#[tokio::test]
async fn sign_out_ends_the_session_here_and_at_the_provider() {
    let Some(c) = company(&[]).await else { return };
    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    let session = bob.cookie("llmlite_session").unwrap();
    let me = bob.get(&format!("{}/ui/me", c.base)).await;
    let out = bob
        .post_form(
            &format!("{}/ui/logout", c.base),
            &[("csrf", &csrf(&me.body))],
        )
        .await;
    // A page that moves the browser on to the provider's end-session endpoint.
    assert_eq!(out.status, 200, "{out:?}");
    assert!(
        bob.cookie("llmlite_session").is_none(),
        "the cookie is cleared"
    );
    let to = out
        .body
        .split("content=\"0;url=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    assert!(to.starts_with(&c.op.issuer), "{to}");
    assert!(to.contains("id_token_hint="), "{to}");
    let back = bob.get(&to).await;
    let back = bob.follow(back, |url| url.starts_with(&c.op.issuer)).await;
    assert_eq!(
        back.location.as_deref(),
        Some(format!("{}/ui/login", c.base).as_str()),
        "{back:?}"
    );
    let log = c.op.log().await;
    assert_eq!(log["end_session"].as_array().unwrap().len(), 1, "{log}");
    // The old cookie, replayed, is refused: the session ended in the database, not only in the
    // browser.
    let replay = Walk::new();
    replay.set_cookie("llmlite_session", &session);
    let refused = replay.get(&format!("{}/ui/me", c.base)).await;
    assert_eq!(refused.status, 303);
    assert_eq!(
        refused.location.as_deref(),
        Some(format!("{}/ui/login?ended=1", c.base).as_str())
    );
    let stored: Option<String> = sqlx::query_scalar(
        "SELECT id_token FROM llmlite_console_session WHERE ended_at IS NOT NULL",
    )
    .persistent(false)
    .fetch_one(&c.gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        stored, None,
        "the ID token is dropped when the session ends"
    );
    assert_eq!(c.actions("console.sign_out").await.len(), 1);
}

#[tokio::test]
async fn a_disabled_user_is_out_at_once_and_a_session_ends_after_its_idle_time() {
    let Some(c) = company(&[("LLMLITE_CONSOLE_IDLE_MINUTES", "30")]).await else {
        return;
    };
    // A user disabled in llmlite loses the session at once, and cannot sign in again.
    let carol = Walk::new();
    assert_eq!(
        carol.sign_in(&c.base, &c.op.issuer, "carol").await.status,
        200
    );
    assert_eq!(carol.get(&format!("{}/ui/me", c.base)).await.status, 200);
    sqlx::query("UPDATE litellm_usertable SET disabled_at = now() WHERE user_id = $1")
        .bind("carol@example.com")
        .persistent(false)
        .execute(&c.gw.db.pool)
        .await
        .unwrap();
    assert_eq!(carol.get(&format!("{}/ui/me", c.base)).await.status, 303);
    let again = Walk::new().sign_in(&c.base, &c.op.issuer, "carol").await;
    assert_eq!(again.status, 403, "{again:?}");

    let bob = Walk::new();
    assert_eq!(bob.sign_in(&c.base, &c.op.issuer, "bob").await.status, 200);
    // Activity keeps it: 20 minutes, a page, 20 more, a page.
    for _ in 0..2 {
        c.gw.state.clock.advance(Duration::from_secs(20 * 60));
        assert_eq!(bob.get(&format!("{}/ui/me", c.base)).await.status, 200);
    }
    // 31 minutes without a request end it.
    c.gw.state.clock.advance(Duration::from_secs(31 * 60));
    let idle = bob.get(&format!("{}/ui/me", c.base)).await;
    assert_eq!(idle.status, 303);
    assert!(idle.location.unwrap().ends_with("/ui/login?ended=1"));
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_address_and_per_account() {
    let Some(c) = company(&[]).await else { return };
    let url = format!("{}/ui/login", c.base);
    let url = url.as_str();
    async fn post(walk: &Walk, url: &str, key: &str) -> llmlite_tests::oidc::Step {
        walk.post_form(url, &[("key", key)]).await
    }
    // Per account: a key that is not an admin's, tried five times, then refused even before it
    // is checked, from any address.
    let plain = c.gw.mint_raw_key(json!({"key_alias": "plain"})).await;
    let walk = Walk::new();
    for _ in 0..5 {
        assert_eq!(post(&walk, url, &plain).await.status, 403);
    }
    let mut elsewhere = Walk::new();
    elsewhere.address = "192.0.2.77".into();
    let throttled = post(&elsewhere, url, &plain).await;
    assert_eq!(throttled.status, 429, "{throttled:?}");
    assert!(throttled.body.contains("Too many failed sign-ins"));

    // Per address: twenty failures from one address, and then even the master key is refused
    // from there, not from another address.
    let mut guesser = Walk::new();
    guesser.address = "203.0.113.9".into();
    for n in 0..20 {
        let guess = format!("sk-guess-{n}");
        assert_eq!(post(&guesser, url, &guess).await.status, 401);
    }
    assert_eq!(post(&guesser, url, MASTER_KEY).await.status, 429);
    assert_eq!(c.sessions().await, 0);
    let mut honest = Walk::new();
    honest.address = "198.51.100.200".into();
    assert_eq!(post(&honest, url, MASTER_KEY).await.status, 303);
    // The company sign-in from that address is refused too.
    let start = guesser.get(&format!("{}/ui/oidc/start", c.base)).await;
    assert_eq!(start.status, 429);

    // A window later, the address may try again.
    c.gw.state.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(post(&guesser, url, MASTER_KEY).await.status, 303);
    // The master key's sign-ins are in the audit trail.
    let signed = c.actions("console.sign_in").await;
    assert_eq!(signed.len(), 2);
    assert!(signed.iter().all(|(actor, _, _)| actor == "master_key"));
}

#[tokio::test]
async fn the_key_form_can_be_turned_off() {
    let Some(c) = company(&[("LLMLITE_CONSOLE_KEY_SIGN_IN", "off")]).await else {
        return;
    };
    let walk = Walk::new();
    let page = walk.get(&format!("{}/ui/login", c.base)).await;
    assert!(!page.body.contains("name=\"key\""), "{}", page.body);
    let refused = walk
        .post_form(&format!("{}/ui/login", c.base), &[("key", MASTER_KEY)])
        .await;
    assert_eq!(refused.status, 403);
    assert!(walk.cookie("llmlite_session").is_none());
    assert_eq!(c.sessions().await, 0);
}
