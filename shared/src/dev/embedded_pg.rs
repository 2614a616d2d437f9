//! A throwaway PostgreSQL cluster for `llmlite dev` and the tests, made from the server binaries
//! already on the machine (`initdb` and `postgres` on `PATH`, or Debian's
//! `/usr/lib/postgresql/<version>/bin`).
//!
//! The server runs under a small shell supervisor that holds the read end of a pipe from this
//! process. When this process closes it (a clean stop, a crash, even `kill -9`), the supervisor
//! stops the server and deletes the cluster's directory, so no cluster outlives its owner.
//! `initdb` refuses to run as root: as root, the cluster belongs to the `postgres` user (or
//! `nobody`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tokio::process::{Child, ChildStdin, Command};

/// The superuser the cluster is created with.
pub const SUPERUSER: &str = "llmlite";

const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPgError {
    #[error(
        "PostgreSQL server binaries not found: install them (Debian: `apt-get install postgresql`) or set DATABASE_URL"
    )]
    BinariesNotFound,
    #[error(
        "running as root, and neither a `postgres` nor a `nobody` user exists to own the cluster (initdb refuses root); set DATABASE_URL instead"
    )]
    NoUnprivilegedUser,
    #[error("{step}: {detail}")]
    Failed { step: &'static str, detail: String },
}

fn failed(step: &'static str, detail: impl ToString) -> EmbeddedPgError {
    EmbeddedPgError::Failed {
        step,
        detail: detail.to_string(),
    }
}

/// A running throwaway cluster. Dropping it (or calling [`EmbeddedPostgres::stop`]) stops the
/// server and removes its directory.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    port: u16,
    lifeline: Option<ChildStdin>,
    supervisor: Child,
}

/// Supervisor: start the server, wait for our pipe to close, stop the server fast, clean up.
const SUPERVISOR: &str = r#"
bin="$1"; dir="$2"; port="$3"
"$bin/postgres" -D "$dir/data" -p "$port" -h 127.0.0.1 -k "$dir" \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
  -c max_connections=300 >"$dir/server.log" 2>&1 &
pid=$!
cat >/dev/null
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir"
"#;

impl EmbeddedPostgres {
    /// Creates and starts a cluster, and waits until it accepts connections.
    pub async fn start() -> Result<Self, EmbeddedPgError> {
        let bin = find_server_binaries().ok_or(EmbeddedPgError::BinariesNotFound)?;
        let owner = if running_as_root() {
            Some(unprivileged_user().ok_or(EmbeddedPgError::NoUnprivilegedUser)?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("llmlite-pg-")
            .tempdir()
            .map_err(|e| failed("creating the cluster directory", e))?
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| failed("handing the cluster directory to its user", e))?;
        }

        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale", "C"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        as_owner(&mut initdb, owner);
        let output = initdb
            .output()
            .await
            .map_err(|e| failed("running initdb", e));
        let output = match output {
            Ok(o) => o,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        if !output.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(failed(
                "initdb",
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }

        let port = free_port().map_err(|e| failed("finding a free port", e))?;
        let mut supervisor = Command::new("sh");
        supervisor
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("llmlite-pg")
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal reaches llmlite, which stops the
            // cluster in order, not the server directly.
            .process_group(0);
        as_owner(&mut supervisor, owner);
        let mut supervisor = supervisor
            .spawn()
            .map_err(|e| failed("starting postgres", e))?;
        let lifeline = supervisor.stdin.take();
        let cluster = EmbeddedPostgres {
            dir,
            port,
            lifeline,
            supervisor,
        };
        cluster.wait_until_ready().await?;
        Ok(cluster)
    }

    async fn wait_until_ready(&self) -> Result<(), EmbeddedPgError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match PgConnection::connect(&self.url("postgres")).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    let log =
                        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                    return Err(failed(
                        "waiting for postgres to accept connections",
                        format!("{e}; server log:\n{log}"),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A URL for `database` on this cluster, as the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server and removes the cluster, and waits for both.
    pub async fn stop(mut self) {
        self.lifeline.take();
        let _ = self.supervisor.wait().await;
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        // Closing the pipe is enough: the supervisor stops the server and cleans up.
        self.lifeline.take();
    }
}

fn as_owner(command: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        command.uid(uid).gid(gid);
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `(uid, gid)` of `postgres`, else `nobody`, from `/etc/passwd`.
fn unprivileged_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    ["postgres", "nobody"].iter().find_map(|name| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [user, _, uid, gid, ..] if user == name => {
                    Some((uid.parse().ok()?, gid.parse().ok()?))
                }
                _ => None,
            }
        })
    })
}

/// The directory holding `initdb` and `postgres`: on `PATH`, else the newest Debian install.
pub fn find_server_binaries() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
