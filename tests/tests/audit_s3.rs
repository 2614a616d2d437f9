//! The audit trail on S3 (moto's server, through the real aws-sdk-s3 client): the documented
//! object keys, and no loss across an outage.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use futures_util::StreamExt;
use llmlite_tests::{MotoS3, Outage, TestGateway};
use serde_json::json;

const BUCKET: &str = "llmlite-audit-test";

/// An object, read with the gateway's own (signed) S3 client: moto refuses anonymous reads.
async fn object(gw: &TestGateway, key: &str) -> serde_json::Value {
    let output = gw
        .state
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&output.body.collect().await.unwrap().into_bytes()).unwrap()
}

#[tokio::test]
async fn every_record_arrives_exactly_once_across_an_s3_outage() {
    let Some(moto) = MotoS3::start().await else {
        eprintln!("skipped: moto is not installed (pip install \"moto[server]\")");
        return;
    };
    moto.create_bucket(BUCKET).await;
    let link = Outage::forward(moto.endpoint.trim_start_matches("http://")).await;
    let gw = TestGateway::start_with(&[
        ("AWS_ENDPOINT_URL_S3", &link.endpoint),
        ("LLMLITE_AUDIT_BUCKET", BUCKET),
    ])
    .await;
    let minted = gw.mint_key(json!({"key_alias": "s3-audit"})).await;
    let key = minted["key"].as_str().unwrap().to_owned();

    // The admin action went to S3 under audit/admin/.
    let admin = moto.keys(BUCKET, "audit/admin/").await;
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert!(admin[0].contains("/key-generate-"), "{admin:?}");
    assert_eq!(object(&gw, &admin[0]).await["actor"], "master_key");

    // 200 requests, 10 at a time; S3 is cut off while requests 80 to 139 are answered and
    // their records written (each phase settles before the link changes: records are written
    // after the response, and a count of requests alone would make the outage a race).
    let mut ids = Vec::new();
    for (phase, range) in [(0, 0..80), (1, 80..140), (2, 140..200)] {
        match phase {
            1 => link.cut(),
            2 => link.restore(),
            _ => {}
        }
        let mut requests = futures_util::stream::iter(range)
            .map(|n| {
                let request = gw.post(
                    "/v1/chat/completions",
                    &key,
                    json!({"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": format!("n {n}")}]}),
                );
                async move {
                    let response = request.await;
                    assert_eq!(response.status, 200);
                    response.request_id()
                }
            })
            .buffer_unordered(10);
        while let Some(id) = requests.next().await {
            ids.push(id);
        }
        gw.settled().await;
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM llmlite_audit_outbox")
        .persistent(false)
        .fetch_one(&gw.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 60, "the outage sent its records to the outbox");

    let report = gw.state.audit.redrive(1000).await.unwrap();
    assert_eq!(
        (report.shipped, report.failed),
        (u64::try_from(queued).unwrap(), 0)
    );

    let keys = moto.keys(BUCKET, "audit/20").await;
    assert_eq!(keys.len(), 200, "objects == requests");
    for id in &ids {
        let matching = keys
            .iter()
            .filter(|k| k.ends_with(&format!("-{id}.json")))
            .count();
        assert_eq!(matching, 1, "{id}");
        assert!(
            keys.iter()
                .any(|k| k.starts_with("audit/2") && k.contains("/request-"))
        );
    }
    let sample = object(&gw, &keys[0]).await;
    assert_eq!(sample["key_alias"], "s3-audit");
    assert_eq!(sample["status_code"], 200);
}
