//! 1-hour prompt caching and Bedrock service tiers (issue #28), priced and policed: the official
//! OpenAI and Anthropic Python SDKs (`tests/compat/bedrock_features.py`) against the gateway and
//! the wire-level Bedrock double (which remembers what was written to its cache, per TTL), then
//! the spend rows held against the catalog's prices, written out here, and the double's calls
//! against what was asked. The HTTP checks below cover the refusals the SDKs cannot send.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{MASTER_KEY, TestGateway, models_file, price};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// `sonnet` offers 1-hour caching and the priority and flex tiers; `older` neither.
const CATALOG: &str = r#"
[[model]]
alias = "sonnet"
bedrock_model_id = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = { input = "3.30", output = "16.50", cache_read = "0.33", cache_write = "4.125", cache_write_1h = "6.60" }
temperature_and_top_p = false

[model.service_tiers]
priority = { input = "5.775", output = "28.875", cache_read = "0.5775", cache_write = "7.21875", cache_write_1h = "11.55" }
flex = { input = "1.65", output = "8.25", cache_read = "0.165", cache_write = "2.0625" }

[[model]]
alias = "older"
bedrock_model_id = "eu.anthropic.claude-3-7-sonnet-20250219-v1:0"
max_output_tokens = 8192
context_window = 200000
prices = { input = "3", output = "15", cache_read = "0.30", cache_write = "3.75" }
"#;

/// What a spend row says of one request.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    prompt_tokens: i64,
    completion_tokens: i64,
    cache_read_input_tokens: i64,
    cache_creation_input_tokens: i64,
    cache_creation_1h_input_tokens: i64,
    service_tier: Option<String>,
    spend: Decimal,
}

async fn row(gw: &TestGateway, request_id: &str) -> Row {
    gw.settled().await;
    sqlx::query_as(
        "SELECT prompt_tokens, completion_tokens, cache_read_input_tokens,
                cache_creation_input_tokens, cache_creation_1h_input_tokens, service_tier, spend
         FROM litellm_spend WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap_or_else(|e| panic!("no spend row for {request_id}: {e}"))
}

/// The cost of `row` at per-million prices (input, output, cache read, 5-minute write, 1-hour
/// write), worked out here from the row's own token counts.
fn cost(row: &Row, prices: [&str; 5]) -> Decimal {
    let [input, output, read, write_5m, write_1h] = prices.map(price);
    let uncached =
        row.prompt_tokens - row.cache_read_input_tokens - row.cache_creation_input_tokens;
    let five = row.cache_creation_input_tokens - row.cache_creation_1h_input_tokens;
    (input * Decimal::from(uncached)
        + output * Decimal::from(row.completion_tokens)
        + read * Decimal::from(row.cache_read_input_tokens)
        + write_5m * Decimal::from(five)
        + write_1h * Decimal::from(row.cache_creation_1h_input_tokens))
        / Decimal::from(1_000_000)
}

const SONNET: [&str; 5] = ["3.30", "16.50", "0.33", "4.125", "6.60"];
const SONNET_PRIORITY: [&str; 5] = ["5.775", "28.875", "0.5775", "7.21875", "11.55"];

/// The keys the script uses: `open`, `no_cache_1h`, `team_no_cache_1h`, `priority`.
async fn keys(gw: &TestGateway) -> Value {
    gw.admin(
        "/team/new",
        json!({"team_id": "no-hour", "allow_cache_1h": false}),
    )
    .await;
    let team = gw
        .admin(
            "/team/new",
            json!({"team_id": "fast", "allowed_service_tiers": ["priority", "default"]}),
        )
        .await;
    // Stored in one order, duplicates dropped.
    assert_eq!(
        team["allowed_service_tiers"],
        json!(["default", "priority"])
    );
    assert_eq!(team["allow_cache_1h"], true);
    json!({
        "open": gw.mint_raw_key(json!({"key_alias": "open"})).await,
        "no_cache_1h": gw.mint_raw_key(json!({"key_alias": "no-hour", "allow_cache_1h": false})).await,
        "team_no_cache_1h": gw.mint_raw_key(json!({"key_alias": "team-no-hour", "team_id": "no-hour"})).await,
        "priority": gw.mint_raw_key(json!({"key_alias": "fast", "team_id": "fast",
            "allowed_service_tiers": ["default", "flex", "priority"]})).await,
    })
}

#[tokio::test]
async fn one_hour_caching_and_tiers_are_priced_exactly_and_policed_through_both_sdks() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let keys = keys(&gw).await;
    let Some(results) = gw.run_sdk_script("bedrock_features.py", &keys).await else {
        return;
    };
    let id = |name: &str| results[name]["id"].as_str().unwrap().to_owned();

    // The catalog's 1-hour write is twice the input price, a read a tenth.
    assert_eq!(price(SONNET[4]), price(SONNET[0]) * Decimal::TWO);
    assert_eq!(price(SONNET[2]) * Decimal::TEN, price(SONNET[0]));

    // A 1-hour write, then its repeat read from the cache: each at its own price, exactly.
    for (write, read) in [
        ("openai_write", "openai_read"),
        ("anthropic_write", "anthropic_read"),
    ] {
        let written = row(&gw, &id(write)).await;
        assert_eq!(
            (
                written.cache_creation_input_tokens,
                written.cache_creation_1h_input_tokens,
                written.cache_read_input_tokens
            ),
            (301, 301, 0),
            "{write}"
        );
        assert_eq!(written.spend, cost(&written, SONNET), "{write}");
        let (in_5m_price, in_1h_price) = (
            cost(&written, ["3.30", "16.50", "0.33", "4.125", "4.125"]),
            written.spend,
        );
        // At the 5-minute price the write would have cost 37.5% less of its part: the
        // under-charge this fixes.
        assert_eq!(
            in_1h_price - in_5m_price,
            Decimal::from(301) * (price("6.60") - price("4.125")) / Decimal::from(1_000_000)
        );
        let read_back = row(&gw, &id(read)).await;
        assert_eq!(
            (
                read_back.cache_creation_input_tokens,
                read_back.cache_read_input_tokens
            ),
            (0, 301),
            "{read}"
        );
        assert_eq!(read_back.spend, cost(&read_back, SONNET), "{read}");
        assert_eq!(read_back.service_tier, None);
    }

    // Priority: reached the double as Bedrock's serviceTier, priced at the priority rate.
    let calls = gw.bedrock_calls().await;
    for name in ["openai_priority", "anthropic_priority"] {
        let request_id = id(name);
        let priced = row(&gw, &request_id).await;
        assert_eq!(priced.service_tier.as_deref(), Some("priority"), "{name}");
        assert_eq!(priced.spend, cost(&priced, SONNET_PRIORITY), "{name}");
        assert!(priced.spend > cost(&priced, SONNET), "{name}");
        let call = calls
            .iter()
            .find(|c| c["request_metadata"]["llmlite_request_id"] == request_id.as_str())
            .unwrap_or_else(|| panic!("no Bedrock call for {name}"));
        assert_eq!(call["service_tier"], "priority", "{call}");
    }
    // Nothing else asked for a tier.
    assert_eq!(
        calls
            .iter()
            .filter(|c| !c["service_tier"].is_null())
            .count(),
        3,
        "two priority calls and one standard_only"
    );

    // The refused requests took nothing: the team key that may not write for an hour has spent
    // nothing and holds no lease.
    gw.settled().await;
    let (spend, leases): (Decimal, i64) = sqlx::query_as(
        "SELECT v.spend, (SELECT count(*) FROM llmlite_inflight f WHERE f.key_id = v.key_id)
         FROM litellm_verificationtoken v WHERE key_alias = 'team-no-hour'",
    )
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((spend, leases), (Decimal::ZERO, 0));

    // The daily rollup keeps the 1-hour writes: the two 301-token writes of the key `open`.
    let reports = llmlite::clients::audit::Sink::Directory(
        std::env::temp_dir().join(format!("llmlite-reports-cache-{}", std::process::id())),
    );
    llmlite::rollup::run(&gw.state, &reports, 90, gw.state.clock.now())
        .await
        .unwrap();
    let (all, hour): (i64, i64) = sqlx::query_as(
        "SELECT sum(cache_creation_input_tokens)::bigint, sum(cache_creation_1h_input_tokens)::bigint
         FROM litellm_dailyuserspend d JOIN litellm_verificationtoken v ON v.token = d.api_key
         WHERE v.key_alias = 'open'",
    )
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((all, hour), (301 + 301 + 302, 602));
}

#[tokio::test]
async fn bad_ttls_tiers_and_policies_are_refused_before_anything_is_taken() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "k", "max_budget": 1}))
        .await;
    let cached = |ttl: Value| {
        json!({"model": "sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": ttl}}]}]})
    };
    // A TTL Bedrock does not take, as chat and as Messages: 400, before Bedrock.
    let reply = gw
        .post("/v1/chat/completions", &key, cached(json!("2h")))
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = gw
        .post(
            "/v1/messages",
            &key,
            json!({"model": "sonnet", "max_tokens": 16, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral", "ttl": "1h\u{0}"}}]}]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let error = reply.json();
    assert_eq!(error["type"], "error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[0].content[0].cache_control.ttl"),
        "{error}"
    );
    assert!(!reply.text.contains('\u{0}'), "the value is not echoed");
    // A tier nobody has, and a tier that is not a string.
    for tier in [json!("turbo"), json!(7)] {
        let reply = gw
            .post(
                "/v1/chat/completions",
                &key,
                json!({"model": "sonnet", "service_tier": tier,
                       "messages": [{"role": "user", "content": "x"}]}),
            )
            .await;
        assert_eq!(reply.status, 400, "{tier}: {}", reply.text);
    }
    let reply = gw
        .post(
            "/v1/messages",
            &key,
            json!({"model": "sonnet", "max_tokens": 8, "service_tier": "fastest",
                   "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    assert!(gw.bedrock_calls().await.is_empty());

    // Admin: only Bedrock's tiers may be listed; a bad list changes nothing.
    let reply = gw
        .post(
            "/key/update",
            MASTER_KEY,
            json!({"key": key, "allowed_service_tiers": ["priority", "gold"]}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let reply = gw
        .post(
            "/key/update",
            MASTER_KEY,
            json!({"key": key, "allow_cache_1h": "yes"}),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text);
    let info = gw.admin("/key/info", json!({"key": key})).await;
    assert_eq!(
        info["info"]["allowed_service_tiers"],
        json!(["default", "flex"])
    );

    // The reservation of a request asking for a 1-hour write is at the 1-hour price: a budget
    // that fits the 5-minute worst case of a large prompt but not the 1-hour one refuses only the
    // latter (100,000 words, 125,004 tokens estimated: 0.52 at 4.125 a million, 0.83 at 6.60).
    let budget_key = gw
        .mint_raw_key(json!({"key_alias": "budget", "max_budget": 0.7}))
        .await;
    let big = "word ".repeat(100_000);
    let asking = |ttl: &str| {
        json!({"model": "sonnet", "max_tokens": 1, "messages": [{"role": "user", "content": [
            {"type": "text", "text": big, "cache_control": {"type": "ephemeral", "ttl": ttl}}]}]})
    };
    let reply = gw
        .post("/v1/chat/completions", &budget_key, asking("1h"))
        .await;
    assert_eq!(reply.status, 403, "{}", reply.text);
    assert_eq!(reply.json()["error"]["type"], "budget_exceeded");
    let reply = gw
        .post("/v1/chat/completions", &budget_key, asking("5m"))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
}

/// 50 requests at once, half writing the cache for an hour (chat completions) and half at the
/// priority tier (Messages), against a key whose budget covers some: the spend never passes the
/// budget, the key's and team's spend equal their rows', and every row is priced at its tier.
#[tokio::test]
async fn the_budget_holds_with_hour_writes_and_priority_requests_in_the_mix() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    gw.admin(
        "/team/new",
        json!({"team_id": "mixed", "allowed_service_tiers": ["default", "priority"]}),
    )
    .await;
    let key = gw
        .mint_raw_key(
            json!({"key_alias": "mixed", "team_id": "mixed", "max_budget": "0.02",
                             "allowed_service_tiers": ["default", "priority"]}),
        )
        .await;
    let budget = price("0.02");
    let prefix = "shared preamble ".repeat(150);
    let requests = (0..50).map(|n| {
        let (path, body) = if n % 2 == 0 {
            (
                "/v1/chat/completions",
                json!({"model": "sonnet", "max_tokens": 64, "messages": [{"role": "user", "content": [
                    {"type": "text", "text": format!("{prefix} {n}"),
                     "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                    {"type": "text", "text": "go"}]}]}),
            )
        } else {
            (
                "/v1/messages",
                json!({"model": "sonnet", "max_tokens": 64, "service_tier": "priority",
                       "messages": [{"role": "user", "content": format!("priority {n}")}]}),
            )
        };
        let gw = &gw;
        let key = key.clone();
        async move { gw.post(path, &key, body).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    assert!(ok > 0 && ok < 50, "{ok} admitted: {statuses:?}");

    gw.settled().await;
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT request_id, service_tier FROM litellm_spend s
         JOIN litellm_verificationtoken v ON v.token = s.api_key
         WHERE v.key_alias = 'mixed' AND s.status = 'success'",
    )
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), ok, "one spend row per admitted request");
    let mut total = Decimal::ZERO;
    let (mut hour, mut priority) = (0, 0);
    for (request_id, tier) in &rows {
        let row = row(&gw, request_id).await;
        let prices = if tier.as_deref() == Some("priority") {
            priority += 1;
            SONNET_PRIORITY
        } else {
            assert!(row.cache_creation_1h_input_tokens > 0, "{request_id}");
            hour += 1;
            SONNET
        };
        assert_eq!(row.spend, cost(&row, prices), "{request_id}");
        total += row.spend;
    }
    assert!(
        hour > 0 && priority > 0,
        "{hour} hour writes, {priority} priority"
    );
    let (key_spend, team_spend): (Decimal, Decimal) = sqlx::query_as(
        "SELECT v.spend, t.spend FROM litellm_verificationtoken v
         JOIN litellm_teamtable t ON t.team_id = v.team_id WHERE v.key_alias = 'mixed'",
    )
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((key_spend, team_spend), (total, total));
    assert!(key_spend <= budget, "{key_spend}");
}

/// A client that hangs up in the middle of a priority stream that wrote the cache for an hour:
/// the request is settled once, at the priority tier's prices, and its lease is released.
#[tokio::test]
async fn a_hang_up_mid_stream_pays_once_at_its_tier() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let key = gw
        .mint_raw_key(json!({"key_alias": "leaver",
                             "allowed_service_tiers": ["default", "priority"]}))
        .await;
    gw.script(json!([{"event_gap_ms": 200}])).await;
    let words = (0..40)
        .map(|n| format!("w{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut response = gw
        .client
        .post(format!("http://{}/v1/messages", gw.addr))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "sonnet", "max_tokens": 256, "stream": true,
                      "service_tier": "priority",
                      "system": [{"type": "text", "text": "a long preamble ".repeat(50),
                                  "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                      "messages": [{"role": "user", "content": words}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(response);

    let settled = row(&gw, &request_id).await;
    assert_eq!(settled.service_tier.as_deref(), Some("priority"));
    assert_eq!(settled.spend, cost(&settled, SONNET_PRIORITY));
    assert_eq!(settled.cache_creation_1h_input_tokens, 150);
    let (rows, leases): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM litellm_spend WHERE request_id = $1),
                (SELECT count(*) FROM llmlite_inflight)",
    )
    .bind(&request_id)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!((rows, leases), (1, 0));
}
