//! The PII guard: finds personal data and secrets in what is sent to a model (and, when the
//! policy says so, in its answers), and blocks, masks, logs or allows each finding by policy.
//!
//! - `scanner`: the entities, the compiled detectors (a `RegexSet` prefilter, then only the
//!   patterns that matched), the findings and their masking.
//! - `validators`: the checks a candidate must pass (Luhn, IBAN, SSN, NINO, IP, AWS secret);
//!   phone numbers are checked against libphonenumber's metadata in [`phone`].
//! - [`context`]: the context words that turn a weak candidate into a finding.
//! - `policy`: the action per entity, and whether answers are scanned.
//! - `walkers`: the walks over each API's request shape, and the [`Report`] they return.
//! - [`output`]: the guard over the model's answers, whole or streamed.
//!
//! Findings carry the entity and the byte span; callers record types and counts, never values.

pub mod context;
pub mod output;
pub mod phone;
mod policy;
mod scanner;
mod validators;
mod walkers;

pub use context::{Cues, CuesError};
pub use output::OutputGuard;
pub use policy::{Action, OUTPUT_FIELD, Policy, PolicyError};
pub use scanner::{Entity, Finding, Options, Scanner, ScannerError, mask};
pub use walkers::Report;
