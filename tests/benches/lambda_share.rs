//! The Lambda CPU-share benchmark (BENCHMARKS.md): the real `chat` and `chat-stream` function
//! binaries run as Lambda runs them, through the loopback Runtime API double, under a cgroup CPU
//! quota equal to the share of one vCPU that Lambda gives each memory size (1,769 MB is one
//! vCPU). PostgreSQL, the Bedrock double and this process stay outside the quota.
//!
//! Run (as root: the quota is a cgroup of the `cpu` controller):
//! `cargo build --release -p chat -p chat-stream && cargo bench -p llmlite-tests --bench lambda_share`
//!
//! Per memory size it measures:
//! - init: from the process's start to its first `/next` (Lambda's Init phase), wall time and
//!   the CPU time the process used (`/proc/<pid>/task/*/schedstat`);
//! - the first request after init, end to end through the Runtime API;
//! - warm requests, sequential, `BENCH_WARM_GAP_MS` apart (default 100, one quota period): each
//!   invocation's time from being queued to its response, against a direct call to the double
//!   in the same loop ("added" = the difference). With a gap of 0 the requests come back to
//!   back and the loop itself spends the quota, which one environment's real traffic (one
//!   request at a time, each seconds long on Bedrock) does not;
//! - the added time to the first content delta of a streamed answer (`chat-stream`);
//! - the PII guard's time on a 100 KB prompt, from the answer's `server-timing` header.
//!
//! Settings: `BENCH_SIZES` (MB, default `128,256,512,1024,1769`), `BENCH_COLD_RUNS` (default 3),
//! `BENCH_WARM` (sequential requests per size, default 200), `BENCH_CFS_PERIOD_US` (the quota's
//! period, default 100000, Linux's default), `BENCH_CHAT` and `BENCH_CHAT_STREAM` (other builds of
//! the two functions, for a before/after). Without a writable cgroup it says so and stops.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use llmlite_tests::TestGateway;
use llmlite_tests::bench::{percentile, stage};
use llmlite_tests::lambda_runtime::{Part, RuntimeApi, has_content_delta, now_ms};
use serde_json::{Value, json};

/// Lambda gives a function one full vCPU at 1,769 MB, and CPU in proportion to memory.
const ONE_VCPU_MB: f64 = 1769.0;
const CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// A release binary of this build, beside the bench in the target directory, or the one the
/// environment names (`BENCH_CHAT`, `BENCH_CHAT_STREAM`: another build's, for a before/after).
fn release_binary(name: &str) -> PathBuf {
    let variable = format!("BENCH_{}", name.replace('-', "_").to_uppercase());
    if let Some(path) = std::env::var_os(variable) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let binary = exe.parent().and_then(|d| d.parent()).unwrap().join(name);
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p chat -p chat-stream ({})",
        binary.display()
    );
    binary
}

/// A cgroup (v1 `cpu` controller) whose quota is `memory_mb`'s share of one CPU.
struct Quota {
    dir: PathBuf,
}

impl Quota {
    fn new(memory_mb: u64, period_us: u64) -> std::io::Result<Quota> {
        let dir = Path::new(CGROUP_ROOT).join(format!("llmlite-bench-{memory_mb}"));
        if !dir.exists() {
            std::fs::create_dir(&dir)?;
        }
        let quota = ((memory_mb as f64 / ONE_VCPU_MB) * period_us as f64).round() as u64;
        // Lower the quota before the period: the kernel refuses a quota the period cannot hold.
        std::fs::write(dir.join("cpu.cfs_quota_us"), "-1")?;
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            quota.min(period_us).max(1000).to_string(),
        )?;
        Ok(Quota { dir })
    }

    /// A shell that moves itself into the cgroup, then becomes the binary (its last argument):
    /// the function runs under the quota from its first instruction.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec \"$0\"",
                self.dir.display()
            ),
        ]
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// CPU time used so far by every thread of `pid`, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    let mut ns: u64 = 0;
    for task in tasks.flatten() {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 / 1e6
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The ALB chat fixture with `key` and `body`.
fn alb_event(key: &str, body: &Value) -> Value {
    let mut event = fixture("chat-completion.json");
    event["headers"]["authorization"] = Value::String(format!("Bearer {key}"));
    event["body"] = Value::String(body.to_string());
    event
}

/// The streaming API's fixture with `key` and `body`.
fn streaming_event(key: &str, body: &Value) -> Value {
    let mut event = fixture("apigw-chat-completion-stream.json");
    for name in ["authorization", "Authorization"] {
        if event["headers"].get(name).is_some() {
            event["headers"][name] = Value::String(format!("Bearer {key}"));
        }
    }
    if let Some(multi) = event.get_mut("multiValueHeaders")
        && let Some(obj) = multi.as_object_mut()
    {
        for name in ["authorization", "Authorization"] {
            if obj.contains_key(name) {
                obj.insert(name.into(), json!([format!("Bearer {key}")]));
            }
        }
    }
    event["body"] = Value::String(body.to_string());
    event
}

fn chat_body(prompt: &str) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": prompt}]})
}

/// One buffered invocation: milliseconds from being queued to the whole response, and the
/// response document.
async fn invoke(api: &RuntimeApi, event: Value) -> (f64, Value) {
    let started = Instant::now();
    let mut invoked = api.invoke(event, now_ms() + 60_000);
    let (_, body) = invoked.collect(Duration::from_secs(60)).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let document: Value = serde_json::from_slice(&body).expect("an ALB response document");
    assert_eq!(document["statusCode"], 200, "{document}");
    (ms, document)
}

/// One direct call to the double, in milliseconds.
async fn direct(client: &reqwest::Client, endpoint: &str) -> f64 {
    let started = Instant::now();
    let response = client
        .post(format!(
            "{endpoint}/model/eu.anthropic.claude-haiku-4-5-20251001-v1:0/converse"
        ))
        .json(
            &json!({"messages": [{"role": "user", "content": [{"text": "benchmark"}]}],
                      "inferenceConfig": {"maxTokens": 64}}),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    response.bytes().await.unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

/// Milliseconds to the first event of a direct ConverseStream call.
async fn direct_first_event(client: &reqwest::Client, endpoint: &str) -> f64 {
    let started = Instant::now();
    let mut response = client
        .post(format!(
            "{endpoint}/model/eu.anthropic.claude-haiku-4-5-20251001-v1:0/converse-stream"
        ))
        .json(
            &json!({"messages": [{"role": "user", "content": [{"text": "benchmark the stream"}]}],
                      "inferenceConfig": {"maxTokens": 64}}),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let first = response.chunk().await.unwrap();
    assert!(first.is_some());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    while response.chunk().await.unwrap().is_some() {}
    ms
}

/// Milliseconds from queueing a streamed invocation to its first content delta.
async fn first_delta(api: &RuntimeApi, event: Value) -> f64 {
    let started = Instant::now();
    let mut invoked = api.invoke(event, now_ms() + 60_000);
    let mut bytes = Vec::new();
    let mut first = None;
    loop {
        match invoked.part(Duration::from_secs(60)).await {
            Part::Chunk(chunk) => {
                bytes.extend_from_slice(&chunk);
                if first.is_none() && has_content_delta(&bytes) {
                    first = Some(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Part::Head(_) => {}
            Part::End => break,
            Part::Error(e) => panic!("{e}"),
        }
    }
    first.expect("a content delta")
}

/// Clean prose, `bytes` long: what the PII guard scans in full and finds nothing in.
fn prose(bytes: usize) -> String {
    let sentence = "The quarterly planning review covers the roadmap, the staffing plan and the \
                    open risks of the migration, with owners and dates for each item. ";
    sentence.repeat(bytes / sentence.len() + 1)[..bytes].to_owned()
}

#[derive(Default)]
struct Row {
    size: u64,
    init_ms: Vec<f64>,
    init_cpu_ms: Vec<f64>,
    first_ms: Vec<f64>,
    /// The first request's `server-timing`: where its time went.
    first_timing: Vec<String>,
    warm_added_p50: f64,
    warm_added_p99: f64,
    ttft_added_p50: f64,
    pii_100k_p50: f64,
}

#[tokio::main]
async fn main() {
    let period = env_or("BENCH_CFS_PERIOD_US", 100_000);
    let sizes: Vec<u64> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "128,256,512,1024,1769".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cold_runs = env_or("BENCH_COLD_RUNS", 3);
    let warm = env_or("BENCH_WARM", 200) as usize;
    let gap = Duration::from_millis(env_or("BENCH_WARM_GAP_MS", 100));
    if let Err(e) = Quota::new(sizes[0], period) {
        println!(
            "lambda_share: no writable cgroup at {CGROUP_ROOT} ({e}); run as root on a machine \
             with the cgroup v1 cpu controller"
        );
        return;
    }
    let chat = release_binary("chat");
    let chat_stream = release_binary("chat-stream");
    let gw = TestGateway::start().await;
    let key = gw
        .mint_raw_key(json!({"rpm_limit": 1_000_000, "tpm_limit": 1_000_000_000,
                              "max_budget": 1_000_000, "max_parallel_requests": 10_000,
                              "budget_duration": "30d"}))
        .await;
    let client = reqwest::Client::new();
    let endpoint = gw.double.endpoint();
    let small = chat_body("benchmark the gateway please");
    let large = chat_body(&prose(100 * 1024));
    let mut rows = Vec::new();

    for &size in &sizes {
        let quota = Quota::new(size, period).unwrap();
        let wrapper = quota.wrapper();
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let memory = size.to_string();
        let env = [("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.as_str())];
        let mut row = Row {
            size,
            ..Row::default()
        };
        for run in 0..cold_runs {
            let api = RuntimeApi::start().await;
            let started = Instant::now();
            let mut function = api.spawn_via(&wrapper, chat.to_str().unwrap(), &gw, &env);
            let pid = function.id().unwrap();
            let ready = api
                .first_next(Duration::from_secs(60))
                .await
                .expect("the function reached /next");
            let init_cpu = cpu_ms(pid);
            row.init_ms
                .push(ready.duration_since(started).as_secs_f64() * 1000.0);
            row.init_cpu_ms.push(init_cpu);
            let (first, document) = invoke(&api, alb_event(&key, &small)).await;
            row.first_ms.push(first);
            row.first_timing.push(
                document["headers"]["server-timing"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            );
            assert!(api.extension_done(1, Duration::from_secs(30)).await);
            if run == 0 {
                let mut through = Vec::with_capacity(warm);
                let mut straight = Vec::with_capacity(warm);
                for i in 0..warm {
                    // Spaced out: a Lambda environment serves one request at a time, each
                    // waiting seconds on Bedrock, so its quota is not spent back to back.
                    tokio::time::sleep(gap).await;
                    straight.push(direct(&client, &endpoint).await);
                    through.push(invoke(&api, alb_event(&key, &small)).await.0);
                    assert!(
                        api.extension_done(i as u32 + 2, Duration::from_secs(30))
                            .await
                    );
                }
                let (through, straight) = (sorted(through), sorted(straight));
                row.warm_added_p50 = percentile(&through, 50.0) - percentile(&straight, 50.0);
                row.warm_added_p99 = percentile(&through, 99.0) - percentile(&straight, 99.0);
                let mut pii = Vec::new();
                for i in 0..20 {
                    let (_, document) = invoke(&api, alb_event(&key, &large)).await;
                    // A build without `server-timing` (before issue 27) has no figure here.
                    if let Some(ms) = document["headers"]["server-timing"]
                        .as_str()
                        .and_then(|timing| stage(timing, "pii"))
                    {
                        pii.push(ms);
                    }
                    assert!(
                        api.extension_done((warm + 2 + i) as u32, Duration::from_secs(30))
                            .await
                    );
                }
                row.pii_100k_p50 = percentile(&sorted(pii), 50.0);
            }
            let _ = function.kill().await;
        }
        // The streamed answer's first delta, through chat-stream.
        let api = RuntimeApi::start().await;
        let mut function = api.spawn_via(&wrapper, chat_stream.to_str().unwrap(), &gw, &env);
        let stream_body = json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": true,
                                 "messages": [{"role": "user", "content": "benchmark the stream"}]});
        let mut through = Vec::new();
        let mut straight = Vec::new();
        for i in 0..30u32 {
            straight.push(direct_first_event(&client, &endpoint).await);
            through.push(first_delta(&api, streaming_event(&key, &stream_body)).await);
            assert!(api.extension_done(i + 1, Duration::from_secs(30)).await);
        }
        row.ttft_added_p50 =
            percentile(&sorted(through), 50.0) - percentile(&sorted(straight), 50.0);
        let _ = function.kill().await;
        drop(quota);
        println!(
            "{size} MB: init {:?} ms (CPU {:?} ms), first request {:?} ms, warm added p50 {:.2} \
             p99 {:.2} ms, first delta added p50 {:.2} ms, PII on 100 KB p50 {:.3} ms",
            row.init_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
            row.init_cpu_ms
                .iter()
                .map(|v| v.round())
                .collect::<Vec<_>>(),
            row.first_ms.iter().map(|v| v.round()).collect::<Vec<_>>(),
            row.warm_added_p50,
            row.warm_added_p99,
            row.ttft_added_p50,
            row.pii_100k_p50
        );
        for timing in &row.first_timing {
            println!("{size} MB first request server-timing: {timing}");
        }
        rows.push(row);
    }

    let range = |v: &[f64]| {
        let v = sorted(v.to_vec());
        match (v.first(), v.last()) {
            (Some(lo), Some(hi)) if (hi - lo).abs() < 0.5 => format!("{lo:.0}"),
            (Some(lo), Some(hi)) => format!("{lo:.0}–{hi:.0}"),
            _ => "-".into(),
        }
    };
    println!(
        "\n| memory | CPU share | init ms | init CPU ms | first request ms | warm added p50 ms | warm added p99 ms | first delta added p50 ms | PII 100 KB p50 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} MB | {:.0}% | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.3} |",
            row.size,
            (row.size as f64 / ONE_VCPU_MB * 100.0).min(100.0),
            range(&row.init_ms),
            range(&row.init_cpu_ms),
            range(&row.first_ms),
            row.warm_added_p50,
            row.warm_added_p99,
            row.ttft_added_p50,
            row.pii_100k_p50
        );
    }
}
