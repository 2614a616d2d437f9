//! PII guard throughput, single-threaded, in MB/s (BENCHMARKS.md).
//!
//! Run: `cargo bench -p llmlite-tests --bench pii`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark reports and fails loudly"
)]

use std::hint::black_box;
use std::time::Instant;

use llmlite::pii::Scanner;

/// About `bytes` of ordinary English prose, made of common words and punctuation: what most
/// prompts are.
fn clean_prose(bytes: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "should",
        "summarise",
        "this",
        "paragraph",
        "about",
        "quarterly",
        "results",
        "and",
        "explain",
        "why",
        "revenue",
        "grew",
        "in",
        "the",
        "northern",
        "region",
        "while",
        "costs",
        "fell",
        "please",
        "write",
        "a",
        "short",
        "function",
        "that",
        "parses",
        "input",
        "returns",
        "error",
        "when",
        "value",
        "is",
        "missing",
        "consider",
        "edge",
        "cases",
        "team",
        "meeting",
        "notes",
        "follow",
        "up",
        "next",
        "week",
        "with",
        "design",
        "review",
        "draft",
    ];
    let mut text = String::with_capacity(bytes + 64);
    let mut n = 0usize;
    while text.len() < bytes {
        text.push_str(WORDS[(n * 7 + n / 13) % WORDS.len()]);
        n += 1;
        text.push_str(if n.is_multiple_of(17) {
            ". "
        } else if n.is_multiple_of(29) {
            ",\n"
        } else {
            " "
        });
    }
    text
}

/// The labelled corpus's texts, repeated: several findings in every line.
fn pii_dense(bytes: usize) -> String {
    let corpus =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pii/corpus.jsonl")).unwrap();
    let texts: Vec<String> = corpus
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut text = String::with_capacity(bytes + 1024);
    for t in texts.iter().cycle() {
        if text.len() >= bytes {
            break;
        }
        text.push_str(t);
        text.push('\n');
    }
    text
}

fn throughput(scanner: &Scanner, text: &str, rounds: usize) -> (f64, usize) {
    let mut findings = 0;
    black_box(scanner.scan(text));
    let start = Instant::now();
    for _ in 0..rounds {
        findings = black_box(scanner.scan(black_box(text))).len();
    }
    let seconds = start.elapsed().as_secs_f64();
    (
        (text.len() * rounds) as f64 / seconds / 1_000_000.0,
        findings,
    )
}

fn main() {
    let scanner = Scanner::new(&[]).unwrap();
    let clean = clean_prose(8 * 1024 * 1024);
    let dense = pii_dense(2 * 1024 * 1024);
    // Per-prompt sizes matter too: the guard scans each message on its own.
    let prompt = clean_prose(4 * 1024);
    let (clean_mbps, clean_findings) = throughput(&scanner, &clean, 10);
    let (dense_mbps, dense_findings) = throughput(&scanner, &dense, 5);
    let (prompt_mbps, _) = throughput(&scanner, &prompt, 20_000);
    println!("\n## PII guard throughput (single thread)\n");
    println!("| text | size | findings | MB/s |\n|---|---|---|---|");
    println!(
        "| clean prose | {:.1} MB | {clean_findings} | {clean_mbps:.0} |",
        clean.len() as f64 / 1e6
    );
    println!("| clean prose, one 4 KiB prompt at a time | 4 KiB | 0 | {prompt_mbps:.0} |");
    println!(
        "| PII-dense (the corpus, repeated) | {:.1} MB | {dense_findings} | {dense_mbps:.0} |",
        dense.len() as f64 / 1e6
    );
}
