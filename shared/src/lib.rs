//! llmlite: an OpenAI-compatible gateway to Claude on Amazon Bedrock.
//!
//! Every piece of logic lives in this crate. The Lambda functions and the `llmlite` binary only
//! build an [`AppState`] (or, for `health`, a database pool) and serve one of the routers below:
//! the Lambdas through `lambda_http::run`, the local gateway through `axum::serve`.

pub mod adapters;
pub mod admin;
pub mod auth;
pub mod capacity;
pub mod catalog;
pub mod cli_login;
pub mod clients;
pub mod clock;
pub mod config;
pub mod console;
pub mod crypto;
pub mod deploy;
/// Development doubles: `llmlite dev` and the tests only (feature `dev`).
#[cfg(feature = "dev")]
pub mod dev;
pub mod device;
pub mod durations;
pub mod env;
pub mod error;
pub mod health;
pub mod http;
pub mod keys;
pub mod master_key;
pub mod money;
pub mod openai;
pub mod pii;
pub mod pipeline;
pub mod record;
pub mod reports;
pub mod rollup;
pub mod rotation;
pub mod routes;
pub mod settlement;
pub mod state;

pub use capacity::{metrics_routes, serve_routes};
pub use config::Config;
pub use error::{ApiError, ErrorShape, Refusal};
pub use routes::{Function, admin_routes, all_routes, chat_routes, health_routes};
pub use state::AppState;
