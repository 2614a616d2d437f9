//! The audit trail on S3 (moto's server, through the real aws-sdk-s3 client): the documented
//! object keys, request records in batches, and no loss across an outage.
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

/// An object's text, read with the gateway's own (signed) S3 client: moto refuses anonymous
/// reads.
async fn object_text(gw: &TestGateway, key: &str) -> String {
    let output = gw
        .state
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    String::from_utf8(output.body.collect().await.unwrap().into_bytes().to_vec()).unwrap()
}

/// An object holding one JSON record.
async fn object(gw: &TestGateway, key: &str) -> serde_json::Value {
    serde_json::from_str(&object_text(gw, key).await).unwrap()
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
    // their records queued, and the queue is shipped after each phase (each phase settles
    // first: records are queued by settlement, after the response).
    let mut ids = Vec::new();
    let mut shipped = Vec::new();
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
        shipped.push(gw.state.audit.ship_requests(true).await.unwrap().records);
    }
    // While S3 was away nothing left the queue; after, the 60 it kept left with the 60 new.
    assert_eq!(shipped, [80, 0, 120], "records shipped after each phase");
    assert_eq!(
        gw.count("SELECT count(*) FROM llmlite_audit_queue").await,
        0
    );

    // One PUT per batch, not per request, and every request's record exactly once.
    let keys = moto.keys(BUCKET, "audit/20").await;
    assert!(
        keys.iter()
            .all(|k| k.contains("/requests-") && k.ends_with(".jsonl")),
        "{keys:?}"
    );
    assert!(
        keys.len() <= 4,
        "a few batches, not a PUT per request: {keys:?}"
    );
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for key in &keys {
        for line in object_text(&gw, key).await.lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            *seen
                .entry(record["request_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(seen.len(), 200);
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "{id}");
    }
    let first = object_text(&gw, &keys[0]).await;
    let sample: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    assert_eq!(sample["key_alias"], "s3-audit");
    assert_eq!(sample["status_code"], 200);
}
