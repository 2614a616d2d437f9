//! `llmlite`: the whole gateway in one process, for development and container hosting.
//!
//! - `llmlite dev`: everything embedded. A throwaway PostgreSQL (unless `DATABASE_URL` is set),
//!   migrations applied, a master key generated (unless `LITELLM_MASTER_KEY` is set), and chat
//!   served by the local Bedrock double, so no AWS account is needed. Feature `dev` (on by
//!   default); a production build (`--no-default-features`) has no doubles and no test hooks.
//! - `llmlite serve`: the same routes with real configuration only.
//! - `llmlite migrate`: apply the migrations to `DATABASE_URL`.
//! - `llmlite audit redrive`: ship audit records waiting in the queue and the outbox.
//! - `llmlite rollup`: run the spend rollup once.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llmlite::clients::store::Database;
#[cfg(feature = "dev")]
use llmlite::config::{self, Overlay};
use llmlite::config::{Config, EnvSource, ProcessEnv, ServeConfig};
#[cfg(feature = "dev")]
use llmlite::dev::bedrock_double::BedrockDouble;
#[cfg(feature = "dev")]
use llmlite::dev::embedded_pg::EmbeddedPostgres;
use llmlite::{AppState, clients::telemetry, metrics_routes, serve_routes};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "llmlite",
    version,
    about = "An OpenAI-compatible gateway to Claude on Amazon Bedrock"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every route locally with everything embedded.
    #[cfg(feature = "dev")]
    Dev {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
    },
    /// Run every route with real configuration (see docs/configuration.md).
    Serve {
        /// Address to listen on (use 0.0.0.0:4000 in a container).
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: SocketAddr,
    },
    /// Apply database migrations to DATABASE_URL.
    Migrate,
    /// Run the spend rollup once: daily rollups, budget resets, expiries, the audit outbox,
    /// reports and retention (what the spend-rollup function does on its schedule).
    Rollup,
    /// Audit trail maintenance.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Sign this machine in to a gateway with your company account (a browser approves it),
    /// for `llmlite key`. The credential is kept in a file only you can read.
    Login {
        /// The gateway's base URL (its LLMLITE_PUBLIC_URL).
        #[arg(long)]
        gateway: String,
    },
    /// Print a current short-lived key (renewed when it has less than 15 minutes left): Claude
    /// Code's `apiKeyHelper`.
    Key {
        /// The gateway's base URL; by default the one `llmlite login` used.
        #[arg(long)]
        gateway: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Ship the records waiting in the outbox, and admin actions not yet shipped.
    Redrive,
}

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init_text();
    let result = match Cli::parse().command {
        #[cfg(feature = "dev")]
        Command::Dev { listen } => dev(listen).await,
        Command::Serve { listen } => serve(listen).await,
        Command::Migrate => migrate().await,
        Command::Rollup => rollup().await,
        Command::Audit {
            command: AuditCommand::Redrive,
        } => redrive().await,
        Command::Login { gateway } => login(&gateway).await,
        Command::Key { gateway } => key(gateway.as_deref()).await,
    };
    // The spans still queued go out (bounded by the exporter's timeout).
    if llmlite::clients::traces::active() {
        let _ = tokio::task::spawn_blocking(llmlite::clients::traces::shutdown).await;
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "where to approve the machine is the command's output"
)]
async fn login(gateway: &str) -> Result<(), String> {
    let path = llmlite::cli_login::credentials_path()?;
    llmlite::cli_login::login(gateway, &path, |url, code| {
        println!("Open {url} and approve the code {code}.");
        println!("Waiting for the approval...");
    })
    .await?;
    println!(
        "Signed in. `llmlite key` prints a current key; the credential is in {}.",
        path.display()
    );
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the key is the command's output")]
async fn key(gateway: Option<&str>) -> Result<(), String> {
    let path = llmlite::cli_login::credentials_path()?;
    println!("{}", llmlite::cli_login::key(gateway, &path).await?);
    Ok(())
}

async fn migrate() -> Result<(), String> {
    let db = Database::from_env(&ProcessEnv)
        .await
        .map_err(|e| e.to_string())?;
    db.migrate()
        .await
        .map_err(|e| format!("migrations failed: {e}"))?;
    tracing::info!("migrations applied");
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the summary is the command's output")]
async fn rollup() -> Result<(), String> {
    let state = AppState::from_env(&ProcessEnv)
        .await
        .map_err(|e| e.to_string())?;
    let reports = llmlite::rollup::reports_sink(&state, &ProcessEnv);
    let retention = llmlite::rollup::retention_days(&ProcessEnv);
    let summary = llmlite::rollup::run(&state, &reports, retention, state.clock.now()).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?
    );
    Ok(())
}

async fn redrive() -> Result<(), String> {
    let state = AppState::from_env(&ProcessEnv)
        .await
        .map_err(|e| e.to_string())?;
    let requests = state.audit.ship_requests(true).await?;
    let admin = state.audit.ship_admin_actions().await?;
    let mut total = llmlite::clients::audit::Redrive::default();
    loop {
        let round = state.audit.redrive(500).await?;
        total.shipped += round.shipped;
        total.failed += round.failed;
        if round.shipped + round.failed < 500 {
            break;
        }
    }
    tracing::info!(
        request_records = requests.records,
        request_objects = requests.objects,
        admin_actions = admin,
        shipped = total.shipped,
        failed = total.failed,
        "audit outbox re-driven"
    );
    if total.failed > 0 {
        return Err(format!(
            "{} records still waiting in the outbox",
            total.failed
        ));
    }
    Ok(())
}

async fn serve(listen: SocketAddr) -> Result<(), String> {
    let config = Config::load(&ProcessEnv).await.map_err(|e| e.to_string())?;
    let (state, serving) = served(config, &ProcessEnv)?;
    run(listen, state, serving).await
}

/// The state `serve` and `dev` run with: its database pool sized by [`ServeConfig`] (a
/// Lambda's pool of 2 serves one request at a time; this process serves many).
fn served(mut config: Config, env: &impl EnvSource) -> Result<(AppState, ServeConfig), String> {
    let serving = ServeConfig::from_env(env).map_err(|e| e.to_string())?;
    config.database.pool_size = serving.db_pool_size;
    let mut state = AppState::new(config).map_err(|e| e.to_string())?;
    // Many requests settle at once here: those that finish together share a transaction.
    state.settlements = state.settlements.group_commit(serving.settle_batch);
    if serving.metrics_addr.is_some() {
        let metrics = llmlite::clients::metrics::Metrics::new()
            .map_err(|e| format!("metrics could not be registered: {e}"))?;
        state.settlements = state.settlements.with_metrics(std::sync::Arc::new(metrics));
    }
    Ok((state, serving))
}

#[cfg(feature = "dev")]
async fn dev(listen: SocketAddr) -> Result<(), String> {
    let mut overrides = std::collections::HashMap::new();
    let cluster = if std::env::var_os("DATABASE_URL").is_some() {
        None
    } else {
        let cluster = EmbeddedPostgres::start()
            .await
            .map_err(|e| format!("could not start a throwaway PostgreSQL: {e}"))?;
        overrides.insert("DATABASE_URL".to_owned(), cluster.url("postgres"));
        Some(cluster)
    };
    let secret_arn = std::env::var_os("LITELLM_MASTER_KEY_SECRET_ARN").is_some();
    if std::env::var_os("LITELLM_MASTER_KEY").is_none() && !secret_arn {
        overrides.insert("LITELLM_MASTER_KEY".to_owned(), llmlite::keys::generate());
    }
    let bedrock = BedrockDouble::start(0)
        .await
        .map_err(|e| format!("could not start the local Bedrock double: {e}"))?;
    overrides.insert(
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME".to_owned(),
        bedrock.endpoint(),
    );
    let env = Overlay {
        overrides,
        base: &ProcessEnv,
    };
    let result = async {
        let region = config::aws_region(&env).map_err(|e| e.to_string())?;
        // Fake credentials for the double, unless a real secret has to be read.
        let aws = if secret_arn {
            config::aws_sdk_config(&region).await
        } else {
            config::local_aws_config(&region).await
        };
        let config = Config::load_with_aws(&env, aws)
            .await
            .map_err(|e| e.to_string())?;
        let (state, serving) = served(config, &env)?;
        state
            .db
            .migrate()
            .await
            .map_err(|e| format!("migrations failed: {e}"))?;
        let listener = bind(listen).await?;
        announce(&listener, &state, cluster.as_ref(), &bedrock);
        serve_until_signal(listener, state, serving).await
    }
    .await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
        tracing::info!("throwaway database removed");
    }
    result
}

#[cfg(feature = "dev")]
#[expect(
    clippy::print_stdout,
    reason = "dev prints what the developer needs to start"
)]
fn announce(
    listener: &TcpListener,
    state: &AppState,
    cluster: Option<&EmbeddedPostgres>,
    bedrock: &BedrockDouble,
) {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let database = match cluster {
        Some(c) => format!(
            "throwaway cluster in {} at {} (removed on exit)",
            c.dir().display(),
            c.url("postgres")
        ),
        None => "DATABASE_URL".to_owned(),
    };
    let master_key = state.config.master_key.cached();
    let key = master_key.expose();
    println!("llmlite dev: listening on http://{addr}");
    println!("  database:   {database}");
    println!(
        "  bedrock:    local double at {} (answers echo the prompt)",
        bedrock.endpoint()
    );
    println!("  master key: {key}");
    println!("  try:        curl -s http://{addr}/health/readiness");
    println!(
        "              curl -s http://{addr}/v1/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' -d '{{\"model\": \"claude-sonnet-4-5\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'"
    );
    println!("Stop with Ctrl-C.");
}

async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

async fn run(listen: SocketAddr, state: AppState, serving: ServeConfig) -> Result<(), String> {
    let listener = bind(listen).await?;
    tracing::info!(
        %listen,
        max_concurrency = serving.max_concurrency,
        db_pool_size = serving.db_pool_size,
        settle_batch = serving.settle_batch,
        "llmlite serving"
    );
    serve_until_signal(listener, state, serving).await
}

/// Serves until Ctrl-C or SIGTERM, at most `LLMLITE_MAX_CONCURRENCY` requests at once, then
/// lets every admitted request settle before returning (settlement follows each response in a
/// task of its own).
async fn serve_until_signal(
    listener: TcpListener,
    state: AppState,
    serving: ServeConfig,
) -> Result<(), String> {
    let settlements = state.settlements.clone();
    let audit = state.audit.clone();
    // Prometheus' `/metrics`, on a listener of its own.
    let metrics = match (serving.metrics_addr, metrics_routes(state.clone())) {
        (Some(addr), Some(routes)) => {
            let listener = bind(addr).await?;
            tracing::info!(
                listen = %listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string()),
                "metrics at /metrics"
            );
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, routes).await {
                    tracing::warn!(error = %e, "metrics listener failed");
                }
            }))
        }
        _ => None,
    };
    // The audit queue ships once a minute (when it holds 128 KiB, or its oldest record has
    // waited 10 minutes); settlements ship it too as it fills.
    let shipping = tokio::spawn({
        let audit = audit.clone();
        async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = audit.ship_requests(false).await {
                    tracing::warn!(error = %e, "audit queue not shipped; the next tick will");
                }
            }
        }
    });
    let served = axum::serve(listener, serve_routes(state, serving.max_concurrency))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server failed: {e}"));
    settlements.drain().await;
    let batches = settlements.group_commits();
    tracing::info!(
        transactions = batches.commits,
        settled = batches.settled,
        refused = batches.refused,
        failed = batches.failed,
        "settlements written in batches (group commit)"
    );
    shipping.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // What this process queued leaves with it (another process or the rollup would ship it
    // later otherwise).
    // Bounded: a stop signal gives a container seconds, not minutes.
    match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        audit.ship_requests(true),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audit queue not shipped at shutdown; the rollup will");
        }
        Err(_) => tracing::warn!("audit queue not shipped in time at shutdown; the rollup will"),
    }
    served
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
