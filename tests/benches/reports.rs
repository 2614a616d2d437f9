//! `/global/spend/report` over 30 days with 1,000,000 spend rows rolled up (BENCHMARKS.md).
//!
//! Seeds 1,000,000 spend rows over the 90 days before today (100 keys, each with one of 20
//! users and one of 5 teams, 3 models), rolls them up with `llmlite::rollup::run`, adds 10,000
//! rows for today that are not rolled up, then times the report over real HTTP from request to
//! the last byte: one warm-up, then the samples, for each `group_by`.
//!
//! Run: `cargo bench -p llmlite-tests --bench reports` (`BENCH_ROWS`, `BENCH_KEYS`,
//! `BENCH_TODAY` and `BENCH_SAMPLES` to change the sizes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::time::Instant;

use llmlite::clients::audit::Sink;
use llmlite::rollup;
use llmlite_tests::{MASTER_KEY, TestGateway, bench_env, percentile_ms};

/// `count` spend rows from `first` (days after today, negative for the past) over `days`
/// days, across `keys` keys and 3 models, scattered in time.
async fn seed(gw: &TestGateway, tag: &str, count: i64, keys: i64, first: i64, days: i64) {
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status)
         SELECT $1 || n, 'acompletion', lpad(to_hex(n % $2), 64, '0'), 'user-' || (n % $2 % 20),
                'team-' || (n % $2 % 5),
                (ARRAY['claude-haiku-4-5', 'claude-sonnet-4-5', 'claude-opus-4-5'])[n / $2 % 3 + 1],
                100 + n % 50, 20 + n % 30, 120 + n % 50 + n % 30, (0.000001 * (n % 1000 + 1))::numeric,
                t, t + interval '1 second', CASE WHEN n % 50 = 0 THEN 'failure' ELSE 'success' END
         FROM generate_series(1, $3::bigint) n,
              LATERAL (SELECT ((now() AT TIME ZONE 'UTC')::date + $4::int)::timestamp AT TIME ZONE 'UTC'
                              + make_interval(secs => (n * 7919) % ($5::bigint * 86400)) AS t) s",
    )
    .bind(tag)
    .bind(keys)
    .bind(count)
    .bind(i32::try_from(first).unwrap())
    .bind(days)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
}

#[tokio::main]
async fn main() {
    let rows = bench_env("BENCH_ROWS", 1_000_000);
    let keys = bench_env("BENCH_KEYS", 100);
    let today_rows = bench_env("BENCH_TODAY", 10_000);
    let samples = bench_env("BENCH_SAMPLES", 100);
    let gw = TestGateway::start().await;

    let seeding = Instant::now();
    seed(&gw, "r", rows, keys, -90, 90).await;
    let sink = Sink::Directory(
        std::env::temp_dir().join(format!("llmlite-bench-reports-{}", std::process::id())),
    );
    let summary = rollup::run(&gw.state, &sink, 3650, gw.state.clock.now())
        .await
        .unwrap();
    assert_eq!(i64::try_from(summary.rows_rolled).unwrap(), rows);
    // Today's rows, not rolled up yet: the report reads them raw.
    seed(&gw, "today-", today_rows, keys, 0, 1).await;
    sqlx::query("ANALYZE")
        .persistent(false)
        .execute(&gw.db.pool)
        .await
        .unwrap();
    let (daily, unrolled): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM litellm_dailyuserspend),
                (SELECT count(*) FROM litellm_spend WHERE rolled_at IS NULL)",
    )
    .persistent(false)
    .fetch_one(&gw.db.pool)
    .await
    .unwrap();
    println!(
        "seeded and rolled up {rows} spend rows over 90 days ({daily} daily rollup rows, {keys} keys), \
         plus {unrolled} unrolled rows today, in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );

    let today = gw.state.clock.now().date_naive();
    let first = today - chrono::Duration::days(29);
    let year = today - chrono::Duration::days(365);
    println!(
        "\n## /global/spend/report\n\n| range | group_by | samples | rows | p50 ms | p95 ms | max ms | bytes |\n|---|---|---|---|---|---|---|---|"
    );
    for (start, days, group_by) in [
        (first, 30, "team"),
        (first, 30, "user"),
        (first, 30, "model"),
        (first, 30, "key"),
        (year, 366, "team"),
    ] {
        let path =
            format!("/global/spend/report?start_date={start}&end_date={today}&group_by={group_by}");
        let mut times = Vec::new();
        let (mut bytes, mut count) = (0, 0);
        for n in 0..=samples {
            let started = Instant::now();
            let response = gw
                .client
                .get(gw.url(&path))
                .bearer_auth(MASTER_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let body = response.bytes().await.unwrap();
            if n > 0 {
                times.push(started.elapsed());
            }
            bytes = body.len();
            count = serde_json::from_slice::<serde_json::Value>(&body)
                .unwrap()
                .as_array()
                .unwrap()
                .len();
        }
        times.sort();
        println!(
            "| {days} days | `{group_by}` | {samples} | {count} | {:.1} | {:.1} | {:.1} | {bytes} |",
            percentile_ms(&times, 0.5),
            percentile_ms(&times, 0.95),
            percentile_ms(&times, 1.0),
        );
    }
}
