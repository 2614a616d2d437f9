//! Reports that scale, on real PostgreSQL over real HTTP: `/global/spend/report` reads the daily
//! rollups plus the rows not rolled up yet and equals the raw rows to the last decimal, whatever
//! has been rolled up or deleted by retention; it requires a range of at most 366 days; and
//! every list route pages, saying how many there are.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use llmlite::clients::audit::Sink;
use llmlite::rollup;
use llmlite_tests::{MASTER_KEY, TestGateway};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// A 400 in OpenAI's shape naming `param`.
async fn refused(gw: &TestGateway, path: &str, param: &str) {
    let (status, body) = gw.get(path, MASTER_KEY).await.status_and_json();
    assert_eq!(status, 400, "{path}: {body}");
    assert_eq!(
        body["error"]["type"], "invalid_request_error",
        "{path}: {body}"
    );
    assert_eq!(body["error"]["param"], param, "{path}: {body}");
}

fn reports_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llmlite-reports-{name}-{}", std::process::id()))
}

/// Spend rows on each day `from..=to` days after `base`: 4 groups (2 users, 2 teams, 2 keys,
/// 2 models) x `per` rows a day, one in ten failed, amounts with seven decimals. `tag` keeps
/// request IDs unique across calls.
async fn seed(gw: &TestGateway, tag: &str, base: NaiveDate, from: i32, to: i32, per: i32) {
    sqlx::query(
        "INSERT INTO litellm_spend (request_id, call_type, api_key, user_id, team_id, model,
             prompt_tokens, completion_tokens, total_tokens, spend, start_time, end_time, status)
         SELECT $1 || '-' || d || '-' || g || '-' || n, 'acompletion',
                repeat(to_hex(g % 2 + 10), 64), 'user-' || (g % 2), 'team-' || (g / 2),
                CASE WHEN g % 2 = 0 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4-5' END,
                10 + n, 5 + n % 7, 15 + n + n % 7,
                (0.0000013 * (n + 1) + 0.0000007 * (d + 40) + 0.0000001 * g)::numeric,
                ($2::date + d)::timestamp AT TIME ZONE 'UTC' + make_interval(secs => (n * 997) % 86400),
                ($2::date + d)::timestamp AT TIME ZONE 'UTC' + make_interval(secs => (n * 997) % 86400 + 1),
                CASE WHEN n % 10 = 0 THEN 'failure' ELSE 'success' END
         FROM generate_series($3::int, $4::int) d, generate_series(0, 3) g,
              generate_series(0, $5::int - 1) n",
    )
    .bind(tag)
    .bind(base)
    .bind(from)
    .bind(to)
    .bind(per)
    .persistent(false)
    .execute(&gw.db.pool)
    .await
    .unwrap();
}

/// (day, group) to (spend, prompt, completion, total tokens, requests, succeeded, failed).
type Totals = BTreeMap<(String, Option<String>), (Decimal, i64, i64, i64, i64, i64, i64)>;

/// A raw group: day, group, then the totals as in [`Totals`].
type RawRow = (
    String,
    Option<String>,
    Decimal,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

/// What the raw rows say, per UTC day and `column`, over `[first, last]`.
async fn raw(gw: &TestGateway, column: &str, first: NaiveDate, last: NaiveDate) -> Totals {
    let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (start_time AT TIME ZONE 'UTC')::date::text, {column}, sum(spend),
                    sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint,
                    sum(total_tokens)::bigint, count(*),
                    count(*) FILTER (WHERE status = 'success'),
                    count(*) FILTER (WHERE status <> 'success')
             FROM litellm_spend
             WHERE start_time >= $1::timestamp AT TIME ZONE 'UTC'
               AND start_time < ($2 + 1)::timestamp AT TIME ZONE 'UTC'
             GROUP BY 1, 2"
    )))
    .bind(first)
    .bind(last)
    .persistent(false)
    .fetch_all(&gw.db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(d, g, s, p, c, t, n, ok, failed)| ((d, g), (s, p, c, t, n, ok, failed)))
        .collect()
}

/// What `/global/spend/report` says, in the same shape; amounts read from the JSON number's
/// text, so a lost digit shows.
async fn reported(
    gw: &TestGateway,
    group_by: &str,
    key: &str,
    first: NaiveDate,
    last: NaiveDate,
) -> Totals {
    let (status, body) = gw
        .get(
            &format!("/global/spend/report?start_date={first}&end_date={last}&group_by={group_by}"),
            MASTER_KEY,
        )
        .await
        .status_and_json();
    assert_eq!(status, 200, "{body}");
    body.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let int = |f: &str| r[f].as_i64().unwrap();
            (
                (
                    r["date"].as_str().unwrap().to_owned(),
                    r[key].as_str().map(str::to_owned),
                ),
                (
                    Decimal::from_str(&r["spend"].to_string()).unwrap(),
                    int("prompt_tokens"),
                    int("completion_tokens"),
                    int("total_tokens"),
                    int("api_requests"),
                    int("successful_requests"),
                    int("failed_requests"),
                ),
            )
        })
        .collect()
}

const GROUPS: [(&str, &str, &str); 4] = [
    ("team", "team_id", "team_id"),
    ("user", "user_id", "user_id"),
    ("key", "api_key", "api_key"),
    ("model", "model", "model"),
];

#[tokio::test]
async fn the_spend_report_equals_the_raw_rows_across_rollups_and_retention() {
    let gw = TestGateway::start().await;
    let now = gw.state.clock.now();
    let today = now.date_naive();
    let (first, last) = (today - chrono::Duration::days(29), today);
    let sink = Sink::Directory(reports_dir("equal"));
    // Days -32 to -10 (two of them outside the range), rolled up; then days -9 to today and
    // late rows for two rolled days (-15, -10), not rolled: days that are all rollup, all raw,
    // and both.
    seed(&gw, "old", today, -32, -10, 12).await;
    assert_eq!(
        rollup::run(&gw.state, &sink, 90, now)
            .await
            .unwrap()
            .rows_rolled,
        23 * 48
    );
    seed(&gw, "new", today, -9, 0, 12).await;
    seed(&gw, "late-a", today, -15, -15, 3).await;
    seed(&gw, "late-b", today, -10, -10, 3).await;
    let unrolled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM litellm_spend WHERE rolled_at IS NULL")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert_eq!(unrolled, 10 * 48 + 2 * 12);

    let mut before_retention = Vec::new();
    for (group_by, column, key) in GROUPS {
        let expected = raw(&gw, column, first, last).await;
        assert_eq!(expected.len(), 30 * 2, "two groups a day, by {group_by}");
        let days: std::collections::BTreeSet<&String> = expected.keys().map(|(d, _)| d).collect();
        assert_eq!(days.len(), 30, "the range covers 30 days, no more");
        assert_eq!(
            reported(&gw, group_by, key, first, last).await,
            expected,
            "by {group_by}"
        );
        before_retention.push(expected);
    }

    // Roll up the rest and keep raw rows for five days only: the report does not move. Then
    // today's new rows, not rolled, are added to it exactly.
    let summary = rollup::run(&gw.state, &sink, 5, now).await.unwrap();
    assert!(summary.spend_rows_deleted >= 20 * 48, "{summary:?}");
    let first_left: NaiveDate =
        sqlx::query_scalar("SELECT min((start_time AT TIME ZONE 'UTC')::date) FROM litellm_spend")
            .persistent(false)
            .fetch_one(&gw.db.pool)
            .await
            .unwrap();
    assert!(
        first_left > first + chrono::Duration::days(20),
        "{first_left}"
    );
    for ((group_by, _, key), expected) in GROUPS.iter().zip(&before_retention) {
        assert_eq!(
            &reported(&gw, group_by, key, first, last).await,
            expected,
            "by {group_by}, after retention"
        );
    }
    seed(&gw, "today", today, 0, 0, 5).await;
    let recent = today - chrono::Duration::days(4);
    for (group_by, column, key) in GROUPS {
        let expected = raw(&gw, column, recent, last).await;
        assert_eq!(
            reported(&gw, group_by, key, recent, last).await,
            expected,
            "by {group_by}, today"
        );
    }
    let _ = std::fs::remove_dir_all(reports_dir("equal"));
}

/// A rollup committing while reports are read: every report sees each row once, rolled or not.
#[tokio::test]
async fn a_report_during_a_rollup_counts_each_row_once() {
    let gw = TestGateway::start().await;
    let now = gw.state.clock.now();
    let today = now.date_naive();
    let first = today - chrono::Duration::days(29);
    seed(&gw, "race", today, -29, 0, 200).await;
    let expected = raw(&gw, "model", first, today).await;
    let sink = Sink::Directory(reports_dir("race"));
    let rollup = {
        let state = gw.state.clone();
        tokio::spawn(async move { rollup::run(&state, &sink, 90, now).await })
    };
    let mut reads = 0;
    while !rollup.is_finished() || reads == 0 {
        assert_eq!(
            reported(&gw, "model", "model", first, today).await,
            expected
        );
        reads += 1;
    }
    assert_eq!(rollup.await.unwrap().unwrap().rows_rolled, 30 * 4 * 200);
    assert_eq!(
        reported(&gw, "model", "model", first, today).await,
        expected
    );
    let _ = std::fs::remove_dir_all(reports_dir("race"));
}

#[tokio::test]
async fn a_report_needs_a_range_of_at_most_366_days() {
    let gw = TestGateway::start().await;
    let report = "/global/spend/report";
    refused(&gw, report, "start_date").await;
    refused(&gw, &format!("{report}?end_date=2026-11-30"), "start_date").await;
    refused(&gw, &format!("{report}?start_date=2026-11-01"), "end_date").await;
    refused(
        &gw,
        &format!("{report}?start_date=2026-11-31&end_date=2026-12-01"),
        "start_date",
    )
    .await;
    refused(
        &gw,
        &format!("{report}?start_date=2026-11-01&end_date=30-11-2026"),
        "end_date",
    )
    .await;
    refused(
        &gw,
        &format!("{report}?start_date=2026-11-05&end_date=2026-11-04"),
        "end_date",
    )
    .await;
    // 2024 is a leap year: 2024-01-01 to 2024-12-31 is 366 days, one more is too many.
    refused(
        &gw,
        &format!("{report}?start_date=2024-01-01&end_date=2025-01-01"),
        "end_date",
    )
    .await;
    for ok in [
        "start_date=2024-01-01&end_date=2024-12-31",
        "start_date=2026-11-30&end_date=2026-11-30",
    ] {
        assert_eq!(
            gw.get(&format!("{report}?{ok}"), MASTER_KEY).await.status,
            200,
            "{ok}"
        );
    }
}

/// Sizes of 0 and 101 and pages of 0, for `size` and `page_size` alike, are 400s naming the
/// parameter.
async fn bad_pages_refused(gw: &TestGateway, route: &str) {
    let join = if route.contains('?') { '&' } else { '?' };
    for (query, param) in [
        ("size=0", "size"),
        ("size=101", "size"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page=0", "page"),
        ("size=10&page_size=10", "page_size"),
    ] {
        refused(gw, &format!("{route}{join}{query}"), param).await;
    }
}

#[tokio::test]
async fn keys_page_with_totals_and_by_age_on_the_injected_clock() {
    let gw = TestGateway::start().await;
    for n in 0..3 {
        gw.mint_key(json!({"key_alias": format!("old-{n}"), "user_id": "aging"}))
            .await;
    }
    gw.state.clock.advance(Duration::from_secs(31 * 86_400));
    for n in 0..22 {
        gw.mint_key(json!({"key_alias": format!("new-{n:02}"), "user_id": "aging"}))
            .await;
    }
    let (_, page3) = gw
        .get("/key/list?user_id=aging&size=10&page=3", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(
        (
            page3["keys"].as_array().unwrap().len(),
            &page3["total_count"],
            &page3["total_pages"]
        ),
        (5, &json!(25), &json!(3))
    );
    let (_, by_page_size) = gw
        .get("/key/list?user_id=aging&page_size=10&page=3", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(by_page_size, page3);
    let (status, beyond) = gw
        .get("/key/list?user_id=aging&size=10&page=4", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(
        (status, beyond["keys"].clone(), &beyond["total_count"]),
        (200, json!([]), &json!(25))
    );
    bad_pages_refused(&gw, "/key/list").await;

    let aliases = |body: &Value| -> Vec<String> {
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_alias"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, old) = gw
        .get(
            "/key/list?older_than_days=30&return_full_object=true&size=100",
            MASTER_KEY,
        )
        .await
        .status_and_json();
    assert_eq!(aliases(&old), ["old-0", "old-1", "old-2"]);
    assert_eq!(old["total_count"], 3);
    let (_, none) = gw
        .get("/key/list?older_than_days=32", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(none["total_count"], 0);
    let (_, all) = gw
        .get("/key/list?older_than_days=0&size=100", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(all["total_count"], 25);
    refused(&gw, "/key/list?older_than_days=-1", "older_than_days").await;
}

#[tokio::test]
async fn users_and_teams_page_with_totals_and_their_keys_too() {
    let gw = TestGateway::start().await;
    for n in 0..12 {
        gw.admin("/team/new", json!({"team_id": format!("team-{n:02}")}))
            .await;
        gw.admin(
            "/user/new",
            json!({"user_id": format!("user-{n:02}"), "auto_create_key": false}),
        )
        .await;
    }
    for n in 0..12 {
        gw.mint_key(json!({"key_alias": format!("t{n:02}"), "team_id": "team-03"}))
            .await;
        gw.mint_key(json!({"key_alias": format!("u{n:02}"), "user_id": "user-05"}))
            .await;
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM litellm_usertable")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert!(users >= 12);

    let (status, teams) = gw
        .get("/team/list?page_size=5&page=3", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(status, 200, "{teams}");
    assert_eq!(
        (
            teams["teams"].as_array().unwrap().len(),
            &teams["total"],
            &teams["page"],
            &teams["page_size"],
            &teams["total_pages"]
        ),
        (2, &json!(12), &json!(3), &json!(5), &json!(3))
    );
    assert_eq!(teams["teams"][1]["team_id"], "team-11");
    let (_, beyond) = gw
        .get("/team/list?size=5&page=4", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(
        (beyond["teams"].clone(), &beyond["total"]),
        (json!([]), &json!(12))
    );
    bad_pages_refused(&gw, "/team/list").await;

    let (_, user_page) = gw
        .get(
            &format!("/user/list?page_size=5&page={}", (users + 4) / 5),
            MASTER_KEY,
        )
        .await
        .status_and_json();
    assert_eq!(user_page["total"], users);
    assert_eq!(user_page["total_pages"], (users + 4) / 5);
    assert_eq!(
        user_page["users"].as_array().unwrap().len() as i64,
        users - 5 * ((users + 4) / 5 - 1)
    );
    let (_, by_size) = gw
        .get("/user/list?size=5&page=1", MASTER_KEY)
        .await
        .status_and_json();
    assert_eq!(by_size["users"].as_array().unwrap().len(), 5);
    bad_pages_refused(&gw, "/user/list").await;

    for (route, prefix) in [
        ("/team/info?team_id=team-03", "t"),
        ("/user/info?user_id=user-05", "u"),
    ] {
        let (status, info) = gw
            .get(&format!("{route}&size=5&page=3"), MASTER_KEY)
            .await
            .status_and_json();
        assert_eq!(status, 200, "{info}");
        let keys: Vec<&str> = info["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key_alias"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [format!("{prefix}10"), format!("{prefix}11")],
            "{route}"
        );
        assert_eq!(
            (
                &info["keys_total_count"],
                &info["keys_page"],
                &info["keys_page_size"],
                &info["keys_total_pages"]
            ),
            (&json!(12), &json!(3), &json!(5), &json!(3)),
            "{route}"
        );
        let (_, first) = gw.get(route, MASTER_KEY).await.status_and_json();
        assert_eq!(
            first["keys"].as_array().unwrap().len(),
            10,
            "ten by default"
        );
        bad_pages_refused(&gw, route).await;
    }
}

#[tokio::test]
async fn spend_logs_page_and_say_how_many_in_headers() {
    let gw = TestGateway::start().await;
    let today = gw.state.clock.now().date_naive();
    // 2 days x 4 groups x 3 rows.
    seed(&gw, "logs", today, -1, 0, 3).await;
    let page = |query: &'static str| {
        let gw = &gw;
        async move {
            let response = gw.get(&format!("/spend/logs?{query}"), MASTER_KEY).await;
            assert_eq!(response.status, 200, "{query}");
            let header = |name: &str| {
                response.headers[name]
                    .to_str()
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            };
            let totals = (header("x-total-count"), header("x-total-pages"));
            let rows = response.json();
            (rows.as_array().unwrap().len(), totals)
        }
    };
    assert_eq!(page("page_size=10&page=3").await, (4, (24, 3)));
    assert_eq!(page("size=10&page=3").await, (4, (24, 3)));
    assert_eq!(page("page_size=10&page=4").await, (0, (24, 3)));
    assert_eq!(page("user_id=user-0&page_size=100").await, (12, (12, 1)));
    assert_eq!(page("").await, (10, (24, 3)));
    bad_pages_refused(&gw, "/spend/logs").await;
    // The range still bounds both the rows and the count.
    let yesterday = today - chrono::Duration::days(1);
    let response = gw
        .get(
            &format!("/spend/logs?start_date={yesterday}&end_date={yesterday}&page_size=5"),
            MASTER_KEY,
        )
        .await;
    assert_eq!(response.headers["x-total-count"], "12");
}
