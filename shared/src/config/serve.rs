//! What only `llmlite serve` (and `dev`) reads: `LLMLITE_MAX_CONCURRENCY`, the most requests it
//! serves at once (a container's reserved concurrency, enforced by [`crate::capacity`]), and the
//! database pool it sizes from that when `LLMLITE_DB_POOL_SIZE` is not set, and
//! `LLMLITE_SETTLE_BATCH`, the most settlements it writes in one transaction (group commit, see
//! [`crate::settlement`]), and `LLMLITE_METRICS_ADDR`, where it serves Prometheus' `/metrics`
//! (a listener of its own, never the ALB's; unset: none).

use super::database::pool_size_setting;
use crate::env::{ConfigError, EnvSource, non_empty};

/// Requests in flight at once when `LLMLITE_MAX_CONCURRENCY` is unset or 0: the Lambda
/// account's default concurrency, so one container is refused where one Region's Lambdas would
/// be throttled.
pub const DEFAULT_MAX_CONCURRENCY: usize = 1000;

/// The most connections `serve` opens when `LLMLITE_DB_POOL_SIZE` is not set: what the hot-path
/// bench runs it with (`tests/benches/hot_path.rs`); 16 measured no faster (issue 27).
const MAX_SERVE_POOL_SIZE: u32 = 8;

/// The largest `LLMLITE_MAX_CONCURRENCY` accepted: far beyond what one process's sockets and
/// memory hold, and small enough that a typo of a few zeros is caught.
const MAX_CONCURRENCY_LIMIT: usize = 100_000;

/// Settlements written in one transaction at most when `LLMLITE_SETTLE_BATCH` is not set (group
/// commit, see `crate::settlement`). A batch holds what finished while the one before it was
/// written, so this is a ceiling, not a size waited for.
pub const DEFAULT_SETTLE_BATCH: usize = 64;

/// The largest `LLMLITE_SETTLE_BATCH` accepted: one statement binds 22 arrays of this length.
const MAX_SETTLE_BATCH: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeConfig {
    /// `LLMLITE_METRICS_ADDR`: the address of the Prometheus listener (`GET /metrics`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `LLMLITE_MAX_CONCURRENCY`: requests in flight at once; the next is answered 503.
    pub max_concurrency: usize,
    /// `LLMLITE_DB_POOL_SIZE` when set, else [`serve_pool_size`] of the concurrency.
    pub db_pool_size: u32,
    /// `LLMLITE_SETTLE_BATCH`: settlements written in one transaction at most (1: each alone).
    pub settle_batch: usize,
}

impl ServeConfig {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let max_concurrency = match non_empty(env, "LLMLITE_MAX_CONCURRENCY") {
            None => DEFAULT_MAX_CONCURRENCY,
            Some(v) => match v.parse::<usize>() {
                Ok(0) => DEFAULT_MAX_CONCURRENCY,
                Ok(n) if n <= MAX_CONCURRENCY_LIMIT => n,
                _ => {
                    return Err(ConfigError::new(
                        "LLMLITE_MAX_CONCURRENCY",
                        "must be a whole number from 1 to 100000 (0: the default, 1000)",
                    ));
                }
            },
        };
        let db_pool_size =
            pool_size_setting(env)?.unwrap_or_else(|| serve_pool_size(max_concurrency));
        let settle_batch = match non_empty(env, "LLMLITE_SETTLE_BATCH") {
            None => DEFAULT_SETTLE_BATCH,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_SETTLE_BATCH).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "LLMLITE_SETTLE_BATCH",
                        "must be a whole number from 1 (each settlement alone) to 1000",
                    ));
                }
            },
        };
        let metrics_addr = match non_empty(env, "LLMLITE_METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ConfigError::new(
                    "LLMLITE_METRICS_ADDR",
                    "must be an address and port such as 127.0.0.1:9464",
                )
            })?),
        };
        Ok(ServeConfig {
            metrics_addr,
            max_concurrency,
            db_pool_size,
            settle_batch,
        })
    }
}

/// The pool `serve` opens for `max_concurrency` requests in flight: one connection each, up to
/// [`MAX_SERVE_POOL_SIZE`]. A request holds a connection only for its admission and its
/// settlement, a few milliseconds of a stream that lasts seconds, so a thousand streams share a
/// handful of connections. More would only queue statements on the database's CPUs (a
/// db.t4g.small has two; the cost per request is CPU, not waiting for a connection) and take
/// from its `max_connections`, which every `serve` process and Lambda environment shares. A
/// Lambda's pool of 2 is for one request at a time; below 8 in flight, one per request.
fn serve_pool_size(max_concurrency: usize) -> u32 {
    u32::try_from(max_concurrency)
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_SERVE_POOL_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn the_ceiling_defaults_to_1000_and_zero_means_the_default() {
        for vars in [vec![], vec![("LLMLITE_MAX_CONCURRENCY", "0")]] {
            let serve = ServeConfig::from_env(&env(&vars)).unwrap();
            assert_eq!(serve.max_concurrency, DEFAULT_MAX_CONCURRENCY, "{vars:?}");
            assert_eq!(serve.db_pool_size, MAX_SERVE_POOL_SIZE, "{vars:?}");
        }
        let serve = ServeConfig::from_env(&env(&[("LLMLITE_MAX_CONCURRENCY", "250")])).unwrap();
        assert_eq!(serve.max_concurrency, 250);
    }

    #[test]
    fn the_metrics_listener_is_off_unless_an_address_is_set() {
        assert_eq!(ServeConfig::from_env(&env(&[])).unwrap().metrics_addr, None);
        let set = ServeConfig::from_env(&env(&[("LLMLITE_METRICS_ADDR", "0.0.0.0:9464")])).unwrap();
        assert_eq!(set.metrics_addr, Some("0.0.0.0:9464".parse().unwrap()));
        for bad in ["9464", "localhost:9464", "0.0.0.0", "0.0.0.0:99999"] {
            let err = ServeConfig::from_env(&env(&[("LLMLITE_METRICS_ADDR", bad)])).unwrap_err();
            assert_eq!(err.variable, "LLMLITE_METRICS_ADDR", "{bad}");
        }
    }

    #[test]
    fn a_bad_ceiling_names_the_variable() {
        for bad in ["-1", "many", "1.5", "100001", "99999999999999999999999"] {
            let err = ServeConfig::from_env(&env(&[("LLMLITE_MAX_CONCURRENCY", bad)])).unwrap_err();
            assert_eq!(err.variable, "LLMLITE_MAX_CONCURRENCY", "{bad}");
        }
    }

    #[test]
    fn the_pool_follows_the_ceiling_unless_set() {
        let pool = |vars: &[(&str, &str)]| ServeConfig::from_env(&env(vars)).unwrap().db_pool_size;
        assert_eq!(pool(&[("LLMLITE_MAX_CONCURRENCY", "1")]), 1);
        assert_eq!(pool(&[("LLMLITE_MAX_CONCURRENCY", "4")]), 4);
        assert_eq!(pool(&[("LLMLITE_MAX_CONCURRENCY", "8")]), 8);
        assert_eq!(pool(&[("LLMLITE_MAX_CONCURRENCY", "5000")]), 8);
        assert_eq!(
            pool(&[
                ("LLMLITE_MAX_CONCURRENCY", "5000"),
                ("LLMLITE_DB_POOL_SIZE", "40")
            ]),
            40
        );
        let err = ServeConfig::from_env(&env(&[("LLMLITE_DB_POOL_SIZE", "0")])).unwrap_err();
        assert_eq!(err.variable, "LLMLITE_DB_POOL_SIZE");
    }

    #[test]
    fn settlements_batch_by_64_unless_set() {
        let batch =
            |vars: &[(&str, &str)]| ServeConfig::from_env(&env(vars)).map(|s| s.settle_batch);
        assert_eq!(batch(&[]).unwrap(), 64);
        assert_eq!(batch(&[("LLMLITE_SETTLE_BATCH", "1")]).unwrap(), 1);
        assert_eq!(batch(&[("LLMLITE_SETTLE_BATCH", "1000")]).unwrap(), 1000);
        for bad in ["0", "1001", "-4", "lots", "2.5"] {
            let err = batch(&[("LLMLITE_SETTLE_BATCH", bad)]).unwrap_err();
            assert_eq!(err.variable, "LLMLITE_SETTLE_BATCH", "{bad}");
        }
    }
}
