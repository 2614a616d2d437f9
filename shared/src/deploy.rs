//! The CloudFormation custom resource that migrates the database on every deploy.
//!
//! `template.yaml` declares `DatabaseMigrations` (`Custom::DatabaseMigrations`), served by the
//! spend-rollup function: that function is already in the VPC with the database's IAM grant, and
//! is not behind the ALB. The resource's `LatestMigration` property names the newest file in
//! `migrations/` (a test keeps the two equal), so every deploy that adds a migration sends an
//! `Update`, and the HTTP functions, which `DependsOn` the resource, change only after it
//! succeeded.
//!
//! - `Create` and `Update` apply the pending migrations, through RDS Proxy like every other
//!   connection. The migrator's session-level advisory lock pins that one proxy session for the
//!   few seconds it runs, which is harmless; request paths never pin.
//! - `Delete` succeeds without touching the database: removing the stack must not drop the
//!   schema (the database itself is kept as a final snapshot).
//!
//! Whatever happens, the outcome is `PUT` to the request's pre-signed `ResponseURL` (an S3 URL,
//! reached through the VPC's S3 gateway endpoint), so a failed migration fails and rolls back
//! the deploy at once instead of leaving CloudFormation waiting. If that `PUT` fails, the
//! invocation fails and Lambda's asynchronous retries run it again; migrating twice is a no-op.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Connection;

use crate::AppState;
use crate::clients::db_roles::{self, RoleError};
use crate::clients::store::{Database, MIGRATOR};
use crate::config::ConfigError;
use crate::error::ApiError;

/// The physical id of the one migrations resource a stack has.
pub const PHYSICAL_RESOURCE_ID: &str = "llmlite-database-migrations";

/// How long the response `PUT` may take before the invocation fails and is retried.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `Reason` sent: CloudFormation takes responses of up to 4,096 bytes.
const MAX_REASON_CHARS: usize = 1000;

/// Why the invocation failed: the request was malformed (there is no one to answer), or the
/// answer could not be sent (Lambda retries the invocation).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("not a CloudFormation custom-resource request: {0}")]
    NotARequest(serde_json::Error),
    /// The response could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    #[error("loading the TLS roots: {0}")]
    TlsRoots(std::io::Error),
    #[error("the response URL is not usable: {0}")]
    ResponseUrl(http::Error),
    #[error("sending the response to CloudFormation timed out")]
    Timeout,
    #[error("sending the response to CloudFormation failed: {0}")]
    Send(hyper_util::client::legacy::Error),
    #[error("CloudFormation's response URL answered {status}: {detail}")]
    Refused {
        status: http::StatusCode,
        detail: String,
    },
}

/// Why the migrations failed: the `Reason` of the `FAILED` answer, shown in the stack's events.
/// Never holds a secret.
#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error("LatestMigration {0} is not a migration file name")]
    BadLatestMigration(Value),
    #[error(
        "this build does not carry migration {expected} (its newest is {newest}): deploy the code \
         that matches the template"
    )]
    MissingMigration { expected: i64, newest: i64 },
    #[error("AdminUser: {0}")]
    BadAdminUser(RoleError),
    #[error("AdminUser, OwnerSecretArn and AppSecretArn go together")]
    PartialRoles,
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A connection's settings were refused (IAM authentication without a region).
    #[error("connecting as {user}: {source}")]
    Settings { user: String, source: ConfigError },
    #[error("connecting as {user}: {source}")]
    Connect { user: String, source: ApiError },
    #[error(transparent)]
    Roles(#[from] RoleError),
    #[error("reading the secret {arn}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(.source))]
    ReadSecret {
        arn: String,
        source: Box<SdkError<GetSecretValueError>>,
    },
    #[error("the secret {arn} has no SecretString")]
    NoSecretString { arn: String },
    #[error("the secret {arn}: {source}")]
    BadSecret { arn: String, source: RoleError },
}

/// Whether `event` is a CloudFormation custom-resource request rather than a schedule event.
pub fn is_custom_resource_request(event: &Value) -> bool {
    event.get("RequestType").is_some() && event.get("ResponseURL").is_some()
}

/// What is sent back to CloudFormation (its custom-resource response object).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Response {
    /// `SUCCESS` or `FAILED`.
    pub status: &'static str,
    /// Why it failed, shown in the stack's events. Never holds a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub physical_resource_id: String,
    pub stack_id: String,
    pub request_id: String,
    pub logical_resource_id: String,
    pub no_echo: bool,
    /// `Version`: the newest migration applied (readable with `!GetAtt`).
    pub data: BTreeMap<String, String>,
}

/// A custom-resource request: the fields of CloudFormation's `Create`, `Update` and `Delete`
/// requests that matter here.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Request {
    request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
    /// Absent on `Create`.
    #[serde(default)]
    physical_resource_id: Option<String>,
    #[serde(default)]
    resource_properties: Value,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
enum RequestType {
    Create,
    Update,
    Delete,
}

/// Handles one custom-resource request: migrate (or not, for `Delete`), then answer
/// CloudFormation. Returns the answer sent; fails only when the request is malformed (there is
/// no one to answer) or the answer could not be sent.
pub async fn handle(state: &AppState, event: Value) -> Result<Value, DeployError> {
    let request: Request = serde_json::from_value(event).map_err(DeployError::NotARequest)?;
    let outcome = match request.request_type {
        RequestType::Create | RequestType::Update => {
            run_migrations(state, &request.resource_properties).await
        }
        RequestType::Delete => Ok(None),
    };
    let (status, reason, data) = match outcome {
        Ok(version) => (
            "SUCCESS",
            None,
            version
                .map(|v| BTreeMap::from([("Version".to_owned(), v.to_string())]))
                .unwrap_or_default(),
        ),
        Err(reason) => (
            "FAILED",
            Some(reason.to_string().chars().take(MAX_REASON_CHARS).collect()),
            BTreeMap::new(),
        ),
    };
    let response = Response {
        status,
        reason,
        physical_resource_id: request
            .physical_resource_id
            .unwrap_or_else(|| PHYSICAL_RESOURCE_ID.to_owned()),
        stack_id: request.stack_id,
        request_id: request.request_id,
        logical_resource_id: request.logical_resource_id,
        no_echo: false,
        data,
    };
    tracing::info!(
        request_type = ?request.request_type,
        status = response.status,
        reason = response.reason.as_deref().unwrap_or(""),
        request_id = %response.request_id,
        logical_resource_id = %response.logical_resource_id,
        "custom resource answered"
    );
    send(&request.response_url, &response).await?;
    Ok(serde_json::to_value(&response)?)
}

/// Applies the pending migrations after checking that this build carries the migration the
/// template expects (a template deployed with older code would otherwise "succeed" with a
/// schema older than the other functions need). Returns the newest version applied.
async fn run_migrations(
    state: &AppState,
    properties: &Value,
) -> Result<Option<i64>, MigrationError> {
    let expected = match properties.get("LatestMigration") {
        None => None,
        Some(v) => Some(
            v.as_str()
                .and_then(|s| s.split('_').next())
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| MigrationError::BadLatestMigration(v.clone()))?,
        ),
    };
    let newest = MIGRATOR.iter().map(|m| m.version).max();
    if let Some(expected) = expected
        && !MIGRATOR.iter().any(|m| m.version == expected)
    {
        return Err(MigrationError::MissingMigration {
            expected,
            newest: newest.unwrap_or_default(),
        });
    }
    match RoleSetup::from_properties(properties)? {
        None => state.db.migrate().await?,
        Some(setup) => setup.run(state).await?,
    }
    Ok(newest)
}

/// The database roles the resource keeps ([`crate::clients::db_roles`]): its `AdminUser`,
/// `OwnerSecretArn` and `AppSecretArn` properties, all three or none (a template from before the
/// roles: then it migrates as `DATABASE_URL`'s user, as it always did).
struct RoleSetup {
    admin_user: String,
    owner_secret: String,
    app_secret: String,
}

impl RoleSetup {
    fn from_properties(properties: &Value) -> Result<Option<Self>, MigrationError> {
        let field = |name: &str| {
            properties
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (
            field("AdminUser"),
            field("OwnerSecretArn"),
            field("AppSecretArn"),
        ) {
            (None, None, None) => Ok(None),
            (Some(admin_user), Some(owner_secret), Some(app_secret)) => {
                db_roles::check_identifier(&admin_user).map_err(MigrationError::BadAdminUser)?;
                Ok(Some(RoleSetup {
                    admin_user,
                    owner_secret,
                    app_secret,
                }))
            }
            _ => Err(MigrationError::PartialRoles),
        }
    }

    /// Creates the roles as the admin user, migrates as the owner, then grants the application
    /// role its privileges. Every connection goes where `DATABASE_URL` does (RDS Proxy), as the
    /// user named; with IAM authentication each gets a token for its own user.
    async fn run(&self, state: &AppState) -> Result<(), MigrationError> {
        let owner = read_login(state, &self.owner_secret).await?;
        let app = read_login(state, &self.app_secret).await?;
        let configured = state.config.database.options.get_username();
        if configured != app.name {
            tracing::warn!(
                configured,
                app = %app.name,
                "DATABASE_URL's user is not the application role: the functions would not run \
                 with the application role's privileges"
            );
        }
        let as_user = |user: &str| {
            Database::new(
                &state.config.database.as_user(user),
                Some(&state.config.aws),
            )
            .map_err(|source| MigrationError::Settings {
                user: user.to_owned(),
                source,
            })
        };
        let mut admin = as_user(&self.admin_user)?
            .connection()
            .await
            .map_err(|source| MigrationError::Connect {
                user: self.admin_user.clone(),
                source,
            })?;
        let created = db_roles::bootstrap(&mut admin, &owner, &app).await;
        let _ = admin.close().await;
        created?;
        let owner_db = as_user(&owner.name)?;
        owner_db.migrate().await?;
        let mut conn = owner_db
            .connection()
            .await
            .map_err(|source| MigrationError::Connect {
                user: owner.name.clone(),
                source,
            })?;
        let granted = db_roles::grant_app(&mut conn, &app.name).await;
        let _ = conn.close().await;
        Ok(granted?)
    }
}

/// A role's login from its Secrets Manager secret.
async fn read_login(state: &AppState, arn: &str) -> Result<db_roles::Login, MigrationError> {
    let client = aws_sdk_secretsmanager::Client::new(&state.config.aws);
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|source| MigrationError::ReadSecret {
            arn: arn.to_owned(),
            source: Box::new(source),
        })?;
    let text = secret
        .secret_string()
        .ok_or_else(|| MigrationError::NoSecretString {
            arn: arn.to_owned(),
        })?;
    db_roles::Login::from_secret(text).map_err(|source| MigrationError::BadSecret {
        arn: arn.to_owned(),
        source,
    })
}

/// `PUT`s the response to CloudFormation's pre-signed URL. The URL's signature covers no
/// content type, so none is sent.
async fn send(url: &str, response: &Response) -> Result<(), DeployError> {
    let body = serde_json::to_vec(response)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(DeployError::TlsRoots)?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = http::Request::put(url)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(DeployError::ResponseUrl)?;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, client.request(request))
        .await
        .map_err(|_| DeployError::Timeout)?
        .map_err(DeployError::Send)?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let detail = answer
        .into_body()
        .collect()
        .await
        .map(|b| {
            String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(300)
                .collect::<String>()
        })
        .unwrap_or_default();
    Err(DeployError::Refused { status, detail })
}
