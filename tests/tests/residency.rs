//! Inference profiles and residency (issue #28): a catalog model may be served by several
//! profiles (`global.`, `eu.`), each at its own price, and a key's or team's `residency` decides
//! which may serve it. The official SDKs (`tests/compat/residency.py`) drive the gateway; the
//! Bedrock double's calls and the spend rows then show which route served each request, and at
//! what price. The HTTP checks below cover failover between routes and the admin field.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite_tests::{MASTER_KEY, TestGateway, models_file, price};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// `sonnet`: the `global.` profile first (10% cheaper), then the `eu.` one. `global-only`: a
/// `global.` profile alone.
const CATALOG: &str = r#"
[[model]]
alias = "sonnet"
bedrock_model_id = "global.anthropic.claude-sonnet-4-5-20250929-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = { input = "3.00", output = "15.00", cache_read = "0.30", cache_write = "3.75" }
temperature_and_top_p = false

[[model.profiles]]
bedrock_model_id = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
prices = { input = "3.30", output = "16.50", cache_read = "0.33", cache_write = "4.125" }

[[model]]
alias = "global-only"
bedrock_model_id = "global.anthropic.claude-haiku-4-5-20251001-v1:0"
max_output_tokens = 64000
context_window = 200000
prices = { input = "1.00", output = "5.00", cache_read = "0.10", cache_write = "1.25" }
temperature_and_top_p = false
"#;

const GLOBAL: &str = "global.anthropic.claude-sonnet-4-5-20250929-v1:0";
const EU: &str = "eu.anthropic.claude-sonnet-4-5-20250929-v1:0";

/// The route and spend of a request, and its tokens.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    model: String,
    model_id: Option<String>,
    prompt_tokens: i64,
    completion_tokens: i64,
    spend: Decimal,
}

async fn row(gw: &TestGateway, request_id: &str) -> Row {
    gw.settled().await;
    sqlx::query_as(
        "SELECT model, model_id, prompt_tokens, completion_tokens, spend
         FROM litellm_spend WHERE request_id = $1",
    )
    .bind(request_id)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap_or_else(|e| panic!("no spend row for {request_id}: {e}"))
}

/// `row`'s tokens at (input, output) per million.
fn cost(row: &Row, input: &str, output: &str) -> Decimal {
    (price(input) * Decimal::from(row.prompt_tokens)
        + price(output) * Decimal::from(row.completion_tokens))
        / Decimal::from(1_000_000)
}

/// The model IDs the double was called with for `request_id`.
async fn routes(gw: &TestGateway, request_id: &str) -> Vec<String> {
    gw.bedrock_calls()
        .await
        .into_iter()
        .filter(|c| c["request_metadata"]["llmlite_request_id"] == request_id)
        .map(|c| c["model_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Keys: `eu_team` (its team's residency is `["eu"]`), `anywhere` (a team without one) and
/// `eu_key` (`["eu"]` on the key, in the team without one).
async fn keys(gw: &TestGateway) -> Value {
    let team = gw
        .admin(
            "/team/new",
            json!({"team_id": "eu-only", "residency": ["eu", "eu"]}),
        )
        .await;
    assert_eq!(team["residency"], json!(["eu"]));
    gw.admin("/team/new", json!({"team_id": "anywhere"})).await;
    json!({
        "eu_team": gw.mint_raw_key(json!({"key_alias": "eu-team", "team_id": "eu-only"})).await,
        "anywhere": gw.mint_raw_key(json!({"key_alias": "anywhere", "team_id": "anywhere"})).await,
        "eu_key": gw.mint_raw_key(json!({"key_alias": "eu-key", "team_id": "anywhere",
            "residency": ["eu"]})).await,
    })
}

#[tokio::test]
async fn an_eu_only_team_never_reaches_a_global_profile_and_another_team_does() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let keys = keys(&gw).await;
    let Some(results) = gw.run_sdk_script("residency.py", &keys).await else {
        return;
    };
    let id = |name: &str| results[name].as_str().unwrap().to_owned();

    for api in ["openai", "anthropic"] {
        // EU-only, by the team's setting or the key's: the `eu.` profile, at its price.
        for key in ["eu_team", "eu_key"] {
            let request_id = id(&format!("{api}_{key}"));
            assert_eq!(routes(&gw, &request_id).await, [EU], "{api} {key}");
            let row = row(&gw, &request_id).await;
            assert_eq!(
                (row.model.as_str(), row.model_id.as_deref()),
                ("sonnet", Some(EU))
            );
            assert_eq!(row.spend, cost(&row, "3.30", "16.50"), "{api} {key}");
        }
        // Another team: the first route, `global.`, at its own (lower) price.
        let request_id = id(&format!("{api}_anywhere"));
        assert_eq!(routes(&gw, &request_id).await, [GLOBAL], "{api}");
        let row = row(&gw, &request_id).await;
        assert_eq!(row.model_id.as_deref(), Some(GLOBAL));
        assert_eq!(row.spend, cost(&row, "3.00", "15.00"), "{api}");
    }

    // No EU-only request ever reached a `global.` profile: the refusals took nothing and called
    // nothing, and each key's spend is its rows'.
    gw.settled().await;
    let eu_keys: Vec<String> = sqlx::query_scalar(
        "SELECT token FROM litellm_verificationtoken WHERE key_alias IN ('eu-team', 'eu-key')",
    )
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    let global_for_eu: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM litellm_spend
         WHERE api_key = ANY($1) AND model_id LIKE 'global.%'",
    )
    .bind(&eu_keys)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    assert_eq!(global_for_eu, 0);
    let global_calls = gw
        .bedrock_calls()
        .await
        .iter()
        .filter(|c| c["model_id"].as_str().unwrap().starts_with("global."))
        .count();
    assert_eq!(
        global_calls, 3,
        "the other team's two requests and its global-only one"
    );
    assert_eq!(
        gw.count(
            "SELECT count(*) FROM litellm_verificationtoken v
             WHERE v.spend <> (SELECT coalesce(sum(s.spend), 0) FROM litellm_spend s
                               WHERE s.api_key = v.token)"
        )
        .await,
        0
    );
    assert_eq!(gw.count("SELECT count(*) FROM llmlite_inflight").await, 0);
}

/// A throttled route falls over to the next one the residency allows, never to another: the
/// EU-only team waits for `eu.` (a 429), the other team is served by `eu.` when `global.` is
/// throttled, each priced at the route that served it.
#[tokio::test]
async fn failover_stays_within_the_routes_the_residency_allows() {
    let path = models_file(CATALOG);
    let gw = TestGateway::start_with(&[("LLMLITE_MODELS", path.to_str().unwrap())]).await;
    let keys = keys(&gw).await;
    let chat = json!({"model": "sonnet", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "fail over"}]});

    // Three throttles: every attempt the retry policy makes on the first route.
    gw.script(json!([{"throttle": true}, {"throttle": true}, {"throttle": true}]))
        .await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            keys["anywhere"].as_str().unwrap(),
            chat.clone(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.headers["x-llmlite-served-model"], "sonnet");
    let request_id = reply.request_id();
    assert_eq!(routes(&gw, &request_id).await, [GLOBAL, GLOBAL, GLOBAL, EU]);
    let served = row(&gw, &request_id).await;
    assert_eq!(served.model_id.as_deref(), Some(EU));
    assert_eq!(served.spend, cost(&served, "3.30", "16.50"));

    gw.script(json!([{"throttle": true}, {"throttle": true}, {"throttle": true}]))
        .await;
    let reply = gw
        .post(
            "/v1/chat/completions",
            keys["eu_team"].as_str().unwrap(),
            chat.clone(),
        )
        .await;
    assert_eq!(reply.status, 429, "{}", reply.text);
    assert_eq!(routes(&gw, &reply.request_id()).await, [EU, EU, EU]);

    // The admin field: known geographies only, at least one; stored sorted; null clears it.
    let key = keys["eu_key"].as_str().unwrap();
    for bad in [json!(["mars"]), json!([]), json!("eu"), json!(["eu\u{0}"])] {
        let reply = gw
            .post(
                "/key/update",
                MASTER_KEY,
                json!({"key": key, "residency": bad}),
            )
            .await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text);
        assert_eq!(
            reply.json()["error"]["param"],
            "residency",
            "{}",
            reply.text
        );
        assert!(!reply.text.contains("mars"), "{}", reply.text);
    }
    let updated = gw
        .admin(
            "/key/update",
            json!({"key": key, "residency": ["global", "eu", "eu"]}),
        )
        .await;
    assert_eq!(updated["residency"], json!(["eu", "global"]));
    gw.admin("/key/update", json!({"key": key, "residency": null}))
        .await;
    let info = gw.admin("/key/info", json!({"key": key})).await;
    assert_eq!(info["info"]["residency"], Value::Null);
    // Without its own setting, in a team without one, the key reaches `global.` again.
    let reply = gw.post("/v1/chat/completions", key, chat).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(routes(&gw, &reply.request_id()).await, [GLOBAL]);
}
