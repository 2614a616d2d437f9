//! The PII guard's settings: custom entities (`LLMLITE_PII_ENTITIES`), the global policy
//! (`LLMLITE_PII_POLICY`, merged over the built-in one), the detectors' options
//! (`LLMLITE_PII_PHONE_REGIONS`, `LLMLITE_PII_CONTEXT`) and whether answers are scanned too
//! (`LLMLITE_PII_SCAN_OUTPUT`), each checked at start-up.

use std::collections::HashMap;

use crate::env::{ConfigError, EnvSource, non_empty};

/// Custom PII entities and the global PII policy, checked.
pub(super) type PiiSettings = (
    Vec<(String, String)>,
    crate::pii::Policy,
    crate::pii::Options,
);

pub(super) fn load_pii(env: &impl EnvSource) -> Result<PiiSettings, ConfigError> {
    const ENTITIES: &str = "LLMLITE_PII_ENTITIES";
    const POLICY: &str = "LLMLITE_PII_POLICY";
    const REGIONS: &str = "LLMLITE_PII_PHONE_REGIONS";
    const CONTEXT: &str = "LLMLITE_PII_CONTEXT";
    const SCAN_OUTPUT: &str = "LLMLITE_PII_SCAN_OUTPUT";
    let mut options = crate::pii::Options::default();
    if let Some(list) = non_empty(env, REGIONS) {
        options.phone_regions = crate::pii::phone::regions(&list).map_err(|bad| {
            ConfigError::new(
                REGIONS,
                format!("`{bad}` is not a region code libphonenumber knows (GB, US, DE, ...)"),
            )
        })?;
        if options.phone_regions.is_empty() {
            return Err(ConfigError::new(REGIONS, "names no region"));
        }
    }
    if let Some(text) = non_empty(env, CONTEXT) {
        let map: std::collections::BTreeMap<String, Vec<String>> = serde_json::from_str(&text)
            .map_err(|_| {
                ConfigError::new(
                    CONTEXT,
                    "must be a JSON object of entity to a list of words",
                )
            })?;
        options.cues =
            crate::pii::Cues::with_overrides(&map).map_err(|e| ConfigError::new(CONTEXT, e))?;
    }
    let scan_output = match non_empty(env, SCAN_OUTPUT).as_deref() {
        None => None,
        Some("false" | "0") => Some(false),
        Some("true" | "1") => Some(true),
        Some(_) => return Err(ConfigError::new(SCAN_OUTPUT, "must be true or false")),
    };
    let custom: Vec<(String, String)> = match non_empty(env, ENTITIES) {
        None => Vec::new(),
        Some(text) => {
            let map: HashMap<String, String> = serde_json::from_str(&text).map_err(|_| {
                ConfigError::new(ENTITIES, "must be a JSON object of entity name to regex")
            })?;
            let mut custom: Vec<(String, String)> = map.into_iter().collect();
            custom.sort();
            custom
        }
    };
    let scanner = crate::pii::Scanner::with_options(&custom, &options)
        .map_err(|e| ConfigError::new(ENTITIES, e.to_string()))?;
    let policy = match non_empty(env, POLICY) {
        None => crate::pii::Policy::builtin(),
        Some(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| ConfigError::new(POLICY, "is not JSON"))?;
            let overrides = crate::pii::Policy::parse(&value, scanner.entity_names())
                .map_err(|e| ConfigError::new(POLICY, e))?;
            crate::pii::Policy::builtin().overlay(&overrides)
        }
    };
    let policy = match scan_output {
        Some(scan) => policy.with_output(scan),
        None => policy,
    };
    Ok((custom, policy, options))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn pii_settings_are_checked() {
        let (custom, policy, _) = load_pii(&env(&[
            ("LLMLITE_PII_ENTITIES", r#"{"TICKET": "TCK-\\d+"}"#),
            (
                "LLMLITE_PII_POLICY",
                r#"{"TICKET": "BLOCK", "EMAIL_ADDRESS": "LOG"}"#,
            ),
        ]))
        .unwrap();
        assert_eq!(custom, [("TICKET".to_owned(), r"TCK-\d+".to_owned())]);
        assert_eq!(policy.action("TICKET"), crate::pii::Action::Block);
        assert_eq!(policy.action("EMAIL_ADDRESS"), crate::pii::Action::Log);
        assert_eq!(policy.action("CREDIT_CARD"), crate::pii::Action::Block);
        assert!(!policy.scans_output());
        let (_, policy, options) = load_pii(&env(&[
            ("LLMLITE_PII_SCAN_OUTPUT", "true"),
            ("LLMLITE_PII_PHONE_REGIONS", "gb, us"),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": ["Rufnummer"]}"#),
        ]))
        .unwrap();
        assert!(policy.scans_output());
        assert_eq!(options.phone_regions.len(), 2);
        assert!(
            options
                .cues
                .near("PHONE_NUMBER", "Rufnummer 3646398060", 10, 20)
        );
        assert!(!options.cues.near("PHONE_NUMBER", "call 3646398060", 5, 15));
        // A policy's own `output` stands unless the variable is set.
        let (_, policy, _) =
            load_pii(&env(&[("LLMLITE_PII_POLICY", r#"{"output": true}"#)])).unwrap();
        assert!(policy.scans_output());
        for (variable, value) in [
            ("LLMLITE_PII_POLICY", r#"{"TICKET": "BLOCK"}"#),
            ("LLMLITE_PII_POLICY", "not json"),
            ("LLMLITE_PII_ENTITIES", r#"{"bad name": "x"}"#),
            ("LLMLITE_PII_ENTITIES", r#"{"OK": "("}"#),
            ("LLMLITE_PII_PHONE_REGIONS", "GB,XX"),
            ("LLMLITE_PII_PHONE_REGIONS", " , "),
            ("LLMLITE_PII_CONTEXT", r#"{"EMAIL_ADDRESS": ["mail"]}"#),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": "tel"}"#),
            ("LLMLITE_PII_CONTEXT", r#"{"PHONE_NUMBER": [""]}"#),
            ("LLMLITE_PII_SCAN_OUTPUT", "yes"),
        ] {
            assert_eq!(
                load_pii(&env(&[(variable, value)])).unwrap_err().variable,
                variable,
                "{value}"
            );
        }
    }
}
