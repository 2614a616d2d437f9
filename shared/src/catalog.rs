//! The model catalog: which aliases clients may ask for, the Bedrock model or inference-profile ID
//! each maps to, exact prices per token type, output limits and per-model flags. A model is a
//! chat model (served by chat completions, messages and responses) or, with an `embedding`
//! table, an embedding model (served by `/v1/embeddings` only).
//!
//! The built-in catalog is `shared/models.toml`, compiled in; `LLMLITE_MODELS` names a file of
//! the same shape that replaces it. Parsing is strict (unknown fields are refused) and the result
//! is validated, so a typo in a price or a duplicated alias stops the process at start-up.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Money, PerMillionTokens, PerThousandUnits};

/// The catalog compiled into every binary.
pub const BUILTIN_CATALOG: &str = include_str!("../models.toml");

/// A name clients use for a model (`claude-sonnet-4-5`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelAlias(String);

impl ModelAlias {
    pub fn new(alias: impl Into<String>) -> Self {
        ModelAlias(alias.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long a prompt-cache write lives: Anthropic's and Bedrock's `ttl`, `"5m"` (the default)
/// or `"1h"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CacheTtl {
    #[default]
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "1h")]
    OneHour,
}

impl CacheTtl {
    pub fn parse(text: &str) -> Option<CacheTtl> {
        match text {
            "5m" => Some(CacheTtl::FiveMinutes),
            "1h" => Some(CacheTtl::OneHour),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheTtl::FiveMinutes => "5m",
            CacheTtl::OneHour => "1h",
        }
    }
}

/// A Bedrock service tier a request may name (`serviceTier`): `default` is the standard price;
/// `flex` is cheaper and slower to be served; `priority` dearer and served first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceTier {
    Default,
    Flex,
    Priority,
}

impl ServiceTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Default => "default",
            ServiceTier::Flex => "flex",
            ServiceTier::Priority => "priority",
        }
    }
}

/// The refusal of a service tier the model does not offer, naming the field `param`.
pub fn no_tier(model: &ModelEntry, tier: ServiceTier, param: &str) -> crate::error::ApiError {
    crate::error::ApiError::invalid_param(
        param,
        format!(
            "model `{}` does not offer the `{}` service tier",
            model.alias,
            tier.as_str()
        ),
    )
}

/// The refusal of a 1-hour cache write on a model without it, naming the field `param`.
pub fn no_cache_1h(model: &ModelEntry, param: &str) -> crate::error::ApiError {
    crate::error::ApiError::invalid_param(
        param,
        format!(
            "model `{}` does not offer 1-hour prompt caching (`cache_control.ttl: \"1h\"`); \
             use \"5m\" or a model that does",
            model.alias
        ),
    )
}

/// Prices for each kind of token Bedrock reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrices {
    pub input: PerMillionTokens,
    pub output: PerMillionTokens,
    pub cache_read: PerMillionTokens,
    /// A cache write that lives five minutes (Bedrock's default TTL).
    pub cache_write: PerMillionTokens,
    /// A cache write that lives an hour (`ttl: "1h"`). A model without it does not offer
    /// 1-hour caching: a request asking for it there is refused (or, on a fallback, written
    /// for five minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_1h: Option<PerMillionTokens>,
}

/// Token counts as Bedrock reports them: `input` excludes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    /// Every token written to the cache, whatever its TTL.
    pub cache_write: u64,
    /// The part of `cache_write` written for an hour (Converse's `cacheDetails`, Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`); the rest was written for five minutes.
    pub cache_write_1h: u64,
}

impl TokenUsage {
    /// The cache writes that live an hour (never more than every write).
    pub fn written_1h(&self) -> u64 {
        self.cache_write_1h.min(self.cache_write)
    }

    /// The cache writes that live five minutes.
    pub fn cache_write_5m(&self) -> u64 {
        self.cache_write - self.written_1h()
    }
}

impl TokenPrices {
    /// The exact cost of a call.
    pub fn cost(&self, usage: &TokenUsage) -> Money {
        self.input * usage.input
            + self.output * usage.output
            + self.cache_read * usage.cache_read
            + self.cache_write * usage.cache_write_5m()
            + self.cache_write_1h() * usage.written_1h()
    }

    /// The price of a 1-hour cache write. A model the catalog gives no such price never gets a
    /// 1-hour write from the gateway; should Bedrock report one anyway it is charged at the
    /// dearer of the 5-minute write and twice the input (Bedrock's 1-hour multiple), never less.
    pub fn cache_write_1h(&self) -> PerMillionTokens {
        self.cache_write_1h.unwrap_or_else(|| {
            let doubled = PerMillionTokens(Money::new(self.input.0.amount() * Decimal::TWO));
            if doubled.0 > self.cache_write.0 {
                doubled
            } else {
                self.cache_write
            }
        })
    }

    /// The dearest price a prompt token can have: a request that asks for 1-hour cache writes
    /// may pay the 1-hour price for every prompt token, others at most the 5-minute one.
    pub fn dearest_input(&self, cache_1h: bool) -> PerMillionTokens {
        let mut dearest = self.input;
        let writes = [
            Some(self.cache_write),
            cache_1h.then(|| self.cache_write_1h()),
        ];
        for price in writes.into_iter().flatten() {
            if price.0 > dearest.0 {
                dearest = price;
            }
        }
        dearest
    }

    /// Whether the model offers 1-hour cache writes.
    pub fn offers_cache_1h(&self) -> bool {
        self.cache_write_1h.is_some()
    }
}

/// What Bedrock Guardrails charges (`ApplyGuardrail`), in dollars per 1,000 text units by
/// policy; a text unit is up to 1,000 characters of one text. The catalog's `[guardrails]`
/// table; the defaults are Bedrock's list prices (see `shared/models.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailPrices {
    /// Content filters (text).
    pub content: PerThousandUnits,
    /// Denied topics.
    pub topic: PerThousandUnits,
    /// Sensitive information filters: the managed PII entities.
    pub sensitive_information: PerThousandUnits,
    /// Sensitive information filters: custom regular expressions (free on Bedrock).
    #[serde(default)]
    pub sensitive_information_regex: PerThousandUnits,
    /// Word filters (free on Bedrock).
    #[serde(default)]
    pub word: PerThousandUnits,
    /// Contextual grounding checks.
    pub contextual_grounding: PerThousandUnits,
}

impl Default for GuardrailPrices {
    fn default() -> Self {
        let at = |cents: i64| PerThousandUnits(Money::new(Decimal::new(cents, 2)));
        GuardrailPrices {
            content: at(15),
            topic: at(15),
            sensitive_information: at(10),
            sensitive_information_regex: at(0),
            word: at(0),
            contextual_grounding: at(10),
        }
    }
}

/// The text units one or more `ApplyGuardrail` calls used, by policy, as Bedrock reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailUnits {
    pub content: u64,
    pub topic: u64,
    pub sensitive_information: u64,
    pub sensitive_information_regex: u64,
    pub word: u64,
    pub contextual_grounding: u64,
}

impl GuardrailUnits {
    /// Both counts together.
    pub fn add(&mut self, other: &GuardrailUnits) {
        self.content += other.content;
        self.topic += other.topic;
        self.sensitive_information += other.sensitive_information;
        self.sensitive_information_regex += other.sensitive_information_regex;
        self.word += other.word;
        self.contextual_grounding += other.contextual_grounding;
    }
}

impl GuardrailPrices {
    /// The exact cost of `units`.
    pub fn cost(&self, units: &GuardrailUnits) -> Money {
        self.content * units.content
            + self.topic * units.topic
            + self.sensitive_information * units.sensitive_information
            + self.sensitive_information_regex * units.sensitive_information_regex
            + self.word * units.word
            + self.contextual_grounding * units.contextual_grounding
    }
}

/// What a model accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFlags {
    /// False for models that refuse `temperature` and `top_p` in one request (Claude 4.5 on).
    pub temperature_and_top_p: bool,
    pub tools: bool,
    pub images: bool,
    pub reasoning: bool,
    pub prompt_caching: bool,
    /// Bedrock's native structured output (`outputConfig.textFormat` on Converse): a
    /// `json_schema` response format uses it instead of a forced tool.
    pub structured_output: bool,
    /// Kept for the LLD's aliases; served by a newer model.
    pub legacy: bool,
}

/// The InvokeModel body an embedding model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingApi {
    /// Amazon Titan Text Embeddings: `{"inputText", "dimensions"}`, one text a call; the
    /// token count in the body (`inputTextTokenCount`).
    Titan,
    /// Cohere Embed: `{"texts": [..], "input_type"}`, several texts a call; the token count in
    /// the `X-Amzn-Bedrock-Input-Token-Count` response header.
    Cohere,
}

/// What an embedding model takes and gives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSpec {
    pub api: EmbeddingApi,
    /// The length of its vectors when the request names none.
    pub dimensions: u32,
    /// The lengths a request may ask for with `dimensions`; empty: `dimensions` is refused.
    #[serde(default)]
    pub dimension_choices: Vec<u32>,
    /// The most texts one InvokeModel call takes; larger batches are split.
    pub max_batch: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    pub alias: ModelAlias,
    pub other_aliases: Vec<ModelAlias>,
    pub bedrock_model_id: String,
    pub max_output_tokens: u32,
    pub context_window: u32,
    pub prices: TokenPrices,
    pub flags: ModelFlags,
    /// Other aliases tried, in order, when this model is throttled or failing.
    pub fallbacks: Vec<ModelAlias>,
    /// The `anthropic-beta` values passed to Bedrock for this model on `/v1/messages`; others
    /// are dropped.
    pub anthropic_betas: Vec<String>,
    /// Set for an embedding model (which has no output tokens); `None` for a chat model.
    pub embedding: Option<EmbeddingSpec>,
    /// The prices of the service tiers other than `default` the model offers (`default` is
    /// `prices`); a tier not listed is not offered.
    pub tier_prices: std::collections::BTreeMap<ServiceTier, TokenPrices>,
    /// The model's other inference profiles (`[[model.profiles]]`), in the order they are tried
    /// after this one: each the same model, with its own Bedrock ID and prices.
    pub profiles: Vec<Arc<ModelEntry>>,
}

/// The geographies an inference profile's ID starts with (`eu.`, `global.`, ...); a model ID
/// without one is served in the stack's own Region ([`IN_REGION`]).
pub const GEOGRAPHIES: [&str; 8] = ["eu", "us", "us-gov", "apac", "jp", "au", "ca", "global"];

/// The geography of a model ID with no profile prefix: the Region the gateway calls.
pub const IN_REGION: &str = "in_region";

/// The model or profile name in a model ID, which may be an ARN (`arn:...:inference-profile/eu.x`).
pub fn model_id_name(id: &str) -> &str {
    if id.starts_with("arn:") {
        id.rsplit('/').next().unwrap_or(id)
    } else {
        id
    }
}

/// Where a Bedrock model ID is served: its inference profile's geography (`eu`, `global`, ...),
/// or [`IN_REGION`].
pub fn geography(model_id: &str) -> &'static str {
    let name = model_id_name(model_id);
    GEOGRAPHIES
        .into_iter()
        .find(|g| {
            name.strip_prefix(g)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .unwrap_or(IN_REGION)
}

impl ModelEntry {
    /// Where this entry's model ID is served (see [`geography`]).
    pub fn geography(&self) -> &'static str {
        geography(&self.bedrock_model_id)
    }

    /// This entry, then its other profiles: every route to the model, in the order tried.
    pub fn routes(self: &Arc<Self>) -> impl Iterator<Item = &Arc<ModelEntry>> {
        std::iter::once(self).chain(&self.profiles)
    }

    /// The prices of a request served at `tier` (`None`: Bedrock's default), if the model
    /// offers it.
    pub fn prices_at(&self, tier: Option<ServiceTier>) -> Option<&TokenPrices> {
        match tier {
            None | Some(ServiceTier::Default) => Some(&self.prices),
            Some(tier) => self.tier_prices.get(&tier),
        }
    }

    /// The prices a request at `tier` is charged: the tier's, or the default's for a tier the
    /// model does not offer (a plan for such a tier is never made).
    pub fn charged_at(&self, tier: Option<ServiceTier>) -> &TokenPrices {
        self.prices_at(tier).unwrap_or(&self.prices)
    }

    /// Who makes the model, as `/v1/models` names it (`owned_by`).
    pub fn owner(&self) -> &'static str {
        match self.embedding.as_ref().map(|e| e.api) {
            None => "anthropic",
            Some(EmbeddingApi::Titan) => "amazon",
            Some(EmbeddingApi::Cohere) => "cohere",
        }
    }
}

/// The validated catalog.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    models: Vec<Arc<ModelEntry>>,
    by_alias: HashMap<String, Arc<ModelEntry>>,
    /// What a guardrail's text units cost.
    pub guardrails: GuardrailPrices,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    #[error("not a valid catalog: {0}")]
    Parse(String),
    #[error("the catalog lists no models")]
    Empty,
    #[error("model alias `{0}` is listed more than once")]
    DuplicateAlias(String),
    #[error("model `{alias}`: fallback `{fallback}` is not in the catalog, or is the model itself")]
    BadFallback { alias: String, fallback: String },
    #[error("model `{alias}`: {reason}")]
    Invalid { alias: String, reason: String },
}

impl CatalogError {
    fn invalid(alias: &str, reason: &str) -> Self {
        CatalogError::Invalid {
            alias: alias.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    model: Vec<RawModel>,
    #[serde(default)]
    guardrails: GuardrailPrices,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    alias: String,
    #[serde(default)]
    aliases: Vec<String>,
    bedrock_model_id: String,
    /// Required for a chat model; an embedding model has no output.
    max_output_tokens: Option<u32>,
    context_window: u32,
    prices: TokenPrices,
    #[serde(default = "yes")]
    temperature_and_top_p: bool,
    #[serde(default = "yes")]
    tools: bool,
    #[serde(default = "yes")]
    images: bool,
    #[serde(default)]
    reasoning: bool,
    #[serde(default = "yes")]
    prompt_caching: bool,
    #[serde(default)]
    structured_output: bool,
    #[serde(default)]
    legacy: bool,
    #[serde(default)]
    fallbacks: Vec<String>,
    #[serde(default)]
    anthropic_betas: Vec<String>,
    embedding: Option<EmbeddingSpec>,
    #[serde(default)]
    service_tiers: std::collections::BTreeMap<ServiceTier, TokenPrices>,
    #[serde(default)]
    profiles: Vec<RawProfile>,
}

/// Another inference profile of a model (`[[model.profiles]]`): its ID and its prices.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    bedrock_model_id: String,
    prices: TokenPrices,
    #[serde(default)]
    service_tiers: std::collections::BTreeMap<ServiceTier, TokenPrices>,
}

fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 128
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
}

impl TryFrom<RawModel> for ModelEntry {
    type Error = CatalogError;

    fn try_from(mut raw: RawModel) -> Result<Self, CatalogError> {
        let invalid = |reason: &str| CatalogError::invalid(&raw.alias, reason);
        if let Some(bad) = std::iter::once(&raw.alias)
            .chain(&raw.aliases)
            .find(|a| !valid_alias(a))
        {
            return Err(invalid(&format!(
                "alias `{bad}` must be 1-128 characters of letters, digits and - _ . : /"
            )));
        }
        if raw.bedrock_model_id.trim().is_empty() {
            return Err(invalid("bedrock_model_id is empty"));
        }
        if raw.context_window == 0 {
            return Err(invalid("context_window must be positive"));
        }
        let max_output_tokens = match (&raw.embedding, raw.max_output_tokens) {
            (None, Some(max)) if max > 0 => max,
            (None, _) => return Err(invalid("max_output_tokens must be positive")),
            (Some(spec), None) => {
                check_embedding(&raw.alias, spec, &raw.prices, &raw.fallbacks)?;
                0
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "an embedding model has no output: max_output_tokens does not apply",
                ));
            }
        };
        let chat = raw.embedding.is_none();
        let p = raw.prices;
        if [p.input, p.output, p.cache_read, p.cache_write]
            .iter()
            .chain(&p.cache_write_1h)
            .any(|price| price.0.is_negative())
        {
            return Err(invalid("prices must not be negative"));
        }
        if raw.service_tiers.contains_key(&ServiceTier::Default) {
            return Err(invalid(
                "service_tiers lists `flex` and `priority`; the default tier's prices are `prices`",
            ));
        }
        if !chat && !raw.service_tiers.is_empty() {
            return Err(invalid("an embedding model takes no service_tiers"));
        }
        if raw.service_tiers.values().any(|t| {
            [t.input, t.output, t.cache_read, t.cache_write]
                .iter()
                .chain(&t.cache_write_1h)
                .any(|price| price.0.is_negative())
        }) {
            return Err(invalid("prices must not be negative"));
        }
        if p.cache_write_1h.is_some() && !(raw.prompt_caching && chat) {
            return Err(invalid(
                "cache_write_1h prices 1-hour cache writes: the model must have prompt_caching",
            ));
        }
        if !chat && !raw.profiles.is_empty() {
            return Err(invalid("an embedding model takes no profiles"));
        }
        let mut ids = vec![raw.bedrock_model_id.as_str()];
        for profile in &raw.profiles {
            if profile.bedrock_model_id.trim().is_empty()
                || ids.contains(&profile.bedrock_model_id.as_str())
            {
                return Err(invalid("each profile has a bedrock_model_id of its own"));
            }
            ids.push(&profile.bedrock_model_id);
            if profile
                .service_tiers
                .keys()
                .any(|t| *t == ServiceTier::Default || !raw.service_tiers.contains_key(t))
            {
                return Err(invalid(
                    "a profile's service_tiers price the model's own flex and priority tiers",
                ));
            }
            let prices = std::iter::once(&profile.prices).chain(profile.service_tiers.values());
            for t in prices {
                if [t.input, t.output, t.cache_read, t.cache_write]
                    .iter()
                    .chain(&t.cache_write_1h)
                    .any(|price| price.0.is_negative())
                {
                    return Err(invalid("prices must not be negative"));
                }
                if t.cache_write_1h.is_some() != p.cache_write_1h.is_some() {
                    return Err(invalid(
                        "a profile prices 1-hour cache writes exactly when the model does",
                    ));
                }
            }
        }
        let profiles = std::mem::take(&mut raw.profiles);
        let mut entry = ModelEntry {
            alias: ModelAlias(raw.alias),
            other_aliases: raw.aliases.into_iter().map(ModelAlias).collect(),
            bedrock_model_id: raw.bedrock_model_id,
            max_output_tokens,
            context_window: raw.context_window,
            prices: raw.prices,
            flags: ModelFlags {
                temperature_and_top_p: raw.temperature_and_top_p,
                tools: raw.tools && chat,
                images: raw.images && chat,
                reasoning: raw.reasoning && chat,
                prompt_caching: raw.prompt_caching && chat,
                structured_output: raw.structured_output && chat,
                legacy: raw.legacy,
            },
            fallbacks: raw.fallbacks.into_iter().map(ModelAlias).collect(),
            anthropic_betas: raw.anthropic_betas,
            embedding: raw.embedding,
            tier_prices: raw.service_tiers,
            profiles: Vec::new(),
        };
        entry.profiles = profiles
            .into_iter()
            .map(|profile| {
                Arc::new(ModelEntry {
                    bedrock_model_id: profile.bedrock_model_id,
                    prices: profile.prices,
                    tier_prices: profile.service_tiers,
                    ..entry.clone()
                })
            })
            .collect();
        Ok(entry)
    }
}

/// An embedding model's entry, checked: sizes that can be served, no output or cache prices (it
/// has neither), and no fallbacks (another model's vectors are not comparable with its own).
fn check_embedding(
    alias: &str,
    spec: &EmbeddingSpec,
    prices: &TokenPrices,
    fallbacks: &[String],
) -> Result<(), CatalogError> {
    let invalid = |reason: &str| Err(CatalogError::invalid(alias, reason));
    if spec.dimensions == 0 || spec.max_batch == 0 {
        return invalid("embedding dimensions and max_batch must be positive");
    }
    if !spec.dimension_choices.is_empty() && !spec.dimension_choices.contains(&spec.dimensions) {
        return invalid("embedding dimension_choices must include its default dimensions");
    }
    if [prices.output, prices.cache_read, prices.cache_write]
        .iter()
        .chain(&prices.cache_write_1h)
        .any(|price| !price.0.0.is_zero())
    {
        return invalid(
            "an embedding model has only an input price: output and cache prices must be \"0\"",
        );
    }
    if !fallbacks.is_empty() {
        return invalid(
            "an embedding model takes no fallbacks: another model's vectors are not comparable",
        );
    }
    Ok(())
}

impl ModelCatalog {
    pub fn builtin() -> Result<Self, CatalogError> {
        Self::parse(BUILTIN_CATALOG)
    }

    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|e| CatalogError::Parse(e.message().to_owned()))?;
        if file.model.is_empty() {
            return Err(CatalogError::Empty);
        }
        let mut models = Vec::with_capacity(file.model.len());
        let mut by_alias = HashMap::new();
        for raw in file.model {
            let entry = Arc::new(ModelEntry::try_from(raw)?);
            for alias in std::iter::once(&entry.alias).chain(&entry.other_aliases) {
                if by_alias
                    .insert(alias.0.clone(), Arc::clone(&entry))
                    .is_some()
                {
                    return Err(CatalogError::DuplicateAlias(alias.0.clone()));
                }
            }
            models.push(entry);
        }
        for entry in &models {
            for fallback in &entry.fallbacks {
                // A chat model falls back to chat models only.
                let known = by_alias.get(fallback.as_str()).is_some_and(|target| {
                    !Arc::ptr_eq(target, entry) && target.embedding.is_none()
                });
                if !known {
                    return Err(CatalogError::BadFallback {
                        alias: entry.alias.0.clone(),
                        fallback: fallback.0.clone(),
                    });
                }
            }
        }
        Ok(ModelCatalog {
            models,
            by_alias,
            guardrails: file.guardrails,
        })
    }

    /// The model a client's `model` field names, by any of its aliases.
    pub fn get(&self, alias: &str) -> Option<&Arc<ModelEntry>> {
        self.by_alias.get(alias)
    }

    /// The model `alias` names, then its fallbacks in order; each model by every route to it
    /// (its own ID, then its other profiles).
    pub fn chain(&self, alias: &str) -> Option<Vec<Arc<ModelEntry>>> {
        let primary = self.get(alias)?;
        let models = std::iter::once(primary).chain(
            primary
                .fallbacks
                .iter()
                .filter_map(|f| self.get(f.as_str())),
        );
        Some(models.flat_map(|m| m.routes()).cloned().collect())
    }

    /// Every model, in catalog order.
    pub fn models(&self) -> &[Arc<ModelEntry>] {
        &self.models
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    #[test]
    fn builtin_catalog_is_valid_and_keeps_the_llds_aliases() {
        let catalog = ModelCatalog::builtin().unwrap();
        for alias in [
            "claude-3-5-sonnet",
            "claude-3-opus",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
        ] {
            assert!(catalog.get(alias).is_some(), "{alias} missing");
        }
        let sonnet = catalog.get("claude-sonnet-4-5").unwrap();
        assert!(sonnet.bedrock_model_id.starts_with("eu.anthropic."));
        assert!(!sonnet.flags.temperature_and_top_p);
        assert_eq!(
            catalog
                .get("claude-sonnet-4-5-20250929")
                .unwrap()
                .alias
                .as_str(),
            "claude-sonnet-4-5"
        );
    }

    #[test]
    fn cost_uses_each_token_price_exactly() {
        let catalog = ModelCatalog::builtin().unwrap();
        let haiku = catalog.get("claude-haiku-4-5").unwrap();
        let usage = TokenUsage {
            input: 1000,
            output: 500,
            cache_read: 2000,
            cache_write: 100,
            cache_write_1h: 0,
        };
        // 1000*1.10 + 500*5.50 + 2000*0.11 + 100*1.375 = 4207.5 per million
        assert_eq!(
            haiku.prices.cost(&usage),
            Money(Decimal::from_str("0.0042075").unwrap())
        );
        // 40 of the 100 writes live an hour, at 2.20: 4207.5 - 40*1.375 + 40*2.20 = 4240.5.
        let usage = TokenUsage {
            cache_write_1h: 40,
            ..usage
        };
        assert_eq!(
            haiku.prices.cost(&usage),
            Money(Decimal::from_str("0.0042405").unwrap())
        );
    }

    #[test]
    fn one_hour_writes_are_priced_apart_and_only_offered_where_priced() {
        let priced = ModelCatalog::parse(&ONE.replace(
            "cache_write = \"1.25\" }",
            "cache_write = \"1.25\", cache_write_1h = \"2\" }",
        ))
        .unwrap();
        let m = priced.get("m").unwrap();
        assert!(m.prices.offers_cache_1h());
        let written = |five: u64, hour: u64| TokenUsage {
            cache_write: five + hour,
            cache_write_1h: hour,
            ..TokenUsage::default()
        };
        // 10,000 tokens written for an hour cost 2 per million, for five minutes 1.25.
        assert_eq!(m.prices.cost(&written(0, 10_000)).to_string(), "0.02");
        assert_eq!(m.prices.cost(&written(10_000, 0)).to_string(), "0.0125");
        // The reservation's prompt price: the 1-hour write's only when the request asks for it.
        assert_eq!(m.prices.dearest_input(true).0.to_string(), "2");
        assert_eq!(m.prices.dearest_input(false).0.to_string(), "1.25");

        // Without a 1-hour price the model does not offer it, and a 1-hour write Bedrock reports
        // anyway is charged at twice the input price, not the 5-minute one.
        let unpriced = ModelCatalog::parse(ONE).unwrap();
        let m = unpriced.get("m").unwrap();
        assert!(!m.prices.offers_cache_1h());
        assert_eq!(m.prices.cost(&written(0, 1_000_000)).to_string(), "2");

        for bad in [
            ONE.replace(
                "cache_write = \"1.25\" }",
                "cache_write = \"1.25\", cache_write_1h = \"-2\" }",
            ),
            ONE.replace(
                "cache_write = \"1.25\" }",
                "cache_write = \"1.25\", cache_write_1h = \"2\" }",
            )
            .replace("context_window", "prompt_caching = false\ncontext_window"),
        ] {
            assert!(
                matches!(ModelCatalog::parse(&bad), Err(CatalogError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    const ONE: &str = r#"
        [[model]]
        alias = "m"
        bedrock_model_id = "eu.anthropic.x"
        max_output_tokens = 10
        context_window = 100
        prices = { input = "1", output = "2", cache_read = "0.1", cache_write = "1.25" }
    "#;

    #[test]
    fn profiles_are_routes_of_their_own_in_the_chain_each_at_its_price() {
        let text = format!(
            "{ONE}
            fallbacks = [\"f\"]
            [[model.profiles]]
            bedrock_model_id = \"global.anthropic.x\"
            prices = {{ input = \"0.9\", output = \"1.8\", cache_read = \"0.09\", cache_write = \"1.125\" }}
            [[model]]
            alias = \"f\"
            bedrock_model_id = \"arn:aws:bedrock:eu-west-2:1:inference-profile/apac.anthropic.y\"
            max_output_tokens = 10
            context_window = 100
            prices = {{ input = \"1\", output = \"2\", cache_read = \"0.1\", cache_write = \"1.25\" }}
            [[model.profiles]]
            bedrock_model_id = \"anthropic.y\"
            prices = {{ input = \"1\", output = \"2\", cache_read = \"0.1\", cache_write = \"1.25\" }}
            "
        );
        let catalog = ModelCatalog::parse(&text).unwrap();
        let chain = catalog.chain("m").unwrap();
        let routes: Vec<(&str, &str, &str)> = chain
            .iter()
            .map(|m| (m.alias.as_str(), m.bedrock_model_id.as_str(), m.geography()))
            .collect();
        assert_eq!(
            routes,
            [
                ("m", "eu.anthropic.x", "eu"),
                ("m", "global.anthropic.x", "global"),
                (
                    "f",
                    "arn:aws:bedrock:eu-west-2:1:inference-profile/apac.anthropic.y",
                    "apac"
                ),
                ("f", "anthropic.y", IN_REGION),
            ]
        );
        assert_eq!(
            chain[1].prices.input.0,
            Money(Decimal::from_str("0.9").unwrap())
        );
        assert_eq!(chain[1].flags, chain[0].flags);
        // The catalog lists models, not routes.
        assert_eq!(catalog.models().len(), 2);
        assert_eq!(geography("globalx.anthropic.z"), IN_REGION);
        assert_eq!(geography("us-gov.anthropic.z"), "us-gov");

        for (bad, why) in [
            ("bedrock_model_id = \"eu.anthropic.x\"", "of its own"),
            ("bedrock_model_id = \"\"", "of its own"),
        ] {
            let text = format!(
                "{ONE}
                [[model.profiles]]
                {bad}
                prices = {{ input = \"1\", output = \"2\", cache_read = \"0.1\", cache_write = \"1.25\" }}"
            );
            let error = ModelCatalog::parse(&text).unwrap_err().to_string();
            assert!(error.contains(why), "{error}");
        }
        let negative = format!(
            "{ONE}
            [[model.profiles]]
            bedrock_model_id = \"global.anthropic.x\"
            prices = {{ input = \"-1\", output = \"2\", cache_read = \"0.1\", cache_write = \"1.25\" }}"
        );
        assert!(ModelCatalog::parse(&negative).is_err());
    }

    #[test]
    fn a_minimal_entry_gets_default_flags() {
        let catalog = ModelCatalog::parse(ONE).unwrap();
        let m = catalog.get("m").unwrap();
        assert!(m.flags.temperature_and_top_p && m.flags.tools && !m.flags.legacy);
    }

    const EMBED: &str = r#"
        [[model]]
        alias = "e"
        bedrock_model_id = "amazon.titan-embed-text-v2:0"
        context_window = 8192
        prices = { input = "0.02", output = "0", cache_read = "0", cache_write = "0" }
        embedding = { api = "titan", dimensions = 1024, dimension_choices = [256, 1024], max_batch = 1 }
    "#;

    #[test]
    fn embedding_models_have_input_prices_only_and_no_fallbacks() {
        let catalog = ModelCatalog::parse(&format!("{ONE}{EMBED}")).unwrap();
        let e = catalog.get("e").unwrap();
        assert_eq!(
            e.embedding.as_ref().map(|s| s.api),
            Some(EmbeddingApi::Titan)
        );
        assert_eq!(
            (e.owner(), catalog.get("m").unwrap().owner()),
            ("amazon", "anthropic")
        );
        let invalid = |text: String| {
            assert!(
                matches!(
                    ModelCatalog::parse(&text),
                    Err(CatalogError::Invalid { .. })
                ),
                "{text}"
            );
        };
        invalid(EMBED.replace("output = \"0\"", "output = \"1\""));
        invalid(EMBED.replace("context_window", "max_output_tokens = 5\ncontext_window"));
        invalid(EMBED.replace("[256, 1024]", "[256, 512]"));
        invalid(EMBED.replace("max_batch = 1", "max_batch = 0"));
        invalid(format!(
            "{ONE}{}",
            EMBED.replace("alias = \"e\"", "alias = \"e\"\nfallbacks = [\"m\"]")
        ));
        // A chat model cannot fall back to an embedding model.
        let chat_to_embedding = ONE.replace("alias = \"m\"", "alias = \"m\"\nfallbacks = [\"e\"]");
        assert!(matches!(
            ModelCatalog::parse(&format!("{chat_to_embedding}{EMBED}")),
            Err(CatalogError::BadFallback { .. })
        ));
        // A chat model without max_output_tokens is refused.
        invalid(ONE.replace("max_output_tokens = 10", ""));
    }

    #[test]
    fn bad_catalogs_are_refused_with_a_reason() {
        let dup = format!("{ONE}{ONE}");
        assert_eq!(
            ModelCatalog::parse(&dup).unwrap_err(),
            CatalogError::DuplicateAlias("m".into())
        );
        let float_price = ONE.replace("input = \"1\"", "input = 1.5");
        assert!(matches!(
            ModelCatalog::parse(&float_price),
            Err(CatalogError::Parse(_))
        ));
        let unknown = ONE.replace("alias = \"m\"", "alias = \"m\"\ncolour = \"red\"");
        assert!(matches!(
            ModelCatalog::parse(&unknown),
            Err(CatalogError::Parse(_))
        ));
        let negative = ONE.replace("output = \"2\"", "output = \"-2\"");
        assert!(matches!(
            ModelCatalog::parse(&negative),
            Err(CatalogError::Invalid { .. })
        ));
        assert_eq!(
            ModelCatalog::parse("model = []").unwrap_err(),
            CatalogError::Empty
        );
        let self_fallback = ONE.replace("alias = \"m\"", "alias = \"m\"\nfallbacks = [\"m\"]");
        assert!(matches!(
            ModelCatalog::parse(&self_fallback),
            Err(CatalogError::BadFallback { .. })
        ));
        let unknown_fallback =
            ONE.replace("alias = \"m\"", "alias = \"m\"\nfallbacks = [\"nope\"]");
        assert!(matches!(
            ModelCatalog::parse(&unknown_fallback),
            Err(CatalogError::BadFallback { .. })
        ));
    }
}
