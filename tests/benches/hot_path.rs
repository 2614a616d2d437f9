//! The hot-path benchmark (BENCHMARKS.md): what llmlite adds to a chat request.
//!
//! Run: `cargo build --release -p llmlite-gateway && cargo bench -p llmlite-tests --bench hot_path`
//! Settings (environment): `BENCH_RATE` requests/s per stream (default 200), `BENCH_SECONDS`
//! (default 10), `BENCH_ADMISSIONS` (default 2000), `BENCH_CLIENTS` (closed-loop clients per
//! path, default 16), `BENCH_LITELLM=1` to also run the LiteLLM
//! proxy (`pip install "litellm[proxy]"`) on the same double, at `BENCH_LITELLM_RATE`
//! (default 20), `BENCH_BASELINE=/path/to/llmlite` to also run another build of llmlite (an
//! earlier commit's) beside this one, on the same database and double, in the same phases (in
//! phase D, its runs follow this build's): a before/after comparison measured side by side;
//! `BENCH_GATEWAY=/path/to/llmlite` to run another
//! build as the gateway under test, on a database migrated by that build (the database's side
//! of a before/after: `pg_stat_statements` of each build's own schema).
//!
//! Everything runs on this machine: PostgreSQL (`DATABASE_URL` or a throwaway cluster), the
//! Bedrock double (in this process), the gateway (`target/release/llmlite serve`, a process of
//! its own so its peak RSS can be read), and an open-loop load generator that sends at a fixed
//! rate whether or not answers have come back (no coordinated omission). Direct-to-double and
//! through-the-gateway requests are interleaved in one run, so both see the same machine noise;
//! the added latency is the difference of their percentiles.
//!
//! Phase S sends one request at a time (direct and through alternating, `BENCH_SEQUENTIAL`
//! each, default 1000) and tables the gateway's stages from its `server-timing` header, back to
//! back and then spaced (`BENCH_SEQUENTIAL_GAP_MS` between pairs, default 10). Phase D
//! runs the closed loop on one key, then on the 50 keys of one team, and reports requests per
//! second of PostgreSQL CPU (when PostgreSQL runs on this machine) and, when the server has
//! `pg_stat_statements` loaded, its statements. Phase T runs this build twice more, one with
//! traces (OTLP to a sink in this process) and the Prometheus listener on and one with both
//! off, one request at a time alternating: what telemetry adds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use llmlite::dev::bedrock_double::BedrockDouble;
use llmlite_tests::bench::percentile;
use llmlite_tests::{MASTER_KEY, TestDb, bench, free_port, spawn_serve};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Phase C's rows for the LiteLLM proxy and for the baseline build.
const LITELLM_PATH: &str = "through the LiteLLM proxy";
const BASELINE_PATH: &str = "through the baseline build (BENCH_BASELINE), virtual key";

/// One closed-loop run of phase D.
struct Busy {
    name: String,
    latencies: Vec<f64>,
    failed: usize,
    db_cpu: f64,
    /// CPU seconds of the gateway's process, and of this one (load generator and double).
    gateway_cpu: f64,
    bench_cpu: f64,
    statements: Vec<(i64, f64, f64, String)>,
}

/// Phase D: `clients` clients in a closed loop on `one_key`, then on the 50 keys of one team,
/// through the gateway at `base` (process `pid`; its rows named with `label` first).
async fn busy_team(
    client: &reqwest::Client,
    (base, pid, label): (&str, u32, &str),
    db: &TestDb,
    clients: usize,
    seconds: u64,
    one_key: &str,
) -> Vec<Busy> {
    let team = format!("busy-{}", uuid::Uuid::new_v4().simple());
    let created = client
        .post(format!("{base}/team/new"))
        .bearer_auth(MASTER_KEY)
        .json(
            &json!({"team_id": team, "max_budget": 1_000_000, "rpm_limit": 1_000_000,
                      "tpm_limit": 1_000_000_000}),
        )
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let mut team_keys = Vec::new();
    for _ in 0..50 {
        let minted: Value = client
            .post(format!("{base}/key/generate"))
            .bearer_auth(MASTER_KEY)
            .json(
                &json!({"team_id": team, "rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000,
                          "max_budget": 1_000_000, "max_parallel_requests": 10_000,
                          "budget_duration": "30d"}),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        team_keys.push(minted["key"].as_str().unwrap().to_owned());
    }
    let url = format!("{base}/v1/chat/completions");
    let mut phases = Vec::new();
    for (name, keys) in [
        ("one key", vec![one_key.to_owned()]),
        ("one team, 50 keys", team_keys),
    ] {
        let keys: Vec<String> = if keys.len() == 1 {
            std::iter::repeat_n(keys[0].clone(), clients).collect()
        } else {
            keys
        };
        let statements = bench::reset_statements(&db.pool).await;
        let before = bench::db_cpu_seconds(&db.pool).await.unwrap_or(f64::NAN);
        let cpu = |pid: u32| bench::process_cpu_seconds(pid).unwrap_or(f64::NAN);
        let (gateway_before, bench_before) = (cpu(pid), cpu(std::process::id()));
        let (latencies, failed) =
            bench::closed_loop_keys(client, &url, &chat_body(), &keys, clients, seconds).await;
        // Settlement follows the answers: give the last ones time to land before reading.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let db_cpu = bench::db_cpu_seconds(&db.pool).await.unwrap_or(f64::NAN) - before;
        let gateway_cpu = cpu(pid) - gateway_before;
        let bench_cpu = cpu(std::process::id()) - bench_before;
        phases.push(Busy {
            name: format!("{label}{name}"),
            latencies,
            failed,
            db_cpu,
            gateway_cpu,
            bench_cpu,
            statements: if statements {
                bench::top_statements(&db.pool, 12).await
            } else {
                Vec::new()
            },
        });
    }
    phases
}

/// Applies `binary`'s own migrations to the database at `url`.
async fn migrate_with(binary: &std::path::Path, url: &str) {
    let output = Command::new(binary)
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("LITELLM_MASTER_KEY", MASTER_KEY)
        .env("AWS_ACCESS_KEY_ID", "LLMLITEBENCH")
        .env("AWS_SECRET_ACCESS_KEY", "llmlite-bench-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// This build's `llmlite`, beside the bench in the target directory.
fn this_build() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let binary = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("llmlite");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p llmlite-gateway ({})",
        binary.display()
    );
    binary
}

async fn start_gateway(
    binary: &std::path::Path,
    db: &TestDb,
    double: &BedrockDouble,
) -> (Child, String) {
    spawn_serve(
        binary,
        &db.url,
        &double.endpoint(),
        &[("LLMLITE_DB_POOL_SIZE", "8"), ("RUST_LOG", "error")],
    )
    .await
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !client
        .get(url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `rate` requests a second for `seconds` on each stream, interleaved; the latencies in
/// milliseconds of each stream's successful requests, and its failure count.
async fn open_loop(
    streams: Vec<reqwest::RequestBuilder>,
    rate: u64,
    seconds: u64,
) -> Vec<(Vec<f64>, usize)> {
    let total = rate * seconds;
    let period = Duration::from_secs_f64(1.0 / (rate as f64 * streams.len() as f64));
    let start = Instant::now();
    let mut handles: Vec<Vec<tokio::task::JoinHandle<Option<f64>>>> =
        streams.iter().map(|_| Vec::new()).collect();
    for i in 0..total as usize * streams.len() {
        let due = start + period * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let stream = i % streams.len();
        let request = streams[stream].try_clone().unwrap();
        handles[stream].push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = match request.send().await {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            ok.then(|| sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut results = Vec::new();
    for stream in handles {
        let mut latencies = Vec::new();
        let mut failures = 0;
        for handle in stream {
            match handle.await.unwrap() {
                Some(ms) => latencies.push(ms),
                None => failures += 1,
            }
        }
        latencies.sort_by(f64::total_cmp);
        results.push((latencies, failures));
    }
    results
}

/// `clients` concurrent clients per path, each sending its next request as soon as its last
/// answer came back (closed loop), for `seconds` per path. The paths take turns in one-second
/// slices, so each sees the same machine noise as the others. The latencies of each path's
/// successful requests, and its failure count.
async fn closed_loop(
    paths: &[reqwest::RequestBuilder],
    clients: usize,
    seconds: u64,
) -> Vec<(Vec<f64>, usize)> {
    let mut results: Vec<(Vec<f64>, usize)> = paths.iter().map(|_| (Vec::new(), 0)).collect();
    for _ in 0..seconds {
        for (path, result) in paths.iter().zip(results.iter_mut()) {
            let until = Instant::now() + Duration::from_secs(1);
            let workers: Vec<_> = (0..clients)
                .map(|_| {
                    let request = path.try_clone().unwrap();
                    tokio::spawn(async move {
                        let (mut ok, mut failed) = (Vec::new(), 0);
                        while Instant::now() < until {
                            let sent = Instant::now();
                            let answered = match request.try_clone().unwrap().send().await {
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
            for worker in workers {
                let (ok, failed) = worker.await.unwrap();
                result.0.extend(ok);
                result.1 += failed;
            }
        }
    }
    for result in &mut results {
        result.0.sort_by(f64::total_cmp);
    }
    results
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn chat_body() -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": "benchmark the gateway please"}]})
}

fn converse_body() -> Value {
    json!({"messages": [{"role": "user", "content": [{"text": "benchmark the gateway please"}]}],
           "inferenceConfig": {"maxTokens": 64}})
}

#[tokio::main]
async fn main() {
    let rate = env_or("BENCH_RATE", 200);
    let seconds = env_or("BENCH_SECONDS", 10);
    let admissions = env_or("BENCH_ADMISSIONS", 2000);
    // `BENCH_GATEWAY`: another build as the gateway under test (an earlier commit's, for the
    // database's side of a before/after), on a database its own `llmlite migrate` made.
    let (binary, db) = match std::env::var_os("BENCH_GATEWAY") {
        Some(path) => {
            let binary = std::path::PathBuf::from(path);
            let db = TestDb::empty().await;
            migrate_with(&binary, &db.url).await;
            (binary, db)
        }
        None => (this_build(), TestDb::new().await),
    };
    let double = BedrockDouble::start(0).await.unwrap();
    let (gateway, base) = start_gateway(&binary, &db, &double).await;
    let baseline = match std::env::var_os("BENCH_BASELINE") {
        Some(path) => Some(start_gateway(std::path::Path::new(&path), &db, &double).await),
        None => None,
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .unwrap();

    // A key with every limit set, so admission does all its work.
    let limits = json!({"rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000, "max_budget": 1_000_000,
                        "max_parallel_requests": 10_000, "budget_duration": "30d"});
    let mint = |url: String| {
        let request = client
            .post(format!("{url}/key/generate"))
            .bearer_auth(MASTER_KEY)
            .json(&limits);
        async move {
            let minted: Value = request.send().await.unwrap().json().await.unwrap();
            minted
        }
    };
    let minted = mint(base.clone()).await;
    let key = minted["key"].as_str().unwrap().to_owned();

    let direct = client
        .post(format!(
            "{}/model/eu.anthropic.claude-haiku-4-5-20251001-v1:0/converse",
            double.endpoint()
        ))
        .json(&converse_body());
    let through = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat_body());
    // The baseline build, with a key of its own minted alike (one database, so the two builds
    // do not queue on one key's rows): the last stream of phases A and C.
    let mut through_baseline = None;
    let mut master_baseline = None;
    let mut baseline_key = None;
    if let Some((_, url)) = &baseline {
        let key = mint(url.clone()).await["key"].as_str().unwrap().to_owned();
        baseline_key = Some(key.clone());
        through_baseline = Some(
            client
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body()),
        );
        // Its master-key stream too, so both builds carry the same load in phase A.
        master_baseline = Some(
            client
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(MASTER_KEY)
                .json(&chat_body()),
        );
    }
    let with_baseline = |mut streams: Vec<reqwest::RequestBuilder>| {
        streams.extend(through_baseline.iter().map(|b| b.try_clone().unwrap()));
        streams
    };
    // Warm both paths (connections, pools).
    open_loop(
        with_baseline(vec![
            direct.try_clone().unwrap(),
            through.try_clone().unwrap(),
        ]),
        50,
        1,
    )
    .await;

    let master = client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(MASTER_KEY)
        .json(&chat_body());
    let mut streams = with_baseline(vec![
        direct.try_clone().unwrap(),
        through.try_clone().unwrap(),
        master.try_clone().unwrap(),
    ]);
    streams.extend(master_baseline.iter().map(|m| m.try_clone().unwrap()));
    let phase_a = open_loop(streams, rate, seconds).await;
    let rss = peak_rss_mb(gateway.id().unwrap_or(0));

    // LiteLLM cannot keep up with `rate` on this machine, and a saturated Python process would
    // starve the others: it gets a phase of its own at a rate it sustains, next to llmlite at
    // the same rate, so the ratio compares like with like.
    let clients = env_or("BENCH_CLIENTS", 16) as usize;
    let mut phase_b = None;
    let mut litellm = None;
    // Phase C's paths: direct, through llmlite, then LiteLLM and the baseline build when run.
    let mut phase_c_names = vec![
        "direct to the Bedrock double",
        "through llmlite, virtual key",
    ];
    let phase_c = if std::env::var_os("BENCH_LITELLM").is_none() {
        if baseline.is_some() {
            phase_c_names.push(BASELINE_PATH);
        }
        closed_loop(
            &with_baseline(vec![
                direct.try_clone().unwrap(),
                through.try_clone().unwrap(),
            ]),
            clients,
            seconds,
        )
        .await
    } else {
        let litellm_rate = env_or("BENCH_LITELLM_RATE", 20);
        let (child, url) = start_litellm(&double).await;
        litellm = Some(child);
        let via_litellm = client
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth("sk-llmlite-bench-master")
            .json(&chat_body());
        open_loop(vec![via_litellm.try_clone().unwrap()], 5, 2).await;
        let via_litellm_closed = via_litellm.try_clone().unwrap();
        phase_b = Some((
            litellm_rate,
            open_loop(
                vec![
                    direct.try_clone().unwrap(),
                    through.try_clone().unwrap(),
                    via_litellm,
                ],
                litellm_rate,
                seconds,
            )
            .await,
        ));
        phase_c_names.push(LITELLM_PATH);
        if baseline.is_some() {
            phase_c_names.push(BASELINE_PATH);
        }
        closed_loop(
            &with_baseline(vec![
                direct.try_clone().unwrap(),
                through.try_clone().unwrap(),
                via_litellm_closed,
            ]),
            clients,
            seconds,
        )
        .await
    };

    // Phase S: one request at a time, direct and through alternating; the gateway's stages from
    // its `server-timing` header.
    let sequential_n = env_or("BENCH_SEQUENTIAL", 1000) as usize;
    let (seq_direct, seq_through, seq_timings) =
        bench::sequential(&direct, &through, sequential_n, Duration::ZERO).await;
    // The same, each pair `BENCH_SEQUENTIAL_GAP_MS` after the last (default 10): the previous
    // request's settlement, which follows its answer, has landed before the next one's admission
    // (back to back, the next admission can wait for it on the key's row).
    let gap = Duration::from_millis(env_or("BENCH_SEQUENTIAL_GAP_MS", 10));
    let spaced = bench::sequential(&direct, &through, sequential_n, gap).await;

    // Phase T: the same build again with traces (OTLP to a sink in this process) and the
    // Prometheus listener on, one request at a time, alternating with the build above (both
    // off): what telemetry adds, side by side.
    let telemetry =
        telemetry_phase(&client, (&binary, &db, &double), &limits, sequential_n, gap).await;

    // Phase D: requests/s per database CPU-second, 16 clients on one key, then on the 50 keys
    // of one team (every admission and settlement takes the team's row), with
    // pg_stat_statements over each when the server has it loaded.
    // With a baseline build, its own two runs follow, on the same database.
    let pid = gateway.id().unwrap_or(0);
    let mut busy = busy_team(&client, (&base, pid, ""), &db, clients, seconds, &key).await;
    if let (Some((child, url)), Some(key)) = (&baseline, &baseline_key) {
        let at = (url.as_str(), child.id().unwrap_or(0), "baseline build: ");
        busy.extend(busy_team(&client, at, &db, clients, seconds, key).await);
    }

    // Admission plus settlement alone, straight from this process, one pair at a time.
    let mut pairs = Vec::with_capacity(admissions as usize);
    let token = minted["token"].as_str().unwrap().to_owned();
    for n in 0..admissions {
        let request_id = format!("bench-{n}");
        let started = Instant::now();
        let decision: (Option<String>,) = sqlx::query_as(
            "SELECT decision FROM llmlite_admit($1, '{claude-haiku-4-5}', '{0.0004}', NULL, $2, now(), 20,
                                                0.000022, interval '15 minutes', 60)",
        )
        .bind(&token).bind(&request_id).persistent(false).fetch_one(&db.pool).await.unwrap();
        assert_eq!(decision.0.as_deref(), Some("ok"));
        let _: (Option<rust_decimal::Decimal>,) = sqlx::query_as(
            "SELECT llmlite_settle($1, (SELECT key_id FROM litellm_verificationtoken WHERE token = $2),
                                   $2, NULL, NULL, NULL, NULL, 'claude-haiku-4-5', NULL, 20, 10, 0, 0,
                                   0.000077, now(), now(), 'success', NULL, '{}')",
        )
        .bind(&request_id).bind(&token).persistent(false).fetch_one(&db.pool).await.unwrap();
        pairs.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    pairs.sort_by(f64::total_cmp);

    let row = |name: &str, ms: &[f64], failed: usize| {
        println!(
            "| {name} | {} | {failed} | {:.3} | {:.3} |",
            ms.len() + failed,
            percentile(ms, 50.0),
            percentile(ms, 99.0)
        );
    };
    let added = |ms: &[f64], base: &[f64], p: f64| percentile(ms, p) - percentile(base, p);
    println!(
        "\n## Phase A: {rate} requests/s per stream for {seconds} s, interleaved (open loop)\n"
    );
    println!("| path | requests | failed | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    row("direct to the Bedrock double", &phase_a[0].0, phase_a[0].1);
    row(
        "through llmlite, virtual key (admission + settlement)",
        &phase_a[1].0,
        phase_a[1].1,
    );
    row(
        "through llmlite, master key (settlement only)",
        &phase_a[2].0,
        phase_a[2].1,
    );
    println!(
        "\nllmlite added latency, virtual key: p50 {:.3} ms, p99 {:.3} ms",
        added(&phase_a[1].0, &phase_a[0].0, 50.0),
        added(&phase_a[1].0, &phase_a[0].0, 99.0)
    );
    println!(
        "llmlite added latency, master key: p50 {:.3} ms, p99 {:.3} ms",
        added(&phase_a[2].0, &phase_a[0].0, 50.0),
        added(&phase_a[2].0, &phase_a[0].0, 99.0)
    );
    println!(
        "admission + settlement alone ({admissions} pairs, sequential): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&pairs, 50.0),
        percentile(&pairs, 99.0)
    );
    if let Some(before) = phase_a.get(3) {
        row(
            "through the baseline build (BENCH_BASELINE), virtual key",
            &before.0,
            before.1,
        );
        println!(
            "baseline added latency, virtual key: p50 {:.3} ms, p99 {:.3} ms",
            added(&before.0, &phase_a[0].0, 50.0),
            added(&before.0, &phase_a[0].0, 99.0)
        );
    }
    println!("gateway peak RSS after phase A: {rss:.1} MB");
    if let Some((litellm_rate, phase_b)) = &phase_b {
        println!(
            "\n## Phase B: {litellm_rate} requests/s per stream for {seconds} s, interleaved (open loop)\n"
        );
        println!("| path | requests | failed | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|");
        row("direct to the Bedrock double", &phase_b[0].0, phase_b[0].1);
        row("through llmlite, virtual key", &phase_b[1].0, phase_b[1].1);
        row("through the LiteLLM proxy", &phase_b[2].0, phase_b[2].1);
        let ours = added(&phase_b[1].0, &phase_b[0].0, 50.0);
        let theirs = added(&phase_b[2].0, &phase_b[0].0, 50.0);
        println!(
            "\nadded p50: llmlite {ours:.3} ms, LiteLLM {theirs:.3} ms; LiteLLM / llmlite = {:.0}x",
            theirs / ours.max(0.001)
        );
        println!(
            "added p99: llmlite {:.3} ms, LiteLLM {:.3} ms",
            added(&phase_b[1].0, &phase_b[0].0, 99.0),
            added(&phase_b[2].0, &phase_b[0].0, 99.0)
        );
    }
    {
        println!(
            "\n## Phase C: {clients} concurrent clients per path, closed loop, {seconds} s per path in 1 s turns\n"
        );
        println!("| path | requests | failed | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|");
        for (name, (ms, failed)) in phase_c_names.iter().zip(&phase_c) {
            row(name, ms, *failed);
        }
        let path = |name: &str| {
            phase_c_names
                .iter()
                .position(|n| *n == name)
                .and_then(|i| phase_c.get(i))
        };
        let ours = (
            added(&phase_c[1].0, &phase_c[0].0, 50.0),
            added(&phase_c[1].0, &phase_c[0].0, 99.0),
        );
        println!(
            "\nllmlite added: p50 {:.3} ms, p99 {:.3} ms",
            ours.0, ours.1
        );
        if let Some(before) = path(BASELINE_PATH) {
            println!(
                "baseline added: p50 {:.3} ms, p99 {:.3} ms",
                added(&before.0, &phase_c[0].0, 50.0),
                added(&before.0, &phase_c[0].0, 99.0)
            );
        }
        if let Some(theirs) = path(LITELLM_PATH) {
            let theirs = (
                added(&theirs.0, &phase_c[0].0, 50.0),
                added(&theirs.0, &phase_c[0].0, 99.0),
            );
            println!(
                "LiteLLM added: p50 {:.3} ms, p99 {:.3} ms; LiteLLM / llmlite: p50 {:.0}x, p99 {:.0}x",
                theirs.0,
                theirs.1,
                theirs.0 / ours.0.max(0.001),
                theirs.1 / ours.1.max(0.001)
            );
        }
    }
    println!(
        "\n## Phase S: one request at a time, {sequential_n} each, direct and through alternating\n"
    );
    println!(
        "llmlite added, sequential: p50 {:.3} ms, p99 {:.3} ms",
        added(&seq_through, &seq_direct, 50.0),
        added(&seq_through, &seq_direct, 99.0)
    );
    println!("\n| stage (the gateway's `server-timing`) | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, p50, p99) in bench::stage_table(&seq_timings, &seq_through, &seq_direct) {
        println!("| {name} | {p50:.3} | {p99:.3} |");
    }
    println!(
        "\nSpaced, each pair {} ms after the last: llmlite added p50 {:.3} ms, p99 {:.3} ms\n",
        gap.as_millis(),
        added(&spaced.1, &spaced.0, 50.0),
        added(&spaced.1, &spaced.0, 99.0)
    );
    println!("| stage, spaced | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (name, p50, p99) in bench::stage_table(&spaced.2, &spaced.1, &spaced.0) {
        println!("| {name} | {p50:.3} | {p99:.3} |");
    }
    let Telemetry {
        off,
        on,
        exports,
        spans_bytes,
        scraped,
    } = &telemetry;
    println!(
        "\n## Phase T: telemetry off and on, one request at a time, {sequential_n} each, \
         alternating, each pair {} ms after the last\n",
        gap.as_millis()
    );
    println!("| gateway | requests | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    println!(
        "| traces and metrics off | {} | {:.3} | {:.3} |",
        off.len(),
        percentile(off, 50.0),
        percentile(off, 99.0)
    );
    println!(
        "| traces (OTLP, batch export) and Prometheus on | {} | {:.3} | {:.3} |",
        on.len(),
        percentile(on, 50.0),
        percentile(on, 99.0)
    );
    println!(
        "\ntelemetry added: p50 {:.3} ms, p99 {:.3} ms ({exports} OTLP exports, {:.0} KiB of \
         spans received; /metrics counted {scraped} requests)",
        added(on, off, 50.0),
        added(on, off, 99.0),
        *spans_bytes as f64 / 1024.0
    );
    println!(
        "\n## Phase D: {clients} clients, closed loop, {seconds} s: one key, then one team's 50 keys\n"
    );
    println!(
        "| keys | requests | failed | requests/s | PostgreSQL CPU s | requests per PostgreSQL CPU-second | CPU ms per request: PostgreSQL / gateway / load and double | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for phase in &busy {
        let n = phase.latencies.len() as f64;
        println!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.2} / {:.2} / {:.2} | {:.3} | {:.3} |",
            phase.name,
            phase.latencies.len(),
            phase.failed,
            n / seconds as f64,
            phase.db_cpu,
            n / phase.db_cpu.max(0.001),
            1000.0 * phase.db_cpu / n.max(1.0),
            1000.0 * phase.gateway_cpu / n.max(1.0),
            1000.0 * phase.bench_cpu / n.max(1.0),
            percentile(&phase.latencies, 50.0),
            percentile(&phase.latencies, 99.0)
        );
    }
    for phase in &busy {
        if phase.statements.is_empty() {
            println!("\npg_stat_statements is not loaded on this server (see BENCHMARKS.md)");
            break;
        }
        println!("\npg_stat_statements, {}:\n", phase.name);
        println!("| calls | mean ms | total ms | statement |");
        println!("|---|---|---|---|");
        for (calls, mean, total, query) in &phase.statements {
            println!(
                "| {calls} | {mean:.4} | {total:.1} | `{}` |",
                query.replace('|', "\\|")
            );
        }
    }
    println!(
        "gateway peak RSS at the end: {:.1} MB",
        peak_rss_mb(gateway.id().unwrap_or(0))
    );
    drop(litellm);
    drop(baseline);
    drop(gateway);
}

/// Phase T's figures: latencies (ms, sorted) with telemetry off and on, what the OTLP sink
/// received, and the request count the Prometheus listener reported.
struct Telemetry {
    off: Vec<f64>,
    on: Vec<f64>,
    exports: usize,
    spans_bytes: usize,
    scraped: f64,
}

/// Phase T: a second gateway of `binary`, with traces exported to an OTLP/HTTP sink in this
/// process and Prometheus' listener on, and one of the same build with both off; `n` requests
/// each, alternating (half the pairs each way round), `gap` apart.
async fn telemetry_phase(
    client: &reqwest::Client,
    (binary, db, double): (&std::path::Path, &TestDb, &BedrockDouble),
    limits: &Value,
    n: usize,
    gap: Duration,
) -> Telemetry {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (exports, bytes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (counted, sized) = (Arc::clone(&exports), Arc::clone(&bytes));
    let sink = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            counted.fetch_add(1, Ordering::Relaxed);
            sized.fetch_add(body.len(), Ordering::Relaxed);
            async { "" }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });
    let metrics = format!("127.0.0.1:{}", free_port());
    let quiet = [("LLMLITE_DB_POOL_SIZE", "8"), ("RUST_LOG", "error")];
    let (off_gateway, off_url) = spawn_serve(
        binary,
        &db.url,
        &double.endpoint(),
        &[quiet[0], quiet[1], ("OTEL_SDK_DISABLED", "true")],
    )
    .await;
    let (on_gateway, on_url) = spawn_serve(
        binary,
        &db.url,
        &double.endpoint(),
        &[
            quiet[0],
            quiet[1],
            ("LLMLITE_METRICS_ADDR", &metrics),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &sink_url),
        ],
    )
    .await;
    let mut requests = Vec::new();
    for url in [&off_url, &on_url] {
        let minted: Value = client
            .post(format!("{url}/key/generate"))
            .bearer_auth(MASTER_KEY)
            .json(limits)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        requests.push(
            client
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(minted["key"].as_str().unwrap())
                .json(&chat_body()),
        );
    }
    // Warm both.
    bench::sequential(&requests[0], &requests[1], 50, Duration::ZERO).await;
    // Half the pairs off first, half on first: neither gains from its place in the pair.
    let half = n / 2;
    let (mut off, mut on, _) = bench::sequential(&requests[0], &requests[1], half, gap).await;
    let (on_first, off_second, _) =
        bench::sequential(&requests[1], &requests[0], n - half, gap).await;
    off.extend(off_second);
    on.extend(on_first);
    off.sort_by(f64::total_cmp);
    on.sort_by(f64::total_cmp);
    // The batch exporter sends every 5 s: wait for it, so the figures show spans went out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let text = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scraped = text
        .lines()
        .filter(|l| l.starts_with("llmlite_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    drop(off_gateway);
    drop(on_gateway);
    Telemetry {
        off,
        on,
        exports: exports.load(Ordering::Relaxed),
        spans_bytes: bytes.load(Ordering::Relaxed),
        scraped,
    }
}

/// The LiteLLM proxy on the same double: a `bedrock/converse/` model whose runtime endpoint is
/// the double, no database, the local cost map.
async fn start_litellm(double: &BedrockDouble) -> (Child, String) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("llmlite-bench-litellm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: claude-haiku-4-5\n    litellm_params:\n      model: bedrock/converse/eu.anthropic.claude-haiku-4-5-20251001-v1:0\n      aws_region_name: eu-west-2\n      aws_bedrock_runtime_endpoint: {}\n      aws_access_key_id: LLMLITEBENCH\n      aws_secret_access_key: llmlite-bench-secret\ngeneral_settings:\n  master_key: sk-llmlite-bench-master\n",
            double.endpoint()
        ),
    )
    .unwrap();
    let child = Command::new("litellm")
        .args([
            "--config",
            config.to_str().unwrap(),
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        // LiteLLM takes `DATABASE_URL` for its own (Prisma, whose engines it cannot download
        // here): it runs without a database, as documented.
        .env_remove("DATABASE_URL")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .env("LITELLM_LOG", "ERROR")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("litellm on PATH: pip install \"litellm[proxy]\"");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health/liveliness")).await;
    (child, base)
}
