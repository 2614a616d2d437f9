//! The guard over the model's answers (`LLMLITE_PII_SCAN_OUTPUT`, or `"output": true` in a key's
//! or team's PII policy). The policy's actions apply as they do to prompts: MASK replaces a span,
//! LOG records it, BLOCK withholds the answer.
//!
//! A streamed answer is scanned through a held-back window per content block: text goes out
//! once [`HOLD`] bytes have followed it, so a card number, IBAN or phone number split across
//! deltas is whole when it is judged; a span across the window's edge is held until it ends, and
//! an unterminated `-----BEGIN ... PRIVATE KEY-----` block is held (up to [`PEM_HOLD`]) until its
//! end line arrives. The last [`CONTEXT`] bytes sent stay as context, for context words and the
//! AWS-secret check.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::policy::Policy;
use super::scanner::{Finding, MaskStyle, Scanner};
use super::walkers::{Pass, Report, apply};
use crate::error::ApiError;

/// Bytes of a streamed answer held back before they are sent: longer than any entity but a
/// PEM block.
pub const HOLD: usize = 256;
/// Bytes of sent text kept as context for the next scan.
pub const CONTEXT: usize = 96;
/// The most an unterminated private-key block is held.
pub const PEM_HOLD: usize = 64 * 1024;

/// One content block's text not sent yet, and what was sent just before it.
#[derive(Debug, Default)]
struct Held {
    context: String,
    pending: String,
}

/// One answer's output guard.
pub struct OutputGuard {
    scanner: Arc<Scanner>,
    policy: Policy,
    report: Report,
    held: BTreeMap<i64, Held>,
}

impl OutputGuard {
    /// A guard for one answer, or `None` when `policy` does not scan answers.
    pub fn new(scanner: &Arc<Scanner>, policy: Policy) -> Option<OutputGuard> {
        policy.scans_output().then(|| OutputGuard {
            scanner: Arc::clone(scanner),
            policy,
            report: Report::default(),
            held: BTreeMap::new(),
        })
    }

    /// Guards a whole text of a non-streamed answer in place.
    pub fn text(&mut self, text: &mut String) {
        let mut pass = Pass {
            scanner: &self.scanner,
            policy: &self.policy,
            report: std::mem::take(&mut self.report),
        };
        pass.text(text);
        self.report = pass.report;
    }

    /// Guards every string (and key) of a JSON value in place: a tool call's input.
    pub fn json(&mut self, value: &mut Value) {
        let mut pass = Pass {
            scanner: &self.scanner,
            policy: &self.policy,
            report: std::mem::take(&mut self.report),
        };
        pass.json(value);
        self.report = pass.report;
    }

    /// Adds a streamed delta of content block `block`; returns the text that may be sent now
    /// (possibly empty). Nothing is returned once something BLOCK was found: see
    /// [`OutputGuard::blocked`].
    pub fn push(&mut self, block: i64, delta: &str) -> String {
        let held = self.held.entry(block).or_default();
        held.pending.push_str(delta);
        if held.pending.len() <= HOLD {
            return String::new();
        }
        self.release(block, false)
    }

    /// The rest of content block `block`, which has ended.
    pub fn flush(&mut self, block: i64) -> String {
        let released = self.release(block, true);
        self.held.remove(&block);
        released
    }

    /// The blocks with text still held, in order.
    pub fn held_blocks(&self) -> Vec<i64> {
        self.held
            .iter()
            .filter(|(_, h)| !h.pending.is_empty())
            .map(|(b, _)| *b)
            .collect()
    }

    /// The error that ends the answer, when the policy blocks something found in it.
    pub fn blocked(&self) -> Option<ApiError> {
        (!self.report.blocked.is_empty()).then(|| ApiError::PiiBlockedOutput {
            entities: self.report.blocked_summary(),
        })
    }

    /// What was found, by entity (types and counts only).
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn release(&mut self, block: i64, all: bool) -> String {
        if !self.report.blocked.is_empty() {
            return String::new();
        }
        let Some(held) = self.held.get_mut(&block) else {
            return String::new();
        };
        let joined = format!("{}{}", held.context, held.pending);
        let offset = held.context.len();
        let mut cut = if all {
            joined.len()
        } else {
            floor(&joined, joined.len().saturating_sub(HOLD))
        };
        if !all
            && let Some(begin) = joined.get(offset..).and_then(|t| t.rfind("-----BEGIN"))
            && joined
                .get(offset + begin..)
                .is_some_and(|t| !t.contains("-----END") && t.len() < PEM_HOLD)
        {
            cut = cut.min(offset + begin);
        }
        if cut <= offset {
            return String::new();
        }
        let findings = self.scanner.scan(&joined);
        // A span across the cut is held whole (findings are in order and apart).
        for f in &findings {
            if f.start < cut && f.end > cut {
                cut = f.start;
                break;
            }
        }
        if cut <= offset {
            return String::new();
        }
        let released: Vec<Finding> = findings
            .into_iter()
            .filter(|f| f.start >= offset && f.end <= cut)
            .map(|f| Finding {
                start: f.start - offset,
                end: f.end - offset,
                ..f
            })
            .collect();
        let piece = joined.get(offset..cut).unwrap_or_default();
        let out = match apply(
            &self.policy,
            &mut self.report,
            piece,
            released,
            MaskStyle::Prose,
        ) {
            Some(masked) => masked,
            None => piece.to_owned(),
        };
        let context_from = floor(&joined, cut.saturating_sub(CONTEXT));
        held.context = joined.get(context_from..cut).unwrap_or_default().to_owned();
        held.pending = joined.get(cut..).unwrap_or_default().to_owned();
        if self.report.blocked.is_empty() {
            out
        } else {
            String::new()
        }
    }
}

fn floor(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::Entity;

    fn guard(policy: serde_json::Value) -> OutputGuard {
        let scanner = Arc::new(Scanner::new(&[]).unwrap());
        let known: Vec<String> = Entity::BUILT_IN
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        let policy = Policy::parse(&policy, &known).unwrap();
        OutputGuard::new(&scanner, policy).unwrap()
    }

    fn stream(guard: &mut OutputGuard, deltas: &[&str]) -> String {
        let mut out = String::new();
        for delta in deltas {
            out.push_str(&guard.push(0, delta));
        }
        out.push_str(&guard.flush(0));
        out
    }

    #[test]
    fn off_unless_the_policy_says_so() {
        let scanner = Arc::new(Scanner::new(&[]).unwrap());
        assert!(OutputGuard::new(&scanner, Policy::builtin()).is_none());
        assert!(OutputGuard::new(&scanner, Policy::builtin().with_output(true)).is_some());
    }

    #[test]
    fn a_span_split_across_deltas_is_masked_whole() {
        let mut g = guard(serde_json::json!({"CREDIT_CARD": "MASK", "output": true}));
        let filler = "word ".repeat(100);
        let out = stream(
            &mut g,
            &[
                &filler,
                "your card is 4539 14",
                "88 0343 6467",
                " thanks ",
                &filler,
            ],
        );
        assert_eq!(
            out,
            format!("{filler}your card is <CREDIT_CARD> thanks {filler}")
        );
        assert_eq!(g.report().counts["CREDIT_CARD"], 1);
        // One byte at a time.
        let mut g = guard(serde_json::json!({"CREDIT_CARD": "MASK", "output": true}));
        let text = format!("{filler}card 4539148803436467 end{filler}");
        let bytes: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(
            stream(&mut g, &refs),
            format!("{filler}card <CREDIT_CARD> end{filler}")
        );
    }

    #[test]
    fn block_withholds_the_rest() {
        let mut g = guard(serde_json::json!({"US_SSN": "BLOCK", "output": true}));
        let filler = "word ".repeat(100);
        let out = stream(&mut g, &[&filler, "ssn 536-90-", "4399 and more", &filler]);
        assert!(!out.contains("4399"), "{out}");
        assert!(g.blocked().is_some());
    }

    #[test]
    fn a_private_key_is_held_until_its_end_line() {
        let mut g = guard(serde_json::json!({"PRIVATE_KEY": "MASK", "output": true}));
        let body = "QUJD".repeat(200);
        let out = stream(
            &mut g,
            &[
                "here: -----BEGIN RSA PRIVATE KEY-----\n",
                &body,
                "\n-----END RSA PRIVATE KEY----- done",
            ],
        );
        assert_eq!(out, "here: <PRIVATE_KEY> done");
    }
}
