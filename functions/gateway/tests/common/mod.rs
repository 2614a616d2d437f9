//! Running `llmlite dev` as a developer would, for the binary's tests.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "shared by test binaries that each use part of it"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const LLMLITE: &str = env!("CARGO_BIN_EXE_llmlite");

/// Generous bounds so a hung process fails the test instead of hanging CI; not timing claims.
pub const STARTUP_LIMIT: Duration = Duration::from_secs(120);
pub const EXIT_LIMIT: Duration = Duration::from_secs(60);

/// A running `llmlite dev`, with what it printed.
pub struct Dev {
    pub child: Child,
    pub addr: String,
    pub cluster_dir: PathBuf,
    pub master_key: String,
    pub curl: String,
    /// The throwaway cluster's database URL (for `llmlite rollup` and friends).
    pub database_url: String,
}

impl Dev {
    /// Starts `llmlite dev` with no configuration at all.
    pub async fn start() -> Dev {
        Dev::start_with(&[]).await
    }

    /// Starts `llmlite dev` with `env` added (nothing else configured).
    pub async fn start_with(env: &[(&str, &str)]) -> Dev {
        Dev::start_logging(env, Stdio::inherit()).await
    }

    /// Starts `llmlite dev` with `env` added, its log lines (stderr) going to `log`.
    pub async fn start_logging(env: &[(&str, &str)], log: Stdio) -> Dev {
        Dev::start_listening("127.0.0.1:0", env, log).await
    }

    /// Starts `llmlite dev` on `listen` (an address chosen beforehand, which a redirect URI
    /// names, say), with `env` added.
    #[allow(
        dead_code,
        reason = "not every test binary that shares this module uses it"
    )]
    pub async fn start_listening(listen: &str, env: &[(&str, &str)], log: Stdio) -> Dev {
        let mut child = Command::new(LLMLITE)
            .args(["dev", "--listen", listen])
            .envs(env.iter().copied())
            .env_remove("DATABASE_URL")
            .env_remove("LITELLM_MASTER_KEY")
            .env_remove("LITELLM_MASTER_KEY_SECRET_ARN")
            .env_remove("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            .env("RUST_LOG", "warn")
            .env(
                "LLMLITE_AUDIT_DIR",
                std::env::temp_dir().join(format!("llmlite-audit-dev-{}", std::process::id())),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut addr, mut cluster_dir, mut master_key, mut curl) = (None, None, None, None);
        let mut database_url = None;
        tokio::time::timeout(STARTUP_LIMIT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let trimmed = line.trim();
                if let Some(rest) = line.strip_prefix("llmlite dev: listening on http://") {
                    addr = Some(rest.trim().to_owned());
                } else if let Some(rest) = trimmed.strip_prefix("database:   throwaway cluster in ")
                {
                    cluster_dir = rest.split(' ').next().map(PathBuf::from);
                    database_url = rest
                        .split(" at ")
                        .nth(1)
                        .and_then(|url| url.split(' ').next())
                        .map(str::to_owned);
                } else if let Some(rest) = trimmed.strip_prefix("master key: ") {
                    master_key = Some(rest.to_owned());
                } else if trimmed.starts_with("curl -s") && trimmed.contains("/v1/chat/completions")
                {
                    curl = Some(trimmed.to_owned());
                } else if line.starts_with("Stop with Ctrl-C") {
                    break;
                }
            }
        })
        .await
        .expect("llmlite dev did not start");
        Dev {
            child,
            addr: addr.expect("listening address printed"),
            cluster_dir: cluster_dir.expect("cluster directory printed"),
            master_key: master_key.expect("master key printed"),
            curl: curl.expect("a chat curl printed"),
            database_url: database_url.expect("the database URL printed"),
        }
    }

    /// Creates team `team` and mints a key of it with `models` through the admin API (master
    /// key): the raw key.
    pub async fn team_key(&self, client: &reqwest::Client, team: &str, models: &[&str]) -> String {
        let base = format!("http://{}", self.addr);
        let made = client
            .post(format!("{base}/team/new"))
            .bearer_auth(&self.master_key)
            .json(&serde_json::json!({"team_id": team}))
            .send()
            .await
            .unwrap();
        assert!(made.status().is_success(), "{}", made.status());
        let minted: serde_json::Value = client
            .post(format!("{base}/key/generate"))
            .bearer_auth(&self.master_key)
            .json(&serde_json::json!({"team_id": team, "models": models}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        minted["key"].as_str().unwrap().to_owned()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(EXIT_LIMIT, self.child.wait())
            .await
            .expect("llmlite dev did not stop on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Sends `body` to `path` of the gateway at `base` with `key` over a raw socket, reads until
/// `marker` has arrived, and hangs up; what was received.
pub async fn hang_up_after(base: &str, key: &str, path: &str, body: &str, marker: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(marker) {
        let n = socket.read(&mut buffer).await.unwrap();
        assert!(n > 0, "the stream ended before its first delta");
        received.extend_from_slice(&buffer[..n]);
    }
    drop(socket);
    String::from_utf8_lossy(&received).into_owned()
}

/// Runs the SDK check `tests/compat/{script}` against a fresh `llmlite dev`, with
/// `LLMLITE_BASE_URL` its address followed by `path` and `LLMLITE_KEY` its master key, and
/// checks that it exits cleanly saying `N passed, 0 failed`.
#[allow(dead_code, reason = "each test binary uses the helpers it needs")]
pub async fn sdk_check(script: &str, path: &str) {
    let dev = Dev::start().await;
    let script = format!("{}/../../tests/compat/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new("python3")
        .arg(script)
        .env("LLMLITE_BASE_URL", format!("http://{}{path}", dev.addr))
        .env("LLMLITE_KEY", &dev.master_key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    dev.stop().await;
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

/// Whether selenium and Debian's Chromium WebDriver are here (CI installs them; elsewhere the
/// test says how to get them and is skipped).
#[allow(dead_code, reason = "each test binary uses the helpers it needs")]
pub async fn browser_installed() -> bool {
    llmlite_tests::tool_installed("python3", &["-c", "import selenium"], "selenium").await
        && llmlite_tests::tool_installed(
            "chromedriver",
            &["--version"],
            "selenium, and apt-get install chromium chromium-driver",
        )
        .await
}

/// `llmlite dev` with company sign-in against a provider started for it, on a port chosen
/// first (the redirect URI names it), with `extra` variables: it, the provider and its base
/// URL. `None` when the test is skipped (no browser, no Node.js outside CI).
#[allow(dead_code, reason = "each test binary uses the helpers it needs")]
pub async fn company_dev(
    extra: &[(&str, &str)],
) -> Option<(Dev, llmlite_tests::oidc::OidcProvider, String)> {
    if !browser_installed().await {
        return None;
    }
    let listen = format!("127.0.0.1:{}", llmlite_tests::free_port());
    let base = format!("http://{listen}");
    let provider = llmlite_tests::oidc::OidcProvider::start(
        &format!("{base}/ui/oidc/callback"),
        &format!("{base}/ui/login"),
    )
    .await?;
    let mut env = llmlite_tests::oidc::sign_in_env(&provider, &base);
    env.extend_from_slice(extra);
    let dev = Dev::start_listening(&listen, &env, Stdio::inherit()).await;
    Some((dev, provider, base))
}
