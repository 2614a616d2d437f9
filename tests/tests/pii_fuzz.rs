//! Arbitrary Unicode through the PII guard: no text a client sends may panic it. Each case is a
//! text, either arbitrary characters or built from the pieces PII formats are made of (mixed with
//! digits of other scripts, combining marks, emoji and NUL), scanned and masked on its own, then
//! guarded in one of the twelve places of a chat request the guard reads (every message kind,
//! tool calls, tool definitions and their schemas, `tool_choice`, `response_format`). Each text is
//! (one case in six) streamed through the answers' guard ([`OutputGuard`]) in deltas cut at arbitrary
//! characters, after a prefix long enough to make the held-back window release text: under LOG
//! what comes out is exactly what went in, and no policy panics it.
//!
//! CI runs 100,000 cases (50,000 per test). A longer campaign (`PROPTEST_CASES` per test):
//! `PROPTEST_CASES=10000000 cargo test --release -p llmlite-tests --test pii_fuzz`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails loudly"
)]

use llmlite::openai::ChatCompletionRequest;
use std::sync::Arc;

use llmlite::pii::{OutputGuard, Policy, Scanner, mask};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

/// Digits of other scripts, 2 to 4 bytes each: Devanagari, Arabic-Indic, fullwidth, NKo, Thai,
/// mathematical bold.
const OTHER_DIGITS: &[char] = &['२', '٣', '３', '߃', '๓', '𝟗'];

/// The shapes of the formats: `D` is a digit, `L` a capital letter, anything else itself.
const SHAPES: &[&str] = &[
    "DDDD DDDD DDDD DDDD",
    "DDDDDDDDDDDDDDDD",
    "DDDD-DDDDDD-DDDDD",
    "LLDD LLLL DDDD DDDD DDDD DD",
    "LLDDLLLLDDDDDDDDDDDDDD",
    "DDD-DD-DDDD",
    "DDD DD DDDD",
    "LL DD DD DD L",
    "LLDDDDDDL",
    "DDD.DDD.DDD.DDD",
    "+DD DD DDDD DDDD",
    "0DDDD DDDDDD",
    "(DDD) DDD-DDDD",
    "AKIALLLLLLLLLLLLLLLL",
];

/// What separates or surrounds formats, and characters that trip byte/char confusions: letters
/// that fold to ASCII under Unicode case-insensitivity (Kelvin sign, long s), a combining mark, a
/// zero-width space, emoji, a CJK ideograph, NUL.
const OTHERS: &[&str] = &[
    " ",
    "-",
    ".",
    ":",
    "@",
    "/",
    "\n",
    "\u{212a}",
    "\u{17f}",
    "é",
    "\u{301}",
    "\u{200b}",
    "😀",
    "卡",
    "\0",
    "x@y.io",
    "::",
    "aws",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
];

fn arbitrary_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..40).prop_map(|chars| chars.into_iter().collect())
}

/// A shape filled with ASCII digits and capitals, then a few of its digits (or, one time in
/// four, all of them) swapped for digits of other scripts: formats a validator takes for its
/// own until it reads them.
fn shaped() -> impl Strategy<Value = String> {
    let foreign = prop_oneof![
        3 => prop::collection::vec((0..32usize, prop::sample::select(OTHER_DIGITS)), 1..3),
        1 => prop::sample::select(OTHER_DIGITS).prop_map(|d| (0..32).map(|i| (i, d)).collect()),
    ];
    (
        prop::sample::select(SHAPES),
        prop::collection::vec(prop::char::range('0', '9'), 32),
        prop::collection::vec(prop::char::range('A', 'Z'), 32),
        foreign,
    )
        .prop_map(|(shape, digits, capitals, foreign)| {
            let mut filled: Vec<char> = Vec::new();
            let mut digit_places = Vec::new();
            for (i, c) in shape.chars().enumerate() {
                match c {
                    'D' => {
                        digit_places.push(filled.len());
                        filled.push(digits[i % digits.len()]);
                    }
                    'L' => filled.push(capitals[i % capitals.len()]),
                    c => filled.push(c),
                }
            }
            for (n, digit) in foreign {
                if let Some(&place) = digit_places.get(n % digit_places.len().max(1)) {
                    filled[place] = digit;
                }
            }
            filled.into_iter().collect()
        })
}

/// Shapes of formats with foreign digits, between separators and odd characters.
fn pii_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => shaped(),
        2 => prop::sample::select(OTHERS).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// The places in [`request`] a text can go.
const PLACES: usize = 12;

/// A request with `text` in one of the places the guard reads (`place`), every other one empty.
fn request(text: &str, place: usize) -> ChatCompletionRequest {
    let t = |n: usize| if n == place { text } else { "" };
    let body = json!({
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "system", "content": t(0)},
            {"role": "user", "content": [{"type": "text", "text": t(1)}]},
            {"role": "assistant", "content": t(2), "tool_calls": [{"id": t(3), "type": "function",
                "function": {"name": t(4), "arguments": t(5)}}]},
            {"role": "tool", "tool_call_id": t(3), "content": t(6)},
        ],
        "tools": [{"type": "function", "function": {"name": t(4), "description": t(7),
            "parameters": {"type": "object", "properties": {t(8): {"type": "string",
                "description": t(9)}}, "required": [t(8)]}}}],
        "tool_choice": {"type": "function", "function": {"name": t(4)}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
            "schema": {"description": t(10), "enum": [t(11), 7, null]}}},
    });
    serde_json::from_value(body).expect("a well-formed request")
}

/// `PROPTEST_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Each case: `text` through `scan` and `mask`, then through `guard` in a request that carries
/// it in one place, under a MASK, BLOCK or LOG policy for every entity.
fn no_panic(text: impl Strategy<Value = String>) {
    let scanner = Arc::new(Scanner::new(&[("TICKET".into(), r"\bTCK-\d{6}\b".into())]).unwrap());
    let known = scanner.entity_names();
    let policies: Vec<Policy> = ["MASK", "BLOCK", "LOG"]
        .iter()
        .map(|action| Policy::parse(&json!({"*": action}), known).unwrap())
        .collect();
    // Half the CI total per test: the two run side by side on two cores, in a debug build.
    let mut runner = TestRunner::new(Config {
        cases: cases(50_000),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        text,
        0..PLACES,
        0..policies.len(),
        prop::collection::vec(1..12usize, 1..8),
    );
    runner
        .run(&strategy, |(text, place, policy, cuts)| {
            let findings = scanner.scan(&text);
            let mut at = 0;
            for f in &findings {
                // In order, without overlaps, on character boundaries.
                prop_assert!(at <= f.start && f.start < f.end, "{findings:?}");
                prop_assert!(text.get(f.start..f.end).is_some(), "{f:?}");
                at = f.end;
            }
            mask(&text, &findings);
            let report = scanner.guard(&mut request(&text, place), &policies[policy]);
            // MASK never blocks; every policy reports in the shapes the handler reads.
            prop_assert!(policy != 0 || report.blocked.is_empty(), "{report:?}");
            prop_assert!(report.to_json().is_object());
            prop_assert_eq!(report.blocked_summary().len(), report.blocked.len());
            // Streamed as an answer, one case in six (the window rescans its text at every
            // delta: the costly part): the prefix, then the text in deltas of `cuts` characters.
            if place >= 2 {
                return Ok(());
            }
            let answer = format!("{}{text}", "word ".repeat(60));
            let chars: Vec<char> = answer.chars().collect();
            let mut deltas = Vec::new();
            let (mut at, mut n) = (0, 0);
            while at < chars.len() {
                let size = cuts[n % cuts.len()];
                deltas.push(
                    chars[at..(at + size).min(chars.len())]
                        .iter()
                        .collect::<String>(),
                );
                at += size;
                n += 1;
            }
            let output_policy = policies[policy].clone().with_output(true);
            let log = Policy::parse(&json!({"*": "LOG", "output": true}), known).unwrap();
            for (policy, identity) in [(output_policy, false), (log, true)] {
                let mut guard = OutputGuard::new(&scanner, policy).unwrap();
                let mut out = String::new();
                for delta in &deltas {
                    out.push_str(&guard.push(3, delta));
                }
                out.push_str(&guard.flush(3));
                if identity {
                    prop_assert_eq!(&out, &answer);
                } else if guard.blocked().is_some() {
                    prop_assert!(out.len() <= answer.len() + 64 * 20);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn no_arbitrary_text_panics_the_guard() {
    no_panic(arbitrary_text());
}

#[test]
fn no_pii_like_text_panics_the_guard() {
    no_panic(pii_like_text());
}
