//! Precision and recall of the PII detectors on two labelled corpora, per entity:
//! - the tuning corpus (`tests/pii/corpus.jsonl`, made by `generate_corpus.py` with Faker), which
//!   the detectors were written against;
//! - the held-out corpus (`tests/pii/heldout.jsonl`, made by `generate_heldout.py` with mimesis,
//!   schwifty and libphonenumber, in other locales and layouts, with about 1,500 generated hard
//!   negatives), which they are never tuned on.
//!
//! A prediction is right when it overlaps a labelled span of the same entity. Spans are in
//! characters; the text is scanned in bytes.
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

impl Counts {
    fn precision(&self) -> f64 {
        f64::from(self.true_positive) / f64::from((self.true_positive + self.false_positive).max(1))
    }

    fn recall(&self) -> f64 {
        f64::from(self.true_positive) / f64::from((self.true_positive + self.false_negative).max(1))
    }
}

struct Evaluation {
    counts: BTreeMap<String, Counts>,
    positives: usize,
    negatives: usize,
    /// Hard negatives (texts with no labelled span) with any finding.
    flagged_negatives: usize,
}

/// The byte offset of character `at` of `text`.
fn byte_offset(text: &str, at: usize) -> usize {
    text.char_indices().nth(at).map_or(text.len(), |(i, _)| i)
}

fn evaluate(file: &str) -> Evaluation {
    let path = if file.starts_with('/') {
        file.to_owned()
    } else {
        format!("{}/pii/{file}", env!("CARGO_MANIFEST_DIR"))
    };
    let corpus = std::fs::read_to_string(path).unwrap();
    let scanner = Scanner::new(&[]).unwrap();
    let mut evaluation = Evaluation {
        counts: BTreeMap::new(),
        positives: 0,
        negatives: 0,
        flagged_negatives: 0,
    };
    for line in corpus.lines() {
        let record: Record = serde_json::from_str(line).unwrap();
        let spans: Vec<(usize, usize, &str)> = record
            .spans
            .iter()
            .map(|s| {
                (
                    byte_offset(&record.text, s.start),
                    byte_offset(&record.text, s.end),
                    s.entity.as_str(),
                )
            })
            .collect();
        evaluation.positives += spans.len();
        let found = scanner.scan(&record.text);
        if spans.is_empty() {
            evaluation.negatives += 1;
            if !found.is_empty() {
                evaluation.flagged_negatives += 1;
            }
        }
        let overlaps = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
        for f in &found {
            let hit = spans
                .iter()
                .any(|s| s.2 == f.entity.name() && overlaps((s.0, s.1), (f.start, f.end)));
            let c = evaluation
                .counts
                .entry(f.entity.name().to_owned())
                .or_default();
            if hit {
                c.true_positive += 1;
            } else {
                c.false_positive += 1;
                eprintln!(
                    "{file}: false {}: {:?} in {:?}",
                    f.entity,
                    &record.text[f.start..f.end],
                    record.text
                );
            }
        }
        for s in &spans {
            let seen = found
                .iter()
                .any(|f| s.2 == f.entity.name() && overlaps((s.0, s.1), (f.start, f.end)));
            if !seen {
                evaluation
                    .counts
                    .entry(s.2.to_owned())
                    .or_default()
                    .false_negative += 1;
                eprintln!(
                    "{file}: missed {}: {:?} in {:?}",
                    s.2,
                    &record.text[s.0..s.1],
                    record.text
                );
            }
        }
    }
    println!(
        "\n{file}\n\n| entity | precision | recall | TP | FP | FN |\n|---|---|---|---|---|---|"
    );
    for (entity, c) in &evaluation.counts {
        println!(
            "| {entity} | {:.4} | {:.4} | {} | {} | {} |",
            c.precision(),
            c.recall(),
            c.true_positive,
            c.false_positive,
            c.false_negative
        );
    }
    println!(
        "\nhard negatives with a finding: {} of {}",
        evaluation.flagged_negatives, evaluation.negatives
    );
    evaluation
}

const ENTITIES: &[&str] = &[
    "AWS_ACCESS_KEY",
    "CREDIT_CARD",
    "EMAIL_ADDRESS",
    "IBAN_CODE",
    "IP_ADDRESS",
    "PHONE_NUMBER",
    "PRIVATE_KEY",
    "UK_NINO",
    "US_SSN",
];

/// Every entity of `evaluation` at or above `precision` and `recall`.
fn below(evaluation: &Evaluation, precision: f64, recall: f64) -> Vec<String> {
    ENTITIES
        .iter()
        .filter_map(|entity| {
            let Some(c) = evaluation.counts.get(*entity) else {
                return Some(format!("{entity}: never seen"));
            };
            (c.precision() < precision || c.recall() < recall).then(|| {
                format!(
                    "{entity}: precision {:.4}, recall {:.4}",
                    c.precision(),
                    c.recall()
                )
            })
        })
        .collect()
}

#[test]
fn tuning_corpus_precision_and_recall_per_entity() {
    let evaluation = evaluate("corpus.jsonl");
    assert!(evaluation.positives >= 2000, "{}", evaluation.positives);
    let failures = below(&evaluation, 0.97, 0.97);
    assert!(failures.is_empty(), "below 0.97: {failures:?}");
}

#[test]
fn held_out_corpus_precision_and_recall_per_entity() {
    // `PII_HELDOUT` scores another held-out corpus (a fresh seed) instead.
    let file = std::env::var("PII_HELDOUT").unwrap_or_else(|_| "heldout.jsonl".to_owned());
    let evaluation = evaluate(&file);
    assert!(evaluation.positives >= 2500, "{}", evaluation.positives);
    assert!(evaluation.negatives >= 1500, "{}", evaluation.negatives);
    let failures = below(&evaluation, 0.99, 0.97);
    assert!(
        failures.is_empty(),
        "below precision 0.99 or recall 0.97: {failures:?}"
    );
    // At most 0.5% of the hard negatives flagged.
    let rate = evaluation.flagged_negatives as f64 / evaluation.negatives as f64;
    assert!(rate <= 0.005, "{rate:.4} of hard negatives flagged");
}
