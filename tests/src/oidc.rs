//! A real OpenID Provider for the sign-in tests: npm's `oidc-provider` on the machine's Node.js
//! (`tests/oidc/provider.mjs`), on loopback, with accounts alice (group `llm-admins`), bob
//! (`developers`) and carol (`developers`, `data`), and control routes to change an account, make
//! the next ID token bad in a chosen way, and read what the relying party did. A browser-less
//! client that walks the whole sign-in over real HTTP ([`Walk`]) is here too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The client the provider knows the gateway as.
pub const CLIENT_ID: &str = "llmlite";
pub const CLIENT_SECRET: &str = "oidc-test-client-secret-0123456789";

fn folder() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/oidc"))
}

/// `npm ci` in `tests/oidc` once per test binary, when its packages are not there yet.
async fn installed() -> bool {
    static DONE: tokio::sync::OnceCell<bool> = tokio::sync::OnceCell::const_new();
    *DONE
        .get_or_init(|| async {
            if folder().join("node_modules/oidc-provider").is_dir() {
                return true;
            }
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(folder())
                .status()
                .await
                .is_ok_and(|s| s.success())
        })
        .await
}

/// The running provider; killed when dropped.
pub struct OidcProvider {
    child: Child,
    /// `http://127.0.0.1:<port>`, exactly as its discovery document names it.
    pub issuer: String,
    client: reqwest::Client,
}

impl OidcProvider {
    /// Starts the provider with the gateway's redirect URI and post-logout URI; `None` (the
    /// test is skipped) only outside CI when Node.js is missing.
    pub async fn start(redirect_uri: &str, post_logout_uri: &str) -> Option<Self> {
        if !crate::tool_installed(
            "node",
            &["--version"],
            "nodejs (apt-get install nodejs npm)",
        )
        .await
        {
            return None;
        }
        assert!(
            installed().await,
            "npm ci in tests/oidc failed: the OpenID Provider cannot run"
        );
        let mut child = Command::new("node")
            .arg(folder().join("provider.mjs"))
            .args(["--port", "0", "--client-id", CLIENT_ID])
            .args(["--client-secret", CLIENT_SECRET])
            .args(["--redirect-uri", redirect_uri])
            .args(["--post-logout-redirect-uri", post_logout_uri])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/oidc/provider.mjs");
        let stdout = child.stdout.take().expect("the provider's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(issuer) = line.strip_prefix("oidc-provider ready ") {
                    return Some(issuer.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("the OpenID Provider did not say it was ready");
        Some(OidcProvider {
            child,
            issuer,
            client: reqwest::Client::new(),
        })
    }

    async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let response = self
            .client
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .expect("the provider's control route");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("JSON from the control route")
    }

    /// Changes accounts: `{"bob": {"groups": [...], "disabled": true}}`.
    pub async fn accounts(&self, change: serde_json::Value) {
        self.control("/__test/accounts", change).await;
    }

    /// Makes the next ID token bad: `wrong_key`, `wrong_audience`, `expired`, `nonce` or
    /// `wrong_issuer`.
    pub async fn tamper(&self, mode: &str) {
        self.control("/__test/tamper", serde_json::json!({ "mode": mode }))
            .await;
    }

    /// What the relying party did: code exchanges, refreshes, end-session calls.
    pub async fn log(&self) -> serde_json::Value {
        self.client
            .get(format!("{}/__test/log", self.issuer))
            .send()
            .await
            .expect("the provider's log")
            .json()
            .await
            .expect("JSON log")
    }

    /// Stops it now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A browser without a browser: follows redirects by hand over real HTTP and keeps cookies by
/// name (everything here is on 127.0.0.1, and no two cookies share a name).
pub struct Walk {
    client: reqwest::Client,
    cookies: Mutex<BTreeMap<String, String>>,
    /// Sent as `X-Forwarded-For`, as a load balancer would.
    pub address: String,
}

/// One answer: status, where it sends the browser next, and the body.
#[derive(Debug)]
pub struct Step {
    pub url: String,
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Default for Walk {
    fn default() -> Self {
        Walk::new()
    }
}

impl Walk {
    pub fn new() -> Self {
        Walk {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            cookies: Mutex::new(BTreeMap::new()),
            address: "198.51.100.10".to_owned(),
        }
    }

    /// The `Cookie` header value.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .expect("cookies")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.lock().expect("cookies").get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies
            .lock()
            .expect("cookies")
            .insert(name.to_owned(), value.to_owned());
    }

    pub fn forget(&self, name: &str) {
        self.cookies.lock().expect("cookies").remove(name);
    }

    fn keep(&self, response: &reqwest::Response) {
        let mut jar = self.cookies.lock().expect("cookies");
        for value in response.headers().get_all("set-cookie") {
            let Ok(text) = value.to_str() else { continue };
            let Some((name, rest)) = text.split_once('=') else {
                continue;
            };
            let value = rest.split(';').next().unwrap_or("");
            let gone = text.to_ascii_lowercase().contains("max-age=0")
                || text
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            if gone || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Step {
        let response = request
            .header("cookie", self.cookie_header())
            .header("x-forwarded-for", &self.address)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        self.keep(&response);
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| absolute(url, l));
        let body = response.text().await.unwrap_or_default();
        Step {
            url: url.to_owned(),
            status,
            location,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Step {
        self.send(self.client.get(url), url).await
    }

    pub async fn post_form(&self, url: &str, pairs: &[(&str, &str)]) -> Step {
        let body = serde_urlencoded::to_string(pairs).expect("a form");
        self.send(
            self.client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body),
            url,
        )
        .await
    }

    /// Follows redirects from `step` while `more` says to, at most 20; the last step.
    pub async fn follow(&self, mut step: Step, more: impl Fn(&str) -> bool) -> Step {
        for _ in 0..20 {
            match &step.location {
                Some(next) if (300..400).contains(&step.status) && more(next) => {
                    let next = next.clone();
                    step = self.get(&next).await;
                }
                _ => break,
            }
        }
        step
    }

    /// Signs in at the gateway `base` as `account` through the provider at `issuer`: every
    /// step up to the gateway's callback, which is not followed. The callback's URL.
    pub async fn to_callback(&self, base: &str, issuer: &str, account: &str) -> String {
        let started = self.get(&format!("{base}/ui/oidc/start")).await;
        assert_eq!(started.status, 303, "{started:?}");
        let at_provider = self.follow(started, |url| url.starts_with(issuer)).await;
        // The provider's sign-in form.
        let form = if at_provider.status == 200 {
            at_provider
        } else {
            panic!("expected the provider's sign-in form, got {at_provider:?}")
        };
        let action = form
            .body
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the sign-in form's action");
        let posted = self
            .post_form(
                &absolute(&form.url, &action.replace("&amp;", "&")),
                &[("login", account), ("password", "any")],
            )
            .await;
        let back = self.follow(posted, |url| url.starts_with(issuer)).await;
        let callback = back
            .location
            .clone()
            .unwrap_or_else(|| panic!("the provider did not send the browser back: {back:?}"));
        assert!(
            callback.starts_with(&format!("{base}/ui/oidc/callback")),
            "{callback}"
        );
        callback
    }

    /// A whole sign-in: the callback's answer (200 with a session, or the refusal).
    pub async fn sign_in(&self, base: &str, issuer: &str, account: &str) -> Step {
        let callback = self.to_callback(base, issuer, account).await;
        self.get(&callback).await
    }
}

/// `location` made absolute against `base`.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{location}")
    }
}

/// A gateway with company sign-in against a provider started for it, on a port chosen first
/// (the redirect URI names it): the gateway, the provider and the gateway's base URL. `extra`
/// adds variables (`LLMLITE_OIDC_ROLE_MAP`, say). `None` when the test is skipped.
pub async fn company_gateway(
    extra: &[(&str, &str)],
) -> Option<(crate::TestGateway, OidcProvider, String)> {
    company_gateway_via(extra, None).await
}

/// [`company_gateway`], its database reached through `via` (an [`crate::Outage`]'s authority).
pub async fn company_gateway_via(
    extra: &[(&str, &str)],
    via: Option<&str>,
) -> Option<(crate::TestGateway, OidcProvider, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let provider = OidcProvider::start(
        &format!("{base}/ui/oidc/callback"),
        &format!("{base}/ui/login"),
    )
    .await?;
    let mut env = sign_in_env(&provider, &base);
    env.extend_from_slice(extra);
    let gateway = crate::TestGateway::start_bound(listener, &env, via).await;
    Some((gateway, provider, base))
}

/// The variables that point a gateway at `provider`, as `base`.
pub fn sign_in_env<'a>(provider: &'a OidcProvider, base: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("LLMLITE_OIDC_ISSUER", provider.issuer.as_str()),
        ("LLMLITE_OIDC_CLIENT_ID", CLIENT_ID),
        ("LLMLITE_OIDC_CLIENT_SECRET", CLIENT_SECRET),
        ("LLMLITE_PUBLIC_URL", base),
    ]
}

/// `text` percent-encoded for a query value.
pub fn encode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)])
        .map(|s| s.trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}
