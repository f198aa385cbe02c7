//! The `[ai]` section of guard's configuration, its validation, and the loading of the API key
//! (from an environment variable or a key file, never from the configuration file itself).
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::AiError;

/// How the model is asked to shape its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `response_format: {type: "json_schema", strict: true}`: the server constrains the answer to
    /// a schema (`OpenAI`, Groq, Gemini's `OpenAI` endpoint, llama.cpp's server, recent Ollama).
    JsonSchema,
    /// `response_format: {type: "json_object"}`: any JSON object; the prompt names the one field.
    JsonObject,
    /// `response_format: {type: "json_object", schema: ...}`: the form llama-cpp-python's server
    /// takes (it refuses `json_schema`); llama.cpp's own server takes both.
    JsonObjectSchema,
    /// No `response_format`; the whole answer must be exactly the number or the word asked for.
    Text,
}

/// Settings of the AI triage client: the `[ai]` table of guard's TOML configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AiConfig {
    /// Whether the daemon asks a model at all; with `false` every operation answers `Unsure`.
    pub enabled: bool,
    /// Base URL of an OpenAI-compatible API, up to and including `/v1`; guard appends
    /// `/chat/completions`.
    pub base_url: String,
    /// Model name sent in every request.
    pub model: String,
    /// Environment variable holding the API key; read first.
    pub api_key_env: String,
    /// File holding the API key (first line), read when the variable is unset or empty. With
    /// neither, requests carry no `Authorization` header (fine for a local server without a key).
    pub api_key_file: Option<PathBuf>,
    /// Time allowed to open the TCP (and TLS) connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for one whole HTTP exchange, body included, in milliseconds.
    pub request_timeout_ms: u64,
    /// Calls in flight at once.
    pub max_concurrency: usize,
    /// Calls waiting for a free slot; a call that finds the queue full is skipped (`Unsure`).
    pub queue_size: usize,
    /// Retries after a 429, a 5xx or a failed connection (not after a timeout).
    pub max_retries: u32,
    /// First backoff between retries in milliseconds, doubled at each retry.
    pub retry_backoff_ms: u64,
    /// Longest wait before a retry, in milliseconds; a larger `Retry-After` gives up instead.
    pub retry_max_wait_ms: u64,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before letting one trial call through, in ms.
    pub breaker_open_ms: u64,
    /// Calls per client address per UTC day.
    pub budget_per_client_per_day: u32,
    /// Calls in total per UTC day.
    pub budget_per_day: u32,
    /// Client addresses whose daily count is kept; calls for further addresses are skipped.
    pub budget_max_clients: usize,
    /// How long a parsed answer is reused for the same payload, in seconds (0 disables the cache).
    pub cache_ttl_secs: u64,
    /// Answers kept in the cache.
    pub cache_max_entries: usize,
    /// How the answer is requested and parsed.
    pub response_format: ResponseFormat,
    /// Longest client-controlled field (path, query, body, header value) put in a prompt, in
    /// characters; the rest is cut and the cut is marked.
    pub max_field_chars: usize,
    /// Score from which a request score escalates a borderline request (the seed blocked above 85).
    pub escalate_score: u8,
    /// `max_tokens` for a score or a verdict.
    pub triage_max_tokens: u32,
    /// `max_tokens` for the daily summary.
    pub summary_max_tokens: u32,
    /// Largest response body read from the server, in bytes.
    pub max_response_bytes: usize,
}

impl Default for AiConfig {
    fn default() -> Self {
        Self {
            // Off until an operator points it at a server.
            enabled: false,
            // llama.cpp's server and most local set-ups; OpenAI is https://api.openai.com/v1.
            base_url: "http://127.0.0.1:8080/v1".to_owned(),
            // A small, cheap model is enough for a triage answer of one number or word.
            model: "gpt-4o-mini".to_owned(),
            // The documented variable; change it to share a key with other tools.
            api_key_env: "GUARD_AI_KEY".to_owned(),
            // No key file unless configured.
            api_key_file: None,
            // 2 s to connect: a remote API that cannot be reached by then is down for us.
            connect_timeout_ms: 2_000,
            // 10 s per exchange, like the seed, but never in the request path.
            request_timeout_ms: 10_000,
            // 4 calls in flight: triage is rare (borderline cases only).
            max_concurrency: 4,
            // 64 waiting calls; beyond that, skip rather than pile up during an attack.
            queue_size: 64,
            // 2 retries: three attempts at most.
            max_retries: 2,
            // 500 ms, then 1 s.
            retry_backoff_ms: 500,
            // A Retry-After above 30 s means the triage is stale by then: give up.
            retry_max_wait_ms: 30_000,
            // 5 failed calls in a row open the breaker ...
            breaker_failures: 5,
            // ... for 60 s.
            breaker_open_ms: 60_000,
            // 20 calls per client per day: one client cannot spend the budget.
            budget_per_client_per_day: 20,
            // 2,000 calls per day in total.
            budget_per_day: 2_000,
            // 100,000 tracked addresses (a few MB at most).
            budget_max_clients: 100_000,
            // 1 h: the same payload gets the same answer without a new call.
            cache_ttl_secs: 3_600,
            // 10,000 cached answers.
            cache_max_entries: 10_000,
            // Schema-constrained output where the server supports it.
            response_format: ResponseFormat::JsonSchema,
            // 2,000 characters per field (the seed sent 500 of the body only).
            max_field_chars: 2_000,
            // Above 85 escalates, as in the seed.
            escalate_score: 86,
            // Enough for `{"verdict":"ALLOW"}` with any tokenizer.
            triage_max_tokens: 32,
            // 8-10 lines of prose, as the seed asked.
            summary_max_tokens: 600,
            // 256 KiB: a chat answer of a few tokens is far below this.
            max_response_bytes: 256 * 1024,
        }
    }
}

impl AiConfig {
    /// Checks the values that serde cannot: ranges, and a usable base URL.
    pub fn validate(&self) -> Result<(), AiError> {
        let invalid = |key: &'static str, reason: &str| AiError::InvalidConfig {
            key,
            reason: reason.to_owned(),
        };
        match reqwest::Url::parse(&self.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            Ok(_) => return Err(invalid("base_url", "scheme must be http or https")),
            Err(err) => return Err(invalid("base_url", &err.to_string())),
        }
        if self.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "must be at least 1"));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid("request_timeout_ms", "timeouts must be above 0"));
        }
        if self.breaker_failures == 0 {
            return Err(invalid("breaker_failures", "must be at least 1"));
        }
        if self.escalate_score > 100 {
            return Err(invalid("escalate_score", "must be 0..=100"));
        }
        if self.max_field_chars < 16 {
            return Err(invalid("max_field_chars", "must be at least 16"));
        }
        Ok(())
    }

    /// The chat-completions endpoint under `base_url`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// An API key; its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key given directly (tests, or a caller with its own secret store).
    #[must_use]
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Finds the API key: the variable named by `api_key_env` (through `env`, so tests need not touch
/// the process environment), else the first line of `api_key_file`, else none.
pub fn load_api_key(
    config: &AiConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ApiKey>, AiError> {
    if let Some(key) = env(&config.api_key_env).map(|k| k.trim().to_owned())
        && !key.is_empty()
    {
        return Ok(Some(ApiKey(key)));
    }
    match &config.api_key_file {
        Some(path) => read_key_file(path).map(Some),
        None => Ok(None),
    }
}

fn read_key_file(path: &Path) -> Result<ApiKey, AiError> {
    let text = std::fs::read_to_string(path).map_err(|source| AiError::KeyFile {
        path: path.to_owned(),
        source,
    })?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(AiError::EmptyKeyFile {
            path: path.to_owned(),
        });
    }
    Ok(ApiKey(key.to_owned()))
}

/// guard's configuration file as far as this module is concerned: the `[ai]` table, other tables
/// ignored (they belong to other modules).
#[derive(Deserialize)]
struct FileWithAi {
    #[serde(default)]
    ai: AiConfig,
}

/// Reads the `[ai]` table of a TOML configuration file (defaults where absent) and validates it.
pub fn load_config_file(path: &Path) -> Result<AiConfig, AiError> {
    let text = std::fs::read_to_string(path).map_err(|source| AiError::ConfigFile {
        path: path.to_owned(),
        source,
    })?;
    let file: FileWithAi = toml::from_str(&text).map_err(|source| AiError::ConfigParse {
        path: path.to_owned(),
        source,
    })?;
    file.ai.validate()?;
    Ok(file.ai)
}
