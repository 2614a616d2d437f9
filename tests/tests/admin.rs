//! The admin API over real HTTP with real PostgreSQL: LiteLLM's `/key/*`, `/user/*`, `/team/*`
//! and spend routes, who may call them, and what they store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::time::Duration;

use llmlite::keys::KeyHash;
use llmlite_tests::{MASTER_KEY, TestGateway};
use reqwest::Method;
use serde_json::{Value, json};

struct Admin {
    gw: TestGateway,
}

impl Admin {
    async fn start() -> Self {
        Admin {
            gw: TestGateway::start().await,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let reply = self.gw.request(method, path, key, body.as_ref()).await;
        assert!(reply.headers.contains_key("x-request-id"));
        let (status, body) = reply.status_and_json();
        if status >= 400 && path.starts_with("/v1/messages") {
            // Anthropic's Messages API answers in Anthropic's shape.
            assert_eq!(body["type"], "error", "{path}: {body}");
        } else if status >= 400 && path.starts_with("/oauth/") {
            // The device sign-in answers in OAuth's shape (RFC 6749 section 5.2).
            assert!(body["error"].is_string(), "{path}: {body}");
        } else if status >= 400 && path.starts_with("/scim/") {
            // SCIM answers in SCIM's (RFC 7644 section 3.12).
            assert_eq!(body["status"], status.to_string(), "{path}: {body}");
        } else if status >= 400 {
            assert_eq!(body["error"]["code"], status.to_string(), "{path}: {body}");
        }
        (status, body)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(MASTER_KEY), Some(body))
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, Some(MASTER_KEY), None).await
    }

    async fn generate(&self, body: Value) -> (String, Value) {
        let (status, body) = self.post("/key/generate", body).await;
        assert_eq!(status, 200, "{body}");
        (body["key"].as_str().unwrap().to_owned(), body)
    }

    /// What a key's own request to `/key/info` gets.
    async fn own_info(&self, key: &str) -> (u16, Value) {
        self.call(Method::GET, "/key/info", Some(key), None).await
    }
}

#[tokio::test]
async fn generate_shows_the_key_once_and_stores_only_its_hash() {
    let admin = Admin::start().await;
    let (raw, body) = admin
        .generate(
            json!({"key_alias": "ci-bot", "models": ["claude-sonnet-4-5"], "max_budget": 10.5,
                         "duration": "30d", "metadata": {"owner": "platform"}}),
        )
        .await;
    assert!(
        raw.starts_with("sk-") && raw.len() >= 3 + 22,
        "at least 128 bits: {raw}"
    );
    assert_eq!(body["key_name"], format!("sk-...{}", &raw[raw.len() - 4..]));
    assert_eq!(body["token"].as_str().unwrap().len(), 64);
    assert_eq!(body["max_budget"], 10.5);
    assert_eq!(body["models"], json!(["claude-sonnet-4-5"]));
    assert!(body["expires"].is_string());

    // Nothing in the database holds the raw key: not the key table, not the audit record.
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'ARRAY', 'character varying')",
    )
    .persistent(false)
    .fetch_all(&admin.gw.db.pool)
    .await
    .unwrap();
    assert!(columns.len() > 20);
    for (table, column) in columns {
        let sql =
            format!("SELECT count(*) FROM {table} WHERE {column}::text LIKE '%' || $1 || '%'");
        let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&raw[3..])
            .persistent(false)
            .fetch_one(&admin.gw.db.pool)
            .await
            .unwrap();
        assert_eq!(found, 0, "the raw key is in {table}.{column}");
    }

    // The action is recorded: who, what, and the fields after.
    let (actor, action, after): (String, String, Value) = sqlx::query_as(
        "SELECT actor, action, after FROM llmlite_admin_action WHERE object_id = $1",
    )
    .bind(body["token"].as_str().unwrap())
    .persistent(false)
    .fetch_one(&admin.gw.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("master_key", "key.generate")
    );
    // Free text (the alias) is kept out of the admin record; IDs stay.
    assert_eq!(after["key_alias"], "[redacted]");

    // Info by the raw key in a body, or by the hash in the URL; the raw key is not echoed back.
    // A raw key in the URL is refused: access logs keep URLs.
    let (status, refused) = admin.get(&format!("/key/info?key={raw}")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(!refused.to_string().contains(&raw[3..]));
    let (status, info) = admin.post("/key/info", json!({"key": raw})).await;
    assert_eq!(status, 200);
    assert_eq!(info["key"], body["token"]);
    assert_eq!(info["info"]["key_alias"], "ci-bot");
    assert!(!info.to_string().contains(&raw[3..]));
    let (status, _) = admin
        .get(&format!(
            "/key/info?key={}",
            body["token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tiers_set_the_llds_limits_and_explicit_fields_win() {
    let admin = Admin::start().await;
    let (_, standard) = admin.generate(json!({"tier": "standard"})).await;
    assert_eq!(
        (
            standard["tpm_limit"].clone(),
            standard["rpm_limit"].clone(),
            standard["max_budget"].clone(),
            standard["budget_duration"].clone()
        ),
        (json!(10000), json!(100), json!(50.0), json!("30d"))
    );
    let (_, custom) = admin
        .generate(json!({"tier": "admin", "rpm_limit": 5}))
        .await;
    assert_eq!(custom["tpm_limit"], 100000);
    assert_eq!(custom["rpm_limit"], 5);
    assert_eq!(custom["max_budget"], 500.0);
    let (_, chosen) = admin
        .generate(json!({"key": "sk-chosen-by-the-caller-0001"}))
        .await;
    assert_eq!(chosen["key"], "sk-chosen-by-the-caller-0001");
    let (status, _) = admin
        .post(
            "/key/generate",
            json!({"key": "sk-chosen-by-the-caller-0001"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = admin
        .post("/key/generate", json!({"key": "pk-not-a-key-000000000000"}))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn update_changes_fields_and_duration_restarts_expiry() {
    let admin = Admin::start().await;
    let (raw, _) = admin
        .generate(json!({"duration": "1h", "key_alias": "short"}))
        .await;
    admin.gw.state.clock.advance(Duration::from_secs(1800));
    let (status, updated) = admin
        .post("/key/update", json!({"key": raw, "duration": "2h", "max_budget": "25.10", "key_alias": null, "tpm_limit": 7}))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["max_budget"], 25.1);
    assert_eq!(updated["key_alias"], Value::Null);
    assert_eq!(updated["tpm_limit"], 7);
    // 30 minutes in, the key had 30 left; the new duration counts from now.
    admin.gw.state.clock.advance(Duration::from_secs(3600));
    assert_eq!(admin.own_info(&raw).await.0, 200);
    admin.gw.state.clock.advance(Duration::from_secs(3600 + 60));
    let (status, body) = admin.own_info(&raw).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "expired_key");
    let (status, _) = admin
        .post(
            "/key/update",
            json!({"key": "sk-never-generated-key-0000", "tpm_limit": 1}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn delete_refuses_the_key_on_its_next_request() {
    let admin = Admin::start().await;
    let (raw, body) = admin.generate(json!({"key_alias": "doomed"})).await;
    let (other, _) = admin.generate(json!({"key_alias": "kept"})).await;
    assert_eq!(admin.own_info(&raw).await.0, 200);
    let (status, deleted) = admin.post("/key/delete", json!({"keys": [raw]})).await;
    assert_eq!(status, 200);
    assert_eq!(deleted["deleted_keys"], json!([body["token"]]));
    let (status, refused) = admin.own_info(&raw).await;
    assert_eq!(status, 401);
    assert_eq!(refused["error"]["type"], "inactive_key");
    assert_eq!(admin.own_info(&other).await.0, 200);
    // The row stays, for the record; the alias is free again.
    let kept: bool =
        sqlx::query_scalar("SELECT is_active FROM litellm_verificationtoken WHERE token = $1")
            .bind(body["token"].as_str().unwrap())
            .persistent(false)
            .fetch_one(&admin.gw.db.pool)
            .await
            .unwrap();
    assert!(!kept);
    admin.generate(json!({"key_alias": "doomed"})).await;
    let (status, _) = admin
        .post("/key/delete", json!({"key_aliases": ["kept"]}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(admin.own_info(&other).await.0, 401);
    let (status, _) = admin
        .post("/key/delete", json!({"key_aliases": ["never-existed"]}))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn block_and_unblock() {
    let admin = Admin::start().await;
    let (raw, _) = admin.generate(json!({})).await;
    let (status, blocked) = admin.post("/key/block", json!({"key": raw})).await;
    assert_eq!((status, blocked["blocked"].clone()), (200, json!(true)));
    let (status, body) = admin.own_info(&raw).await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (401, json!("blocked_key"))
    );
    let (status, _) = admin.post("/key/unblock", json!({"key": raw})).await;
    assert_eq!(status, 200);
    assert_eq!(admin.own_info(&raw).await.0, 200);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_its_grace_period_only() {
    let admin = Admin::start().await;
    let (old, before) = admin
        .generate(json!({"key_alias": "rotating", "max_budget": 5}))
        .await;
    let (status, rotated) = admin
        .post(
            "/key/regenerate",
            json!({"key": old, "grace_period": "24h"}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["key_alias"], "rotating");
    assert_eq!(rotated["max_budget"], 5.0);
    assert_ne!(rotated["token"], before["token"]);

    admin.gw.state.clock.advance(Duration::from_secs(23 * 3600));
    let (status, info) = admin.own_info(&old).await;
    assert_eq!(status, 200, "inside the grace period: {info}");
    assert_eq!(info["key"], rotated["token"]);
    assert_eq!(admin.own_info(&new).await.0, 200);

    admin.gw.state.clock.advance(Duration::from_secs(2 * 3600));
    let (status, body) = admin.own_info(&old).await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (401, json!("inactive_key"))
    );
    assert_eq!(admin.own_info(&new).await.0, 200);

    // Without a grace period the old key stops at once; the path form works too.
    let (status, again) = admin
        .call(
            Method::POST,
            &format!("/key/{}/regenerate", KeyHash::of(&new).as_str()),
            Some(MASTER_KEY),
            None,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(admin.own_info(&new).await.0, 401);
    assert_eq!(admin.own_info(again["key"].as_str().unwrap()).await.0, 200);
}

#[tokio::test]
async fn deleting_a_team_blocks_its_keys_and_deleting_a_user_deactivates_theirs() {
    let admin = Admin::start().await;
    let (status, team) = admin
        .post(
            "/team/new",
            json!({"team_id": "core-infra", "max_budget": 100, "models": ["claude-haiku-4-5"]}),
        )
        .await;
    assert_eq!(status, 200, "{team}");
    let (team_key, _) = admin.generate(json!({"team_id": "core-infra"})).await;
    let (status, info) = admin.get("/team/info?team_id=core-infra").await;
    assert_eq!(status, 200);
    assert_eq!(info["keys"].as_array().unwrap().len(), 1);
    let (status, _) = admin
        .post("/team/delete", json!({"team_ids": ["core-infra"]}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = admin.own_info(&team_key).await;
    assert_eq!(
        (status, body["error"]["type"].clone()),
        (401, json!("blocked_key"))
    );
    assert_eq!(admin.get("/team/info?team_id=core-infra").await.0, 404);

    let (status, user) = admin
        .post(
            "/user/new",
            json!({"user_id": "bob", "user_email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{user}");
    let user_key = user["key"].as_str().unwrap().to_owned();
    let (second, _) = admin.generate(json!({"user_id": "bob"})).await;
    let (status, info) = admin.get("/user/info?user_id=bob").await;
    assert_eq!(status, 200);
    assert_eq!(info["keys"].as_array().unwrap().len(), 2);
    let (status, _) = admin
        .post("/user/delete", json!({"user_ids": ["bob"]}))
        .await;
    assert_eq!(status, 200);
    for key in [user_key, second] {
        let (status, body) = admin.own_info(&key).await;
        assert_eq!(
            (status, body["error"]["type"].clone()),
            (401, json!("inactive_key"))
        );
    }
    assert_eq!(admin.get("/user/info?user_id=bob").await.0, 404);
}

#[tokio::test]
async fn users_and_teams_update_and_list() {
    let admin = Admin::start().await;
    let (status, _) = admin.post("/user/new", json!({"user_id": "carol", "auto_create_key": false, "max_budget": 20, "budget_duration": "1mo"})).await;
    assert_eq!(status, 200);
    let (status, updated) = admin
        .post(
            "/user/update",
            json!({"user_id": "carol", "user_role": "proxy_admin", "tpm_limit": 1000}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["user_role"], "proxy_admin");
    assert_eq!(updated["budget_duration"], "1mo");
    let (status, _) = admin.post("/user/new", json!({"user_id": "carol"})).await;
    assert_eq!(status, 409);
    let (status, _) = admin
        .post(
            "/user/update",
            json!({"user_id": "carol", "user_role": "emperor"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, list) = admin.get("/user/list?page_size=10").await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 1);
    let (status, team) = admin.post("/team/new", json!({"team_alias": "blue"})).await;
    assert_eq!(status, 200);
    let team_id = team["team_id"].as_str().unwrap();
    let (status, team) = admin
        .post(
            "/team/update",
            json!({"team_id": team_id, "rpm_limit": 50, "budget_duration": "30d"}),
        )
        .await;
    assert_eq!(
        (
            status,
            team["rpm_limit"].clone(),
            team["budget_duration"].clone()
        ),
        (200, json!(50), json!("30d"))
    );
    assert_eq!(
        admin
            .post("/team/update", json!({"team_id": "no-such-team"}))
            .await
            .0,
        404
    );
    assert_eq!(
        admin
            .post("/key/generate", json!({"team_id": "no-such-team"}))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn key_lists_paginate() {
    let admin = Admin::start().await;
    for n in 0..25 {
        admin.generate(json!({"key_alias": format!("k{n:02}"), "user_id": if n % 2 == 0 { "even" } else { "odd" }})).await;
    }
    let (status, page3) = admin.get("/key/list?page=3&size=10").await;
    assert_eq!(status, 200);
    assert_eq!(page3["keys"].as_array().unwrap().len(), 5);
    assert_eq!(
        (
            page3["total_count"].clone(),
            page3["current_page"].clone(),
            page3["total_pages"].clone()
        ),
        (json!(25), json!(3), json!(3))
    );
    assert!(
        page3["keys"][0].is_string(),
        "hashes unless return_full_object"
    );
    let (_, evens) = admin
        .get("/key/list?user_id=even&size=100&return_full_object=true")
        .await;
    assert_eq!(evens["total_count"], 13);
    assert!(
        evens["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["user_id"] == "even")
    );
    let (_, one) = admin
        .get("/key/list?key_alias=k07&return_full_object=true")
        .await;
    assert_eq!(one["keys"][0]["key_alias"], "k07");
    assert_eq!(admin.get("/key/list?page=0").await.0, 400);
    assert_eq!(admin.get("/key/list?size=101").await.0, 400);
    assert_eq!(admin.get("/key/list?size=ten").await.0, 400);
}

#[tokio::test]
async fn bad_input_is_a_clear_400_and_hostile_text_is_just_data() {
    let admin = Admin::start().await;
    let bad = [
        json!({"duration": "30 days"}),
        json!({"duration": "0d"}),
        json!({"budget_duration": "1y"}),
        json!({"max_budget": -1}),
        json!({"max_budget": "lots"}),
        json!({"tpm_limit": -5}),
        json!({"rpm_limit": "ten"}),
        json!({"max_parallel_requests": 1_000_000}),
        json!({"models": "claude"}),
        json!({"key_alias": "x".repeat(257)}),
        json!({"metadata": {"blob": "x".repeat(20_000)}}),
        json!({"metadata": ["not", "an", "object"]}),
        json!({"tier": "platinum"}),
        json!({"aliases": {"gpt-4": "claude"}}),
    ];
    for body in bad {
        let (status, error) = admin.post("/key/generate", body.clone()).await;
        assert_eq!(status, 400, "{body} -> {error}");
        assert!(error["error"]["message"].as_str().unwrap().len() > 5);
    }
    let hostile = "Robert'); DROP TABLE litellm_verificationtoken;-- 🦀 ünïcödé";
    let (_, body) = admin
        .generate(json!({"key_alias": hostile, "metadata": {"note": hostile}}))
        .await;
    assert_eq!(body["key_alias"], hostile);
    let (status, listed) = admin
        .get(&format!(
            "/key/list?return_full_object=true&key_alias={}",
            urlencode(hostile)
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"][0]["metadata"]["note"], hostile);
    let (status, _) = admin
        .post("/key/generate", json!({"key_alias": hostile}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(admin.get("/user/info?user_id=nobody").await.0, 404);
    assert_eq!(admin.get("/key/info?key=not-a-key").await.0, 400);
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn who_may_call_what() {
    let admin = Admin::start().await;
    let (_, root) = admin
        .post(
            "/user/new",
            json!({"user_id": "root", "user_role": "proxy_admin"}),
        )
        .await;
    let admin_key = root["key"].as_str().unwrap().to_owned();
    let (own, own_body) = admin.generate(json!({"user_id": "dev"})).await;
    let (other, _) = admin.generate(json!({"user_id": "someone-else"})).await;
    admin.post("/team/new", json!({"team_id": "matrix"})).await;
    let own_hash = own_body["token"].as_str().unwrap().to_owned();

    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/key/generate".into(), Some(json!({}))),
        (
            Method::POST,
            "/key/update".into(),
            Some(json!({"key": other, "tpm_limit": 5})),
        ),
        (
            Method::GET,
            format!("/key/info?key={}", KeyHash::of(&other).as_str()),
            None,
        ),
        (Method::GET, "/key/list".into(), None),
        (
            Method::POST,
            "/key/block".into(),
            Some(json!({"key": other})),
        ),
        (
            Method::POST,
            "/key/unblock".into(),
            Some(json!({"key": other})),
        ),
        (
            Method::POST,
            "/user/new".into(),
            Some(json!({"auto_create_key": false})),
        ),
        (Method::GET, "/user/info?user_id=dev".into(), None),
        (
            Method::POST,
            "/user/update".into(),
            Some(json!({"user_id": "someone-else", "tpm_limit": 9})),
        ),
        (Method::GET, "/user/list".into(), None),
        (Method::POST, "/team/new".into(), Some(json!({}))),
        (Method::GET, "/team/info?team_id=matrix".into(), None),
        (
            Method::POST,
            "/team/update".into(),
            Some(json!({"team_id": "matrix", "rpm_limit": 3})),
        ),
        (Method::GET, "/spend/logs".into(), None),
        (
            Method::GET,
            "/global/spend/report?start_date=2026-11-01&end_date=2026-11-30".into(),
            None,
        ),
        (Method::GET, "/team/list".into(), None),
    ];
    for (method, path, body) in &routes {
        for (caller, expected) in [
            (Some(MASTER_KEY), 200),
            (Some(admin_key.as_str()), 200),
            (Some(own.as_str()), 403),
            (None, 401),
            (Some("sk-unknown-key-00000000000"), 401),
        ] {
            let (status, response) = admin.call(method.clone(), path, caller, body.clone()).await;
            assert_eq!(
                status, expected,
                "{method} {path} as {caller:?}: {response}"
            );
        }
    }
    // A plain key reads its own info, with or without naming itself, and nothing else.
    assert_eq!(admin.own_info(&own).await.0, 200);
    assert_eq!(
        admin
            .call(
                Method::GET,
                &format!("/key/info?key={own_hash}"),
                Some(&own),
                None
            )
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .call(
                Method::GET,
                &format!("/key/info?key={}", KeyHash::of(&other).as_str()),
                Some(&own),
                None
            )
            .await
            .0,
        403
    );
    // Destructive routes last, each once per caller kind.
    let (victim, _) = admin.generate(json!({})).await;
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/key/delete",
                Some(&own),
                Some(json!({"keys": [victim]}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/key/regenerate",
                Some(&own),
                Some(json!({"key": victim}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/user/delete",
                Some(&own),
                Some(json!({"user_ids": ["dev"]}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/team/delete",
                Some(&own),
                Some(json!({"team_ids": ["matrix"]}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/key/regenerate",
                Some(&admin_key),
                Some(json!({"key": victim}))
            )
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/team/delete",
                Some(&admin_key),
                Some(json!({"team_ids": ["matrix"]}))
            )
            .await
            .0,
        200
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/user/delete",
                None,
                Some(json!({"user_ids": ["dev"]}))
            )
            .await
            .0,
        401
    );
    assert_eq!(
        admin
            .call(
                Method::POST,
                "/user/delete",
                Some(&admin_key),
                Some(json!({"user_ids": ["dev"]}))
            )
            .await
            .0,
        200
    );
    // The admin key's actions are recorded under its hash, not as the master key.
    let actors: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT actor FROM llmlite_admin_action ORDER BY 1")
            .persistent(false)
            .fetch_all(&admin.gw.db.pool)
            .await
            .unwrap();
    assert_eq!(actors.len(), 2, "{actors:?}");
    assert!(actors.contains(&"master_key".to_owned()));
    assert!(actors.iter().all(|a| !a.contains("sk-")));
}

#[tokio::test]
async fn spend_logs_and_report_read_the_spend_table() {
    let admin = Admin::start().await;
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status)
         VALUES
           ('r1', 'acompletion', repeat('a', 64), 'alice', 't1', 'claude-haiku-4-5', 10, 5, 15, 0.001, '2026-11-01T10:00:00Z', '2026-11-01T10:00:01Z', 'success'),
           ('r2', 'acompletion', repeat('a', 64), 'alice', 't1', 'claude-sonnet-4-5', 20, 5, 25, 0.002, '2026-11-01T11:00:00Z', '2026-11-01T11:00:01Z', 'success'),
           ('r3', 'acompletion', repeat('b', 64), 'bob', 't2', 'claude-haiku-4-5', 0, 0, 0, 0, '2026-11-02T09:00:00Z', '2026-11-02T09:00:01Z', 'failure')",
    )
    .persistent(false)
    .execute(&admin.gw.db.pool)
    .await
    .unwrap();
    let (status, logs) = admin.get("/spend/logs?user_id=alice").await;
    assert_eq!(status, 200);
    assert_eq!(logs.as_array().unwrap().len(), 2);
    assert_eq!(logs[0]["request_id"], "r2");
    assert_eq!(logs[0]["spend"], 0.002);
    let (_, by_key) = admin
        .get(&format!("/spend/logs?api_key={}", "b".repeat(64)))
        .await;
    assert_eq!(by_key[0]["request_id"], "r3");
    let (_, one) = admin.get("/spend/logs?request_id=r1").await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    let (_, window) = admin
        .get("/spend/logs?start_date=2026-11-02&end_date=2026-11-02")
        .await;
    assert_eq!(window.as_array().unwrap().len(), 1);
    let (_, paged) = admin.get("/spend/logs?page=2&page_size=2").await;
    assert_eq!(paged.as_array().unwrap().len(), 1);

    let (status, report) = admin
        .get("/global/spend/report?start_date=2026-11-01&end_date=2026-11-30&group_by=team")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        report[0],
        json!({"date": "2026-11-01", "team_id": "t1", "spend": 0.003, "prompt_tokens": 30,
        "completion_tokens": 10, "total_tokens": 40, "api_requests": 2, "successful_requests": 2, "failed_requests": 0})
    );
    assert_eq!(report[1]["failed_requests"], 1);
    let (_, models) = admin
        .get("/global/spend/report?start_date=2026-11-01&end_date=2026-11-02&group_by=model")
        .await;
    assert_eq!(models.as_array().unwrap().len(), 3);
    assert_eq!(
        admin
            .get("/global/spend/report?start_date=2026-11-01&end_date=2026-11-02&group_by=planet")
            .await
            .0,
        400
    );
    assert_eq!(admin.get("/spend/logs?start_date=yesterday").await.0, 400);
    assert_eq!(
        admin
            .get("/spend/logs?start_date=2026-11-05&end_date=2026-11-01")
            .await
            .0,
        400
    );
}

/// The curl examples from LiteLLM's virtual-keys docs, run as written but for the address and
/// the master key (LiteLLM's `sk-1234` is too weak for llmlite).
#[tokio::test]
async fn litellm_doc_curls_work_unchanged() {
    let admin = Admin::start().await;
    admin
        .post("/team/new", json!({"team_id": "core-infra"}))
        .await;
    let base = format!("http://{}", admin.gw.addr);
    let run = |script: String| async move {
        let output = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .await
            .unwrap();
        assert!(
            output.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let body: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{script}: {}", String::from_utf8_lossy(&output.stdout)));
        assert!(body.get("error").is_none(), "{script}: {body}");
        body
    };
    let generated = run(format!(
        r#"curl -s '{base}/key/generate' \
--header 'Authorization: Bearer {MASTER_KEY}' \
--header 'Content-Type: application/json' \
--data-raw '{{"models": ["gpt-3.5-turbo", "gpt-4"], "metadata": {{"user": "ishaan@berri.ai"}}}}'"#
    ))
    .await;
    let key = generated["key"].as_str().unwrap();
    // LiteLLM's docs put the raw key in the URL (`/key/info?key=sk-...`); llmlite refuses a raw
    // key in any URL (access logs keep URLs) and takes its hash there, as LiteLLM also does.
    let token = generated["token"].as_str().unwrap();
    let info = run(format!(
        r#"curl -s -X GET "{base}/key/info?key={token}" -H "Authorization: Bearer {MASTER_KEY}""#
    ))
    .await;
    assert_eq!(info["info"]["metadata"]["user"], "ishaan@berri.ai");
    let updated = run(format!(
        r#"curl -s '{base}/key/update' \
--header 'Authorization: Bearer {MASTER_KEY}' \
--header 'Content-Type: application/json' \
--data-raw '{{"key": "{key}", "models": ["gpt-3.5-turbo", "gpt-4"], "metadata": {{"user": "ishaan@berri.ai"}}, "team_id": "core-infra"}}'"#
    ))
    .await;
    assert_eq!(updated["team_id"], "core-infra");
    let deleted = run(format!(
        r#"curl -s '{base}/key/delete' \
--header 'Authorization: Bearer {MASTER_KEY}' \
--header 'Content-Type: application/json' \
--data-raw '{{"keys": ["{key}"]}}'"#
    ))
    .await;
    assert_eq!(deleted["deleted_keys"].as_array().unwrap().len(), 1);
}

/// The OpenAPI document is served, and every operation it lists is routed.
#[tokio::test]
async fn the_openapi_document_is_served_and_matches_the_routes() {
    let admin = Admin::start().await;
    let response = admin
        .gw
        .request(Method::GET, "/openapi.json", None, None)
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/json");
    let doc = response.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 26);
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let concrete = path
                .replace("{model}", "claude-3-opus")
                .replace("{key}", "sk-not-a-key-0000000000000");
            let (status, body) = admin
                .call(
                    method.to_uppercase().parse().unwrap(),
                    &concrete,
                    Some(MASTER_KEY),
                    None,
                )
                .await;
            let unrouted = body["error"]["type"] == "method_not_allowed"
                || (status == 404
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("no route")));
            assert!(
                !unrouted,
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
    }
}
