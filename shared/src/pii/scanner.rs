//! The scanner: the entities the guard knows, the compiled detectors (one `RegexSet` prefilter
//! over all their patterns, then only the candidates of the patterns that matched are found and
//! checked by [`validators`](super::validators)), the findings it returns, and the masking of
//! their spans. Nothing is allocated when nothing matches.
//!
//! The formats are ASCII, and so are the patterns (`(?-u)`): a digit is `0-9` and a word boundary
//! is an ASCII one. Unicode `\d` would take a Devanagari `२` for a digit (three bytes where a
//! validator expects one), Unicode `\b` would hide a card number written right after a CJK
//! ideograph, and it stops the regex engine's fast DFA on any non-ASCII text.
//!
//! Findings carry the entity and the byte span; callers record types and counts, never values.

use std::fmt;

use regex::{Regex, RegexSet};

use super::context::Cues;
use super::phone;
use super::validators::{
    Verdict, grade_card, grade_nino, grade_ssn, valid_aws_secret, valid_email, valid_iban,
    valid_ipv4, valid_ipv6,
};

/// What the guard looks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entity {
    EmailAddress,
    PhoneNumber,
    CreditCard,
    IbanCode,
    UsSsn,
    UkNino,
    IpAddress,
    AwsAccessKey,
    PrivateKey,
    /// A regex entity from configuration.
    Custom(String),
}

impl Entity {
    pub fn name(&self) -> &str {
        match self {
            Entity::EmailAddress => "EMAIL_ADDRESS",
            Entity::PhoneNumber => "PHONE_NUMBER",
            Entity::CreditCard => "CREDIT_CARD",
            Entity::IbanCode => "IBAN_CODE",
            Entity::UsSsn => "US_SSN",
            Entity::UkNino => "UK_NINO",
            Entity::IpAddress => "IP_ADDRESS",
            Entity::AwsAccessKey => "AWS_ACCESS_KEY",
            Entity::PrivateKey => "PRIVATE_KEY",
            Entity::Custom(name) => name,
        }
    }

    pub const BUILT_IN: [Entity; 9] = [
        Entity::EmailAddress,
        Entity::PhoneNumber,
        Entity::CreditCard,
        Entity::IbanCode,
        Entity::UsSsn,
        Entity::UkNino,
        Entity::IpAddress,
        Entity::AwsAccessKey,
        Entity::PrivateKey,
    ];
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding: an entity at `start..end` (bytes) of the scanned text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub entity: Entity,
    pub start: usize,
    pub end: usize,
}

type Validator = fn(&str, &str, usize) -> bool;
type Grader = fn(&Rules, &str, &str, usize) -> Verdict;

#[derive(Clone, Copy)]
enum Check {
    /// Valid or not.
    Plain(Validator),
    /// Valid, invalid, or weak.
    Graded(Grader),
}

struct Detector {
    entity: Entity,
    regex: Regex,
    check: Check,
}

/// What the graded validators need: the phone regions and the context words.
pub(super) struct Rules {
    regions: Vec<phone::Region>,
    cues: Cues,
}

/// The detectors' settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The regions a national phone number may belong to (`LLMLITE_PII_PHONE_REGIONS`).
    pub phone_regions: Vec<phone::Region>,
    /// Context words per entity (`LLMLITE_PII_CONTEXT`).
    pub cues: Cues,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            phone_regions: phone::regions(phone::DEFAULT_REGIONS).unwrap_or_default(),
            cues: Cues::default(),
        }
    }
}

/// The detectors. Build once per process; scanning borrows it. The built-in patterns are
/// compiled on first use (or by [`Scanner::warm`], on a thread of its own at start-up), not when
/// the scanner is made: compiling them is most of a cold start's CPU, and a Lambda function's
/// first request can overlap it with its own database and network round trips. Custom patterns
/// are compiled when the scanner is made, so a bad one is a configuration error at start-up.
pub struct Scanner {
    /// Every entity's name, built-in then custom, in detector order.
    names: Vec<String>,
    custom: Vec<(String, Regex)>,
    compiled: std::sync::OnceLock<Compiled>,
    rules: Rules,
}

/// The compiled detectors: one `RegexSet` prefilter over every pattern, and each pattern alone.
struct Compiled {
    prefilter: RegexSet,
    detectors: Vec<Detector>,
}

#[derive(Debug, thiserror::Error)]
#[error("custom PII entity `{name}`: {reason}")]
pub struct ScannerError {
    pub name: String,
    pub reason: String,
}

const EMAIL: &str =
    r"(?i-u)\b[a-z0-9][a-z0-9._%+-]{0,63}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b";
const CARD: &str = r"(?-u)\b\d(?:[ -]?\d){12,18}\b";
const IBAN: &str = r"(?-u)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b";
const SSN: &str = r"(?-u)\b\d{3}[- ]?\d{2}[- ]?\d{4}\b";
const NINO: &str = r"(?i-u)\b[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b";
const IPV4: &str = r"(?-u)\b(?:\d{1,3}\.){3}\d{1,3}\b";
const IPV6: &str = r"(?i-u)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}";
const AWS_KEY_ID: &str = r"(?-u)\b(?:AKIA|ASIA)[A-Z0-9]{16}\b";
const AWS_SECRET: &str = r"[A-Za-z0-9/+]{40,}";
const PEM: &str =
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----";

/// The built-in detectors: entity, pattern, check. In order: where a phone candidate and another
/// entity cover the same span (a card number, an SSN), the other entity is named, so phone
/// numbers come last.
const BUILT_IN_DETECTORS: [(Entity, &str, Check); 11] = [
    (Entity::EmailAddress, EMAIL, Check::Plain(valid_email)),
    (
        Entity::CreditCard,
        CARD,
        Check::Graded(|_, m, text, start| grade_card(m, text, start)),
    ),
    (Entity::IbanCode, IBAN, Check::Plain(valid_iban)),
    (
        Entity::UsSsn,
        SSN,
        Check::Graded(|_, m, text, start| grade_ssn(m, text, start)),
    ),
    (
        Entity::UkNino,
        NINO,
        Check::Graded(|_, m, text, start| grade_nino(m, text, start)),
    ),
    (Entity::IpAddress, IPV4, Check::Plain(valid_ipv4)),
    (Entity::IpAddress, IPV6, Check::Plain(valid_ipv6)),
    (
        Entity::AwsAccessKey,
        AWS_KEY_ID,
        Check::Plain(|_, _, _| true),
    ),
    (
        Entity::AwsAccessKey,
        AWS_SECRET,
        Check::Plain(valid_aws_secret),
    ),
    (Entity::PrivateKey, PEM, Check::Plain(|_, _, _| true)),
    (
        Entity::PhoneNumber,
        phone::PATTERN,
        Check::Graded(|rules, m, text, start| phone::check(&rules.regions, m, text, start)),
    ),
];

impl Scanner {
    /// The built-in detectors, with the default options, and `custom` (name, regex) entities.
    pub fn new(custom: &[(String, String)]) -> Result<Self, ScannerError> {
        Scanner::with_options(custom, &Options::default())
    }

    /// The built-in detectors with `options`, and `custom` (name, regex) entities.
    pub fn with_options(
        custom: &[(String, String)],
        options: &Options,
    ) -> Result<Self, ScannerError> {
        let mut compiled_custom = Vec::with_capacity(custom.len());
        for (name, pattern) in custom {
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !valid_name {
                return Err(ScannerError {
                    name: name.clone(),
                    reason: "names are 1-64 of A-Z, 0-9 and _".into(),
                });
            }
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ScannerError {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            compiled_custom.push((name.clone(), regex));
        }
        // The built-ins in the order `compile` adds their detectors (IP addresses and AWS keys
        // have two patterns each, one name).
        let mut names: Vec<String> = BUILT_IN_DETECTORS
            .iter()
            .map(|(entity, _, _)| entity.name().to_owned())
            .collect();
        // IP addresses and AWS keys have two patterns each, one name.
        names.dedup();
        names.extend(compiled_custom.iter().map(|(name, _)| name.clone()));
        let scanner = Scanner {
            names,
            custom: compiled_custom,
            compiled: std::sync::OnceLock::new(),
            rules: Rules {
                regions: options.phone_regions.clone(),
                cues: options.cues.clone(),
            },
        };
        if !scanner.custom.is_empty() {
            // The prefilter over custom patterns may still be refused (too large together):
            // that too is for start-up to say.
            let compiled = scanner.compile()?;
            let _ = scanner.compiled.set(compiled);
        }
        Ok(scanner)
    }

    /// Compiles the detectors now, if they are not yet, and decodes the phone metadata of the
    /// scanner's regions: for a thread at start-up.
    pub fn warm(&self) {
        let _ = self.detectors();
        phone::warm(&self.rules.regions);
    }

    fn detectors(&self) -> &Compiled {
        self.compiled.get_or_init(|| {
            self.compile().unwrap_or_else(|e| {
                // Only custom patterns can fail, and those were compiled when the scanner was
                // made; the built-in ones are constants the tests compile.
                tracing::error!(error = %e, "PII detectors not compiled; scanning with none");
                Compiled {
                    prefilter: RegexSet::empty(),
                    detectors: Vec::new(),
                }
            })
        })
    }

    fn compile(&self) -> Result<Compiled, ScannerError> {
        let mut detectors = Vec::new();
        for &(ref entity, pattern, check) in &BUILT_IN_DETECTORS {
            // The built-in patterns are constants, checked by the tests.
            if let Ok(regex) = Regex::new(pattern) {
                detectors.push(Detector {
                    entity: entity.clone(),
                    regex,
                    check,
                });
            }
        }
        for (name, regex) in &self.custom {
            detectors.push(Detector {
                entity: Entity::Custom(name.clone()),
                regex: regex.clone(),
                check: Check::Plain(|_, _, _| true),
            });
        }
        let prefilter = RegexSet::new(detectors.iter().map(|d| d.regex.as_str())).map_err(|e| {
            ScannerError {
                name: "*".into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Compiled {
            prefilter,
            detectors,
        })
    }

    /// A candidate's verdict, a weak one settled by the context words near it.
    fn accepts(&self, detector: &Detector, m: &str, text: &str, start: usize) -> bool {
        match detector.check {
            Check::Plain(validate) => validate(m, text, start),
            Check::Graded(grade) => match grade(&self.rules, m, text, start) {
                Verdict::Yes => true,
                Verdict::No => false,
                Verdict::Weak => {
                    self.rules
                        .cues
                        .near(detector.entity.name(), text, start, start + m.len())
                        && (detector.entity != Entity::PhoneNumber
                            || phone::valid_anywhere(&self.rules.regions, m))
                }
            },
        }
    }

    /// Every validated finding in `text`, in order, without overlaps (the longer wins).
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        // `is_match` first: it allocates nothing, and most text has nothing to find.
        let compiled = self.detectors();
        if !compiled.prefilter.is_match(text) {
            return Vec::new();
        }
        let matched = compiled.prefilter.matches(text);
        let mut findings = Vec::new();
        for detector in matched
            .iter()
            .filter_map(|index| compiled.detectors.get(index))
        {
            for m in detector.regex.find_iter(text) {
                if self.accepts(detector, m.as_str(), text, m.start()) {
                    findings.push(Finding {
                        entity: detector.entity.clone(),
                        start: m.start(),
                        end: m.end(),
                    });
                }
            }
        }
        findings.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut kept: Vec<Finding> = Vec::with_capacity(findings.len());
        for finding in findings {
            match kept.last() {
                Some(last) if finding.start < last.end => {}
                _ => kept.push(finding),
            }
        }
        kept
    }

    /// Names of every entity this scanner knows, for validating policies.
    pub fn entity_names(&self) -> &[String] {
        &self.names
    }

    /// Whether `text` may hold a finding: the prefilter alone, which allocates nothing.
    pub(super) fn may_find(&self, text: &str) -> bool {
        self.detectors().prefilter.is_match(text)
    }
}

/// How a masked span is written.
#[derive(Debug, Clone, Copy)]
pub(super) enum MaskStyle {
    /// `<ENTITY>`, in text.
    Prose,
    /// `ENTITY`, in tool names and call IDs, which Bedrock limits to `[A-Za-z0-9_-]`.
    Identifier,
}

/// `text` with every finding replaced by `<ENTITY>`.
pub fn mask(text: &str, findings: &[Finding]) -> String {
    mask_as(text, findings, MaskStyle::Prose)
}

pub(super) fn mask_as(text: &str, findings: &[Finding], style: MaskStyle) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in findings {
        // `scan` gives findings in order, apart, on character boundaries; others are skipped.
        let (Some(kept), Some(_)) = (text.get(at..f.start), text.get(f.start..f.end)) else {
            continue;
        };
        out.push_str(kept);
        match style {
            MaskStyle::Prose => {
                out.push('<');
                out.push_str(f.entity.name());
                out.push('>');
            }
            MaskStyle::Identifier => out.push_str(f.entity.name()),
        }
        at = f.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `ENTITY=span` for every finding in `text`, under the default scanner.
    pub(in crate::pii) fn entities(text: &str) -> Vec<String> {
        Scanner::new(&[])
            .unwrap()
            .scan(text)
            .into_iter()
            .map(|f| format!("{}={}", f.entity, &text[f.start..f.end]))
            .collect()
    }

    #[test]
    fn every_built_in_pattern_compiles() {
        let scanner = Scanner::new(&[]).unwrap();
        assert_eq!(scanner.detectors().detectors.len(), 11);
        assert_eq!(scanner.rules.regions.len(), 8);
        // The names a scanner reports before it compiles are its detectors' names.
        let custom = Scanner::new(&[("TICKET".into(), r"\bTCK-\d{6}\b".into())]).unwrap();
        for scanner in [&scanner, &custom] {
            let mut compiled: Vec<String> = scanner
                .detectors()
                .detectors
                .iter()
                .map(|d| d.entity.name().to_owned())
                .collect();
            compiled.dedup();
            assert_eq!(scanner.entity_names(), compiled);
        }
        // Every default region has libphonenumber metadata.
        assert!(scanner.rules.regions.iter().all(|r| r.meta().is_some()));
    }

    #[test]
    fn pii_written_right_after_cjk_text_is_found() {
        // No spaces between words: a Unicode word boundary saw none before the number.
        assert_eq!(
            entities("卡号4539148803436467，谢谢"),
            ["CREDIT_CARD=4539148803436467"]
        );
        assert_eq!(
            entities("邮箱jo@example.com。"),
            ["EMAIL_ADDRESS=jo@example.com"]
        );
    }

    #[test]
    fn masking_replaces_spans_with_their_type() {
        let scanner = Scanner::new(&[("TICKET".into(), r"\bTCK-\d{6}\b".into())]).unwrap();
        let text = "mail a@b.io about TCK-123456";
        let findings = scanner.scan(text);
        assert_eq!(mask(text, &findings), "mail <EMAIL_ADDRESS> about <TICKET>");
        assert!(scanner.scan("nothing to see").is_empty());
        assert!(Scanner::new(&[("bad name".into(), "x".into())]).is_err());
        assert!(Scanner::new(&[("BAD".into(), "(".into())]).is_err());
    }
}
