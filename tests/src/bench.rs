//! What the benchmarks share beyond load generation: the gateway's own stage timings (its
//! `server-timing` header), the CPU time PostgreSQL spent, and `pg_stat_statements`.

use std::time::{Duration, Instant};

use sqlx::PgPool;

/// A percentile of sorted milliseconds.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The stages `server-timing` names, in the order a request meets them.
pub const STAGES: [&str; 5] = ["parse", "admit", "pii", "upstream", "total"];

/// One stage's duration from a `server-timing` value.
pub fn stage(server_timing: &str, name: &str) -> Option<f64> {
    server_timing.split(',').find_map(|part| {
        let mut fields = part.trim().split(';');
        (fields.next()? == name)
            .then(|| fields.find_map(|f| f.strip_prefix("dur=")?.parse().ok()))
            .flatten()
    })
}

/// One request at a time, `n` times: a direct call, then one through the gateway, alternately.
/// The latencies of each (sorted), and the through-requests' `server-timing` values.
pub async fn sequential(
    direct: &reqwest::RequestBuilder,
    through: &reqwest::RequestBuilder,
    n: usize,
    gap: Duration,
) -> (Vec<f64>, Vec<f64>, Vec<String>) {
    let (mut straight, mut via, mut timings) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        for (request, into) in [(direct, &mut straight), (through, &mut via)] {
            let started = Instant::now();
            let Some(response) = request.try_clone().map(|r| r.send()) else {
                continue;
            };
            let Ok(response) = response.await else {
                continue;
            };
            let timing = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let ok = response.status().is_success() && response.bytes().await.is_ok();
            if ok {
                into.push(started.elapsed().as_secs_f64() * 1000.0);
                if let Some(timing) = timing {
                    timings.push(timing);
                }
            }
        }
    }
    straight.sort_by(f64::total_cmp);
    via.sort_by(f64::total_cmp);
    (straight, via, timings)
}

/// The stage table of `timings` (`server-timing` values) next to the client's `latencies` and
/// the direct path's: rows of (stage, p50, p99).
pub fn stage_table(
    timings: &[String],
    latencies: &[f64],
    direct: &[f64],
) -> Vec<(String, f64, f64)> {
    let mut rows = Vec::new();
    let column = |f: &dyn Fn(&str) -> Option<f64>| {
        let mut v: Vec<f64> = timings.iter().filter_map(|t| f(t)).collect();
        v.sort_by(f64::total_cmp);
        (percentile(&v, 50.0), percentile(&v, 99.0))
    };
    for name in STAGES {
        let (p50, p99) = column(&|t| stage(t, name));
        rows.push((name.to_owned(), p50, p99));
    }
    let (p50, p99) = column(&|t| {
        let total = stage(t, "total")?;
        let known: f64 = ["parse", "admit", "pii", "upstream"]
            .iter()
            .filter_map(|s| stage(t, s))
            .sum();
        Some(total - known)
    });
    rows.push(("respond (total less the stages)".into(), p50, p99));
    let (p50, p99) = column(&|t| Some(stage(t, "total")? - stage(t, "upstream")?));
    rows.push(("the gateway's own (total less upstream)".into(), p50, p99));
    rows.push((
        "client round trip through the gateway".into(),
        percentile(latencies, 50.0),
        percentile(latencies, 99.0),
    ));
    rows.push((
        "client round trip direct to the double".into(),
        percentile(direct, 50.0),
        percentile(direct, 99.0),
    ));
    rows
}

/// CPU seconds spent so far by the PostgreSQL server `pool` reaches (its postmaster and every
/// process it started), when that server runs on this machine.
pub async fn db_cpu_seconds(pool: &PgPool) -> Option<f64> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .persistent(false)
        .fetch_one(pool)
        .await
        .ok()?;
    let postmaster = stat(backend as u32)?.0;
    let mut ticks = stat(postmaster).map_or(0, |s| s.1);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            && let Some((parent, used)) = stat(pid)
            && parent == postmaster
        {
            ticks += used;
        }
    }
    // Linux's USER_HZ is 100 on every platform it supports.
    Some(ticks as f64 / 100.0)
}

/// CPU seconds process `pid` has spent so far (`None`: no such process here).
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    stat(pid).map(|(_, ticks)| ticks as f64 / 100.0)
}

/// A process's parent and its user + system CPU ticks, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and brackets: the fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let parent = fields.get(1)?.parse().ok()?;
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((parent, user + system))
}

/// Resets `pg_stat_statements`, when the server has it loaded; whether it has.
pub async fn reset_statements(pool: &PgPool) -> bool {
    let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .persistent(false)
        .execute(pool)
        .await;
    sqlx::query("SELECT pg_stat_statements_reset()")
        .persistent(false)
        .execute(pool)
        .await
        .is_ok()
}

/// The statements of this database by total execution time: (calls, mean ms, total ms, text).
pub async fn top_statements(pool: &PgPool, limit: i64) -> Vec<(i64, f64, f64, String)> {
    sqlx::query_as(
        "SELECT calls, mean_exec_time, total_exec_time,
                regexp_replace(left(query, 90), '\\s+', ' ', 'g')
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND query NOT ILIKE '%pg_stat_statements%'
          ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(limit)
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

/// `clients` clients in a closed loop for `seconds`, client `i` sending with `keys[i]`,
/// `keys[i + clients]`, ... in turn: the latencies (sorted) and the failures.
pub async fn closed_loop_keys(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    keys: &[String],
    clients: usize,
    seconds: u64,
) -> (Vec<f64>, usize) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..clients)
        .map(|i| {
            let mine: Vec<String> = keys.iter().skip(i).step_by(clients).cloned().collect();
            let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (Vec::new(), 0);
                let mut turn = 0;
                while Instant::now() < until && !mine.is_empty() {
                    let key = &mine[turn % mine.len()];
                    turn += 1;
                    let sent = Instant::now();
                    let answered = match client.post(&url).bearer_auth(key).json(&body).send().await
                    {
                        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if answered {
                        ok.push(sent.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut all, mut failures) = (Vec::new(), 0);
    for worker in workers {
        if let Ok((ok, failed)) = worker.await {
            all.extend(ok);
            failures += failed;
        }
    }
    all.sort_by(f64::total_cmp);
    (all, failures)
}
