//! Precision and recall of the PII detectors on the labelled corpus (`tests/pii/corpus.jsonl`,
//! made by `tests/pii/generate_corpus.py`). A prediction is right when it overlaps a labelled
//! span of the same entity.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a test fails loudly and reports"
)]

use std::collections::BTreeMap;

use llmlite::pii::Scanner;
use serde::Deserialize;

#[derive(Deserialize)]
struct Record {
    text: String,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Span {
    start: usize,
    end: usize,
    entity: String,
}

#[derive(Default)]
struct Counts {
    true_positive: u32,
    false_positive: u32,
    false_negative: u32,
}

/// Entities whose precision and recall must both reach 0.97.
const STRICT: &[&str] = &[
    "CREDIT_CARD",
    "IBAN_CODE",
    "US_SSN",
    "UK_NINO",
    "EMAIL_ADDRESS",
    "AWS_ACCESS_KEY",
];

#[test]
fn precision_and_recall_per_entity() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/pii/corpus.jsonl");
    let corpus = std::fs::read_to_string(path).unwrap();
    let scanner = Scanner::new(&[]).unwrap();
    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    let mut positives = 0;
    for line in corpus.lines() {
        let record: Record = serde_json::from_str(line).unwrap();
        positives += record.spans.len();
        let found = scanner.scan(&record.text);
        let overlaps = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
        for f in &found {
            let hit = record.spans.iter().any(|s| {
                s.entity == f.entity.name() && overlaps((s.start, s.end), (f.start, f.end))
            });
            let c = counts.entry(f.entity.name().to_owned()).or_default();
            if hit {
                c.true_positive += 1;
            } else {
                c.false_positive += 1;
                eprintln!(
                    "false {}: {:?} in {:?}",
                    f.entity,
                    &record.text[f.start..f.end],
                    record.text
                );
            }
        }
        for s in &record.spans {
            let seen = found.iter().any(|f| {
                s.entity == f.entity.name() && overlaps((s.start, s.end), (f.start, f.end))
            });
            if !seen {
                counts.entry(s.entity.clone()).or_default().false_negative += 1;
                eprintln!("missed {}: {:?}", s.entity, &record.text[s.start..s.end]);
            }
        }
    }
    assert!(positives >= 2000, "{positives} positive spans");
    println!("\n| entity | precision | recall | TP | FP | FN |\n|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (entity, c) in &counts {
        let precision =
            f64::from(c.true_positive) / f64::from((c.true_positive + c.false_positive).max(1));
        let recall =
            f64::from(c.true_positive) / f64::from((c.true_positive + c.false_negative).max(1));
        println!(
            "| {entity} | {precision:.4} | {recall:.4} | {} | {} | {} |",
            c.true_positive, c.false_positive, c.false_negative
        );
        if STRICT.contains(&entity.as_str()) && (precision < 0.97 || recall < 0.97) {
            failures.push(format!(
                "{entity}: precision {precision:.4}, recall {recall:.4}"
            ));
        }
    }
    for entity in STRICT {
        assert!(counts.contains_key(*entity), "{entity} never seen");
    }
    assert!(failures.is_empty(), "below 0.97: {failures:?}");
}
