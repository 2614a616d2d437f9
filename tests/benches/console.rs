//! The admin console's pages on a large deployment (BENCHMARKS.md): 10,000 keys, 500 teams
//! and 1,000,000 spend rows over 90 days, rolled up. Each page is rendered by the server over
//! real HTTP, signed in, and timed from request to the last byte.
//!
//! Run: `cargo bench -p llmlite-tests --bench console` (`BENCH_ROWS`, `BENCH_KEYS` and
//! `BENCH_SAMPLES` to change the sizes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::time::Instant;

use llmlite_tests::{MASTER_KEY, TestGateway, bench_env, percentile_ms};

#[tokio::main]
async fn main() {
    let rows = bench_env("BENCH_ROWS", 1_000_000);
    let keys = bench_env("BENCH_KEYS", 10_000);
    let samples = bench_env("BENCH_SAMPLES", 40);
    let gw = TestGateway::start().await;
    let seeding = Instant::now();
    let sql = [
        "INSERT INTO litellm_teamtable (team_id, max_budget)
         SELECT 'team-' || n, 1000 FROM generate_series(0, 499) n",
        "INSERT INTO litellm_usertable (user_id)
         SELECT 'user-' || n FROM generate_series(0, 1999) n",
        "INSERT INTO litellm_verificationtoken (token, key_name, key_alias, user_id, team_id,
             max_budget, rpm_limit, tpm_limit, spend, created_at, last_active)
         SELECT lpad(to_hex(n), 64, '0'), 'sk-...' || lpad(to_hex(n), 4, '0'), 'key-' || n,
                'user-' || (n % 2000), 'team-' || (n % 500), 50, 600, 100000,
                (n % 500) * 0.01, now() - make_interval(secs => n), now()
         FROM generate_series(0, {keys} - 1) n",
        // The spend rows, already rolled: 90 days up to today, across the keys and 3 models.
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status,
             rolled_at)
         SELECT 'r' || n, 'acompletion', lpad(to_hex(n % {keys}), 64, '0'), 'user-' || (n % {keys} % 2000),
                'team-' || (n % {keys} % 500),
                (ARRAY['claude-haiku-4-5', 'claude-sonnet-4-5', 'claude-opus-4-5'])[n % 3 + 1],
                100, 50, 150, 0.0001, t, t, 'success', now()
         FROM generate_series(1, {rows}) n,
              LATERAL (SELECT date_trunc('day', now()) - make_interval(days => (n % 90))
                              + make_interval(secs => (n % 86400)) AS t) s",
        // What the rollup makes of them.
        "INSERT INTO litellm_dailyuserspend (date, user_id, team_id, api_key, model, endpoint,
             prompt_tokens, completion_tokens, spend, api_requests, successful_requests)
         SELECT (start_time AT TIME ZONE 'UTC')::date, user_id, team_id, api_key, model,
                '/v1/chat/completions', sum(prompt_tokens), sum(completion_tokens), sum(spend),
                count(*), count(*)
         FROM litellm_spend GROUP BY 1, 2, 3, 4, 5",
        "ANALYZE",
    ];
    for statement in sql {
        // The sizes are numbers this benchmark parsed: safe to write into the SQL.
        let statement = statement
            .replace("{keys}", &keys.to_string())
            .replace("{rows}", &rows.to_string());
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .persistent(false)
            .execute(&gw.db.pool)
            .await
            .unwrap();
    }
    let daily: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_dailyuserspend")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    println!(
        "seeded {keys} keys, 500 teams, {rows} spend rows ({daily} daily rollup rows) in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed_in = client
        .post(gw.url("/ui/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("key={MASTER_KEY}"))
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    println!(
        "\n## Console pages\n\n| page | samples | p50 ms | p95 ms | max ms | bytes |\n|---|---|---|---|---|---|"
    );
    for path in [
        "/ui/keys",
        "/ui/keys?page=100",
        "/ui/keys?q=key-9999",
        "/ui/keys?team=team-42",
        "/ui/spend?group=model&days=90",
        "/ui/spend?group=team&days=90",
        "/ui/spend?group=key&days=90",
        "/ui/spend.json?group=model&days=90",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0;
        // One warm-up, then the samples.
        for n in 0..=samples {
            let started = Instant::now();
            let response = client
                .get(gw.url(path))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            bytes = response.bytes().await.unwrap().len();
            if n > 0 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        println!(
            "| `{path}` | {samples} | {:.1} | {:.1} | {:.1} | {bytes} |",
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.95),
            percentile_ms(&times, 1.0),
        );
    }
}
