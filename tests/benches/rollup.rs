//! The spend rollup over 1,000,000 spend rows (BENCHMARKS.md).
//!
//! Run: `cargo bench -p llmlite-tests --bench rollup` (`BENCH_ROWS` to change the count).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::time::Instant;

use llmlite::clients::audit::Sink;
use llmlite::rollup;
use llmlite_tests::TestGateway;

#[tokio::main]
async fn main() {
    let rows: i64 = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let gw = TestGateway::start().await;
    let seeding = Instant::now();
    // 100 keys, 20 users, 5 teams, 3 models, spread over 30 days.
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status)
         SELECT 'r' || n, 'acompletion', lpad(to_hex(n % 100), 64, '0'), 'user-' || (n % 20),
                'team-' || (n % 5), (ARRAY['claude-haiku-4-5', 'claude-sonnet-4-5', 'claude-opus-4-5'])[n % 3 + 1],
                100 + n % 50, 20 + n % 30, 120 + n % 50 + n % 30, (0.000001 * (n % 1000 + 1))::numeric,
                timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => (n % 2592000)),
                timestamptz '2026-11-01 00:00:01+00' + make_interval(secs => (n % 2592000)),
                CASE WHEN n % 50 = 0 THEN 'failure' ELSE 'success' END
         FROM generate_series(1, $1) n",
    )
    .bind(rows)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
    println!(
        "seeded {rows} spend rows in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let reports = Sink::Directory(
        std::env::temp_dir().join(format!("llmlite-bench-reports-{}", std::process::id())),
    );
    let started = Instant::now();
    let summary = rollup::run(&gw.state, &reports, 3650, gw.state.clock.now())
        .await
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(i64::try_from(summary.rows_rolled).unwrap(), rows);
    println!(
        "\n## Spend rollup\n\n| rows | seconds | rows/s | days reported |\n|---|---|---|---|\n| {rows} | {seconds:.1} | {:.0} | {} |",
        rows as f64 / seconds,
        summary.days_reported.len()
    );
    let again = Instant::now();
    let rerun = rollup::run(&gw.state, &reports, 3650, gw.state.clock.now())
        .await
        .unwrap();
    println!(
        "rerun with nothing new: {:.2} s, {} rows",
        again.elapsed().as_secs_f64(),
        rerun.rows_rolled
    );
}
