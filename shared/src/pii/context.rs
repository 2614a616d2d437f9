//! Context words, as Presidio uses them: a weak candidate (a bare run of digits that could be a
//! phone number, a 9-digit number that could be an SSN, a lower-case NINO, ...) becomes a finding
//! only when a cue for its entity ("call me on", "SSN", "card", ...) is near it. The lists are
//! per entity and configurable (`LLMLITE_PII_CONTEXT`).

use std::collections::BTreeMap;

/// How far before a candidate a cue may be, and how far after (in bytes of text).
const BEFORE: usize = 48;
const AFTER: usize = 24;

/// The entities with weak candidates, and their default cues.
pub const DEFAULTS: &[(&str, &[&str])] = &[
    (
        "PHONE_NUMBER",
        &[
            "phone",
            "telephone",
            "tel",
            "mobile",
            "mob",
            "cell",
            "cellphone",
            "call",
            "ring",
            "fax",
            "sms",
            "text me",
            "whatsapp",
            "contact number",
            "landline",
            "telefon",
            "telefono",
            "teléfono",
            "téléphone",
            "portable",
            "handy",
            "móvil",
            "cellulare",
            "bel",
        ],
    ),
    (
        "US_SSN",
        &[
            "ssn",
            "ss#",
            "social security",
            "soc sec",
            "taxpayer",
            "tin",
        ],
    ),
    (
        "CREDIT_CARD",
        &[
            "card",
            "credit",
            "debit",
            "visa",
            "mastercard",
            "amex",
            "cc",
            "pan",
            "payment",
        ],
    ),
    (
        "UK_NINO",
        &["national insurance", "ni number", "ni no", "nino", "nin"],
    ),
];

/// Why configured context words were refused; the text is what the configuration error shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CuesError {
    #[error("`{entity}` takes no context words (only {})", cue_entities())]
    NoCues { entity: String },
    #[error("`{entity}`: `{word}` is not a context word (1-64 characters)")]
    BadWord { entity: String, word: String },
}

/// Callers that take the reason as `impl Into<String>` get the message.
impl From<CuesError> for String {
    fn from(error: CuesError) -> String {
        error.to_string()
    }
}

/// The entities that take context words, for the error that names them.
fn cue_entities() -> String {
    let known: Vec<&str> = DEFAULTS.iter().map(|(e, _)| *e).collect();
    known.join(", ")
}

/// Cue words per entity name, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cues(BTreeMap<String, Vec<String>>);

impl Default for Cues {
    fn default() -> Self {
        Cues(
            DEFAULTS
                .iter()
                .map(|(entity, words)| {
                    (
                        (*entity).to_owned(),
                        words.iter().map(|w| (*w).to_owned()).collect(),
                    )
                })
                .collect(),
        )
    }
}

impl Cues {
    /// The defaults with `overrides` (entity -> words) replacing an entity's list. Only the
    /// entities with weak candidates take cues; a word is 1-64 characters.
    pub fn with_overrides(overrides: &BTreeMap<String, Vec<String>>) -> Result<Cues, CuesError> {
        let mut cues = Cues::default();
        for (entity, words) in overrides {
            let Some(list) = cues.0.get_mut(entity) else {
                return Err(CuesError::NoCues {
                    entity: entity.clone(),
                });
            };
            if let Some(bad) = words
                .iter()
                .find(|w| w.trim().is_empty() || w.chars().count() > 64)
            {
                return Err(CuesError::BadWord {
                    entity: entity.clone(),
                    word: bad.clone(),
                });
            }
            *list = words.iter().map(|w| w.trim().to_lowercase()).collect();
        }
        Ok(cues)
    }

    /// True when a cue for `entity` is within reach of `start..end` in `text`, as a whole word.
    pub fn near(&self, entity: &str, text: &str, start: usize, end: usize) -> bool {
        let Some(words) = self.0.get(entity) else {
            return false;
        };
        let from = floor(text, start.saturating_sub(BEFORE));
        let to = ceil(text, (end + AFTER).min(text.len()));
        let (Some(head), Some(tail)) = (text.get(from..start), text.get(end..to)) else {
            return false;
        };
        let head = head.to_lowercase();
        let tail = tail.to_lowercase();
        words
            .iter()
            .any(|word| whole_word(&head, word) || whole_word(&tail, word))
    }
}

fn floor(text: &str, mut at: usize) -> usize {
    while at > 0 && !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil(text: &str, mut at: usize) -> usize {
    while at < text.len() && !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// `word` in `text`, not inside a longer word ("tel" in "tel:", not in "hotel").
fn whole_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        let before = text.get(..at).and_then(|t| t.chars().next_back());
        let after = text.get(at + word.len()..).and_then(|t| t.chars().next());
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cues_are_whole_words_near_the_candidate() {
        let cues = Cues::default();
        let text = "Call me on 3646398060 please";
        assert!(cues.near("PHONE_NUMBER", text, 11, 21));
        let text = "The hotel booking 3646398060 is confirmed";
        assert!(!cues.near("PHONE_NUMBER", text, 18, 28));
        let far = format!("phone {} 3646398060", "x".repeat(60));
        assert!(!cues.near("PHONE_NUMBER", &far, far.len() - 10, far.len()));
        assert!(cues.near("PHONE_NUMBER", "3646398060 (mobile)", 0, 10));
        assert!(!cues.near("EMAIL_ADDRESS", "email 3646398060", 6, 16));
        let text = "Téléphone : 0612345678";
        assert!(cues.near("PHONE_NUMBER", text, text.len() - 10, text.len()));
    }

    #[test]
    fn overrides_replace_an_entity_list() {
        let mut overrides = BTreeMap::new();
        overrides.insert("PHONE_NUMBER".to_owned(), vec!["Rufnummer".to_owned()]);
        let cues = Cues::with_overrides(&overrides).unwrap();
        assert!(cues.near("PHONE_NUMBER", "Rufnummer 3646398060", 10, 20));
        assert!(!cues.near("PHONE_NUMBER", "call 3646398060", 5, 15));
        overrides.insert("EMAIL_ADDRESS".to_owned(), vec!["mail".to_owned()]);
        assert!(Cues::with_overrides(&overrides).is_err());
        let blank = BTreeMap::from([("US_SSN".to_owned(), vec![" ".to_owned()])]);
        assert!(Cues::with_overrides(&blank).is_err());
    }
}
