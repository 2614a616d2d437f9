//! Which models may be served: the catalog (`LLMLITE_MODELS`, default the built-in one) and the
//! residency check (`LLMLITE_ALLOWED_MODEL_PREFIXES`) that refuses a catalog routing any model
//! outside the allowed geography.

use crate::catalog::{ModelCatalog, model_id_name};
use crate::env::{ConfigError, EnvSource, non_empty};

/// `LLMLITE_ALLOWED_MODEL_PREFIXES`: comma-separated, blanks dropped.
pub(super) fn allowed_model_prefixes(env: &impl EnvSource) -> Result<Vec<String>, ConfigError> {
    let prefixes: Vec<String> = non_empty(env, "LLMLITE_ALLOWED_MODEL_PREFIXES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if prefixes
        .iter()
        .any(|p| p.len() > 128 || p.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        return Err(ConfigError::new(
            "LLMLITE_ALLOWED_MODEL_PREFIXES",
            "must be comma-separated model-ID prefixes such as `eu.`",
        ));
    }
    Ok(prefixes)
}

/// Refuses a catalog with a model ID (a fallback's included: fallbacks are catalog entries)
/// outside `prefixes`, naming the model, so that no request can be routed beyond the allowed
/// geography. No prefixes: no restriction.
pub(super) fn check_residency(
    catalog: &ModelCatalog,
    prefixes: &[String],
) -> Result<(), ConfigError> {
    if prefixes.is_empty() {
        return Ok(());
    }
    // Every route: each model's own ID and its other profiles'.
    let Some(outside) = catalog.models().iter().flat_map(|m| m.routes()).find(|m| {
        let name = model_id_name(&m.bedrock_model_id);
        !prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }) else {
        return Ok(());
    };
    let fallback_of: Vec<&str> = catalog
        .models()
        .iter()
        .filter(|m| m.fallbacks.contains(&outside.alias))
        .map(|m| m.alias.as_str())
        .collect();
    let role = if fallback_of.is_empty() {
        String::new()
    } else {
        format!(", the fallback of `{}`,", fallback_of.join("`, `"))
    };
    Err(ConfigError::new(
        "LLMLITE_ALLOWED_MODEL_PREFIXES",
        format!(
            "model `{}`{role} has the model ID `{}`, which starts with none of the allowed \
             prefixes `{}`: requests for it could be processed outside the allowed geography",
            outside.alias,
            outside.bedrock_model_id,
            prefixes.join(",")
        ),
    ))
}

pub(super) fn load_catalog(env: &impl EnvSource) -> Result<ModelCatalog, ConfigError> {
    match non_empty(env, "LLMLITE_MODELS") {
        None => ModelCatalog::builtin()
            .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("built-in catalog: {e}"))),
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("{path}: {e}")))?;
            ModelCatalog::parse(&text)
                .map_err(|e| ConfigError::new("LLMLITE_MODELS", format!("{path}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::map as env;

    #[test]
    fn residency_prefixes_are_read_and_checked_on_arn_resource_names() {
        assert_eq!(
            allowed_model_prefixes(&env(&[("LLMLITE_ALLOWED_MODEL_PREFIXES", " eu., ,apac.")]))
                .unwrap(),
            ["eu.", "apac."]
        );
        assert!(allowed_model_prefixes(&env(&[])).unwrap().is_empty());
        assert_eq!(
            allowed_model_prefixes(&env(&[("LLMLITE_ALLOWED_MODEL_PREFIXES", "eu. us.")]))
                .unwrap_err()
                .variable,
            "LLMLITE_ALLOWED_MODEL_PREFIXES"
        );
        assert_eq!(
            model_id_name("arn:aws:bedrock:eu-west-2:1:inference-profile/eu.anthropic.x"),
            "eu.anthropic.x"
        );
        assert_eq!(model_id_name("global.anthropic.x"), "global.anthropic.x");
        let builtin = ModelCatalog::builtin().unwrap();
        // The template's setting: EU profiles, and the in-Region embedding models by ID.
        let template: Vec<String> = [
            "eu.",
            "amazon.titan-embed-text-v2:0",
            "cohere.embed-english-v3",
            "cohere.embed-multilingual-v3",
        ]
        .map(str::to_owned)
        .to_vec();
        assert!(check_residency(&builtin, &template).is_ok());
        // EU profiles alone refuse the embedding models, which have none.
        assert!(check_residency(&builtin, &["eu.".to_owned()]).is_err());
        assert!(check_residency(&builtin, &[]).is_ok());
        assert!(check_residency(&builtin, &["global.".to_owned()]).is_err());
        // A model's other profiles are routes too: a `global.` profile breaks an EU-only setting.
        let profiled = ModelCatalog::parse(
            r#"
            [[model]]
            alias = "m"
            bedrock_model_id = "eu.anthropic.x"
            max_output_tokens = 10
            context_window = 100
            prices = { input = "1", output = "2", cache_read = "0.1", cache_write = "1.25" }
            [[model.profiles]]
            bedrock_model_id = "global.anthropic.x"
            prices = { input = "0.9", output = "1.8", cache_read = "0.09", cache_write = "1.125" }
            "#,
        )
        .unwrap();
        let error = check_residency(&profiled, &["eu.".to_owned()]).unwrap_err();
        assert!(error.reason.contains("global.anthropic.x"), "{error:?}");
        assert!(check_residency(&profiled, &["eu.".to_owned(), "global.".to_owned()]).is_ok());
    }

    #[test]
    fn catalog_errors_name_the_variable_and_file() {
        let err =
            load_catalog(&env(&[("LLMLITE_MODELS", "/nonexistent/models.toml")])).unwrap_err();
        assert_eq!(err.variable, "LLMLITE_MODELS");
        assert!(err.reason.contains("/nonexistent/models.toml"));
        assert!(load_catalog(&env(&[])).is_ok());
    }
}
