//! PII policies: the action per entity (BLOCK, MASK, LOG, ALLOW, with `*` for the rest) and
//! whether answers are scanned; read from JSON, laid over each other (global, team, key), and
//! written back as the JSON they were read from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What the guard does with an entity it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    /// Refuse the request (400 `pii_blocked`).
    Block,
    /// Replace each span with `<ENTITY>` before the request leaves.
    Mask,
    /// Let it through; record the finding.
    Log,
    /// Let it through unrecorded.
    Allow,
}

/// Actions per entity, with an optional `*` for every entity not named, and whether the model's
/// answers are scanned too (`"output": true`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: BTreeMap<String, Action>,
    otherwise: Option<Action>,
    output: Option<bool>,
}

/// The policy key that turns the scanning of answers on or off.
pub const OUTPUT_FIELD: &str = "output";

/// Why a PII policy was refused; the text is what an admin or the configuration error shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a PII policy is a JSON object of entity to action")]
    NotAnObject,
    #[error("`{}` is true (scan the model's answers too) or false", OUTPUT_FIELD)]
    OutputNotBool,
    #[error("`{entity}`: the action must be BLOCK, MASK, LOG or ALLOW")]
    UnknownAction { entity: String },
    #[error("`{entity}` is not a PII entity ({})", .known.join(", "))]
    UnknownEntity { entity: String, known: Vec<String> },
}

/// Callers that take the reason as `impl Into<String>` get the message.
impl From<PolicyError> for String {
    fn from(error: PolicyError) -> String {
        error.to_string()
    }
}

impl Policy {
    /// The default when nothing is configured.
    pub fn builtin() -> Self {
        let rules = [
            ("CREDIT_CARD", Action::Block),
            ("US_SSN", Action::Block),
            ("UK_NINO", Action::Block),
            ("IBAN_CODE", Action::Block),
            ("AWS_ACCESS_KEY", Action::Block),
            ("PRIVATE_KEY", Action::Block),
            ("EMAIL_ADDRESS", Action::Mask),
            ("PHONE_NUMBER", Action::Mask),
            ("IP_ADDRESS", Action::Log),
        ]
        .into_iter()
        .map(|(entity, action)| (entity.to_owned(), action))
        .collect();
        Policy {
            rules,
            otherwise: None,
            output: None,
        }
    }

    /// This policy with answers scanned (`true`) or not: `LLMLITE_PII_SCAN_OUTPUT`.
    pub fn with_output(mut self, scan: bool) -> Policy {
        self.output = Some(scan);
        self
    }

    /// Whether the model's answers are scanned under this policy (off unless set).
    pub fn scans_output(&self) -> bool {
        self.output.unwrap_or(false)
    }

    /// Reads `{"ENTITY": "BLOCK"|"MASK"|"LOG"|"ALLOW", "*": ..., "output": true|false}`. `known`
    /// names the entities that may appear (built-in and custom).
    pub fn parse(value: &Value, known: &[String]) -> Result<Policy, PolicyError> {
        let Value::Object(map) = value else {
            return Err(PolicyError::NotAnObject);
        };
        let mut policy = Policy::default();
        for (entity, action) in map {
            if entity == OUTPUT_FIELD {
                let Value::Bool(scan) = action else {
                    return Err(PolicyError::OutputNotBool);
                };
                policy.output = Some(*scan);
                continue;
            }
            let action: Action =
                serde_json::from_value(action.clone()).map_err(|_| PolicyError::UnknownAction {
                    entity: entity.clone(),
                })?;
            if entity == "*" {
                policy.otherwise = Some(action);
            } else if known.iter().any(|k| k == entity) {
                policy.rules.insert(entity.clone(), action);
            } else {
                return Err(PolicyError::UnknownEntity {
                    entity: entity.clone(),
                    known: known.to_vec(),
                });
            }
        }
        Ok(policy)
    }

    /// This policy with `overrides` on top: a `*` there replaces everything below it.
    pub fn overlay(&self, overrides: &Policy) -> Policy {
        let mut merged = if overrides.otherwise.is_some() {
            Policy {
                rules: BTreeMap::new(),
                otherwise: overrides.otherwise,
                output: self.output,
            }
        } else {
            self.clone()
        };
        merged
            .rules
            .extend(overrides.rules.iter().map(|(k, v)| (k.clone(), *v)));
        if overrides.output.is_some() {
            merged.output = overrides.output;
        }
        merged
    }

    pub fn action(&self, entity: &str) -> Action {
        self.rules
            .get(entity)
            .copied()
            .or(self.otherwise)
            .unwrap_or(Action::Log)
    }

    /// As JSON, the shape it is read from.
    pub fn to_json(&self) -> Value {
        let mut map: Map<String, Value> = self
            .rules
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        if let Some(otherwise) = self.otherwise {
            map.insert("*".into(), serde_json::json!(otherwise));
        }
        if let Some(output) = self.output {
            map.insert(OUTPUT_FIELD.into(), Value::Bool(output));
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pii::Entity;

    #[test]
    fn policies_merge_key_over_team_over_global() {
        let known: Vec<String> = Entity::BUILT_IN
            .iter()
            .map(|e| e.name().to_owned())
            .collect();
        let global = Policy::builtin();
        assert_eq!(global.action("CREDIT_CARD"), Action::Block);
        assert_eq!(global.action("EMAIL_ADDRESS"), Action::Mask);
        let team = Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "BLOCK"}), &known).unwrap();
        let key = Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "ALLOW"}), &known).unwrap();
        assert_eq!(global.overlay(&team).action("EMAIL_ADDRESS"), Action::Block);
        assert_eq!(
            global.overlay(&team).overlay(&key).action("EMAIL_ADDRESS"),
            Action::Allow
        );
        let off = Policy::parse(&serde_json::json!({"*": "ALLOW"}), &known).unwrap();
        assert_eq!(global.overlay(&off).action("CREDIT_CARD"), Action::Allow);
        assert!(Policy::parse(&serde_json::json!({"EMAIL": "BLOCK"}), &known).is_err());
        assert!(Policy::parse(&serde_json::json!({"EMAIL_ADDRESS": "SHRED"}), &known).is_err());
        assert!(Policy::parse(&serde_json::json!(["x"]), &known).is_err());
    }
}
