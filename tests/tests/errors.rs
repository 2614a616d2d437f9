//! Every API error renders the OpenAI error shape with its status.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use axum::response::IntoResponse;
use http::StatusCode;
use http_body_util::BodyExt;
use llmlite::ApiError;
use llmlite::error::BudgetScope;
use rust_decimal::Decimal;
use serde_json::Value;

/// One of each variant, with the status it must map to.
fn every_variant() -> Vec<(ApiError, StatusCode)> {
    vec![
        (
            ApiError::invalid_param("stop", "at most 4 stop sequences"),
            StatusCode::BAD_REQUEST,
        ),
        (
            ApiError::InvalidJson("expected value at line 1 column 2".into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            ApiError::UnsupportedContentType {
                found: Some("text/plain".into()),
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            ApiError::PiiBlocked {
                entities: vec!["EMAIL".into(), "IBAN".into()],
            },
            StatusCode::BAD_REQUEST,
        ),
        (ApiError::MissingApiKey, StatusCode::UNAUTHORIZED),
        (ApiError::InvalidApiKey, StatusCode::UNAUTHORIZED),
        (ApiError::ExpiredKey, StatusCode::UNAUTHORIZED),
        (ApiError::InactiveKey, StatusCode::UNAUTHORIZED),
        (ApiError::BlockedKey, StatusCode::UNAUTHORIZED),
        (
            ApiError::ModelNotAllowed {
                model: "claude-3-opus".into(),
            },
            StatusCode::FORBIDDEN,
        ),
        (
            ApiError::BudgetExceeded {
                scope: BudgetScope::Key,
                spend: Decimal::new(5001, 2),
                max_budget: Decimal::new(50, 0),
                worst_case: None,
            },
            StatusCode::FORBIDDEN,
        ),
        (
            ApiError::PermissionDenied("admin routes need the master key".into()),
            StatusCode::FORBIDDEN,
        ),
        (
            ApiError::NotFound("key not found".into()),
            StatusCode::NOT_FOUND,
        ),
        (
            ApiError::RouteNotFound {
                method: "GET".into(),
                path: "/nope".into(),
            },
            StatusCode::NOT_FOUND,
        ),
        (
            ApiError::MethodNotAllowed {
                method: "PUT".into(),
                path: "/health".into(),
            },
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            ApiError::PayloadTooLarge {
                limit_bytes: 1_048_576,
            },
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            ApiError::RateLimited {
                message: "rpm limit 100 reached".into(),
                retry_after_secs: 7,
            },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            ApiError::Upstream("ModelErrorException".into()),
            StatusCode::BAD_GATEWAY,
        ),
        (
            ApiError::UpstreamUnavailable("ThrottlingException".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            ApiError::UpstreamTimeout("no response in 60 s".into()),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (
            ApiError::DatabaseUnavailable("pool timed out".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            ApiError::Internal("secret detail for the log only".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            ApiError::ModelNotFound {
                model: "gpt-4o".into(),
            },
            StatusCode::NOT_FOUND,
        ),
        (
            ApiError::Conflict("key alias `ci` is taken".into()),
            StatusCode::CONFLICT,
        ),
        (ApiError::ResponseTooLarge, StatusCode::BAD_GATEWAY),
        (
            ApiError::PiiBlockedOutput {
                entities: vec!["CREDIT_CARD (1)".into()],
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            ApiError::AtCapacity { limit: 1000 },
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            ApiError::FeatureNotAllowed {
                what: "service tier `priority`".into(),
                scope: "team",
                setting: "allowed_service_tiers",
                param: "service_tier",
            },
            StatusCode::FORBIDDEN,
        ),
        (
            ApiError::GuardrailBlocked {
                message: "Sorry, that topic is denied.".into(),
                output: false,
            },
            StatusCode::BAD_REQUEST,
        ),
    ]
}

/// Fails to compile when a variant is added without a line in `every_variant`.
fn variant_number(error: &ApiError) -> usize {
    match error {
        ApiError::InvalidRequest { .. } => 0,
        ApiError::InvalidJson(_) => 1,
        ApiError::UnsupportedContentType { .. } => 2,
        ApiError::PiiBlocked { .. } => 3,
        ApiError::MissingApiKey => 4,
        ApiError::InvalidApiKey => 5,
        ApiError::ExpiredKey => 6,
        ApiError::InactiveKey => 7,
        ApiError::BlockedKey => 8,
        ApiError::ModelNotAllowed { .. } => 9,
        ApiError::BudgetExceeded { .. } => 10,
        ApiError::PermissionDenied(_) => 11,
        ApiError::NotFound(_) => 12,
        ApiError::RouteNotFound { .. } => 13,
        ApiError::MethodNotAllowed { .. } => 14,
        ApiError::PayloadTooLarge { .. } => 15,
        ApiError::RateLimited { .. } => 16,
        ApiError::Upstream(_) => 17,
        ApiError::UpstreamUnavailable(_) => 18,
        ApiError::UpstreamTimeout(_) => 19,
        ApiError::DatabaseUnavailable(_) => 20,
        ApiError::Internal(_) => 21,
        ApiError::ModelNotFound { .. } => 22,
        ApiError::Conflict(_) => 23,
        ApiError::ResponseTooLarge => 24,
        ApiError::PiiBlockedOutput { .. } => 25,
        ApiError::AtCapacity { .. } => 26,
        ApiError::FeatureNotAllowed { .. } => 27,
        ApiError::GuardrailBlocked { .. } => 28,
    }
}

#[tokio::test]
async fn every_error_variant_renders_the_openai_shape_with_its_status() {
    let variants = every_variant();
    let mut covered: Vec<usize> = variants.iter().map(|(e, _)| variant_number(e)).collect();
    covered.sort_unstable();
    assert_eq!(
        covered,
        (0..=28).collect::<Vec<_>>(),
        "every variant exactly once"
    );

    for (error, status) in variants {
        let kind = error.kind();
        let database_away = matches!(error, ApiError::DatabaseUnavailable(_));
        let at_capacity = matches!(error, ApiError::AtCapacity { .. });
        let response = error.into_response();
        assert_eq!(response.status(), status, "{kind}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{kind}"
        );
        let retry_after = response.headers().get("retry-after").cloned();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let error = body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("{kind}: {body}"));
        assert_eq!(
            error.len(),
            4,
            "{kind}: exactly message, type, param, code: {body}"
        );
        assert!(!error["message"].as_str().unwrap().is_empty(), "{kind}");
        assert_eq!(error["type"], kind);
        assert!(
            error["param"].is_null() || error["param"].is_string(),
            "{kind}"
        );
        assert_eq!(error["code"], status.as_u16().to_string(), "{kind}");
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(retry_after.unwrap(), "7");
        } else if database_away {
            assert_eq!(
                retry_after.unwrap(),
                "5",
                "a failover takes a while: come back"
            );
        } else if at_capacity {
            assert_eq!(
                retry_after.unwrap(),
                "1",
                "a place frees when any answer ends"
            );
        } else {
            assert!(retry_after.is_none(), "{kind}");
        }
    }
}

#[tokio::test]
async fn specific_messages_and_params() {
    let budget = ApiError::BudgetExceeded {
        scope: BudgetScope::User,
        spend: Decimal::new(5001, 2),
        max_budget: Decimal::new(50, 0),
        worst_case: None,
    };
    assert_eq!(budget.kind(), "budget_exceeded");
    assert_eq!(
        budget.to_string(),
        "user budget exceeded: spend 50.01 of max budget 50"
    );
    let stop = ApiError::invalid_param("stop", "at most 4 stop sequences");
    assert_eq!(stop.body().error.param.as_deref(), Some("stop"));
    let model = ApiError::ModelNotAllowed {
        model: "claude-3-opus".into(),
    };
    assert_eq!(model.body().error.param.as_deref(), Some("model"));
    // The internal detail is logged, never sent.
    let internal = ApiError::Internal("connection string postgres://u:pw@db".into());
    assert_eq!(internal.body().error.message, "internal server error");
    // A PII refusal names entity types only.
    let pii = ApiError::PiiBlocked {
        entities: vec!["EMAIL".into()],
    };
    assert!(pii.body().error.message.contains("EMAIL"));
}

/// A transaction PostgreSQL rolls back (here a real deadlock victim) is retryable: 503 with
/// `retry-after`, not a 500. Admissions and settlements are single statements, so the victim
/// wrote nothing and the same request a moment later succeeds.
#[tokio::test]
async fn a_deadlock_victim_is_a_retryable_503() {
    let db = llmlite_tests::TestDb::new().await;
    for sql in [
        "CREATE TABLE deadlock_probe (id INT PRIMARY KEY, n INT NOT NULL)",
        "INSERT INTO deadlock_probe VALUES (1, 0), (2, 0)",
    ] {
        sqlx::query(sql)
            .persistent(false)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    let update = "UPDATE deadlock_probe SET n = n + 1 WHERE id = $1";
    let (mut a, mut b) = (
        db.pool.begin().await.unwrap(),
        db.pool.begin().await.unwrap(),
    );
    for (tx, id) in [(&mut a, 1), (&mut b, 2)] {
        sqlx::query(update)
            .bind(id)
            .persistent(false)
            .execute(&mut **tx)
            .await
            .unwrap();
    }
    // Each now waits for the other's row: PostgreSQL picks a victim after deadlock_timeout.
    let (first, second) = tokio::join!(
        sqlx::query(update)
            .bind(2)
            .persistent(false)
            .execute(&mut *a),
        sqlx::query(update)
            .bind(1)
            .persistent(false)
            .execute(&mut *b),
    );
    let victim = match (first, second) {
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => e,
        other => panic!("expected exactly one deadlock victim: {other:?}"),
    };
    assert_eq!(
        victim.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("40P01"),
        "{victim}"
    );
    let error = ApiError::from(victim);
    assert!(
        matches!(error, ApiError::DatabaseUnavailable(_)),
        "{error:?}"
    );
    let response = error.into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
}
