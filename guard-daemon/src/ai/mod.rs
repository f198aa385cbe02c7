//! AI triage through any `OpenAI`-compatible `/v1/chat/completions` server (`OpenAI`, Groq,
//! Gemini's `OpenAI` endpoint, Ollama, llama.cpp's server), kept out of the request path.
//!
//! Three typed operations port the seed's prompts, fixed and hardened:
//! [`AiClient::score_request`] (0..=100 for a borderline request body),
//! [`AiClient::judge_client`] (BLOCK/ALLOW for a grey client) and [`AiClient::summarise_day`]
//! (plain-English daily summary). Each has a `try_submit_*` twin that returns at once with a
//! [`Pending`] answer, for the engine.
//!
//! Every failure — disabled, queue full, budget spent, breaker open, timeout, HTTP error,
//! refusal, truncated or unparsable output, empty choices — is [`Unsure`], on which the caller
//! takes no action. A parsed answer can only ever raise a decision: the only actionable value it
//! carries is an [`Escalation`], which nothing outside this module can make and whose only
//! use returns the more severe of two decisions. Client-controlled text reaches the model only
//! cleaned, cut and datamarked inside a delimited data block (see `prompt`).
use std::path::PathBuf;

mod answer;
mod breaker;
mod budget;
mod cache;
pub mod cli;
mod client;
mod config;
mod input;
mod outcome;
mod prompt;
mod transport;

pub use client::{AiClient, AiStats, Pending};
pub use config::{AiConfig, ApiKey, ResponseFormat, load_api_key, load_config_file};
pub use input::{ClientBehaviour, DayAggregates, TriageRequest};
pub use outcome::{
    Escalation, EscalationCause, Judgement, Score, ScoreOutcome, Summary, Unsure, UnsureReason,
};

/// Errors setting the AI client up. Calls themselves never fail: they answer [`Unsure`].
#[derive(Debug, thiserror::Error)]
pub enum AiError {
    #[error("invalid [ai] setting `{key}`: {reason}")]
    InvalidConfig { key: &'static str, reason: String },
    #[error("cannot read the configuration file {}", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {}", path.display())]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read the api key file {}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the api key file {} is empty", path.display())]
    EmptyKeyFile { path: PathBuf },
    #[error("cannot build the http client")]
    HttpClient {
        #[source]
        source: reqwest::Error,
    },
    #[error("the ai client needs a running tokio runtime")]
    NoRuntime,
}

#[cfg(test)]
mod tests;
