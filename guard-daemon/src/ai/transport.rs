//! One chat-completions call over HTTP: request body, timeouts, bounded body read, and retries
//! with exponential backoff on 429, 5xx and failed connections, honouring `Retry-After`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};

use super::AiError;
use super::answer;
use super::config::{AiConfig, ApiKey};
use super::outcome::UnsureReason;
use super::prompt::Prompt;

/// What one call asks for.
#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    pub(crate) prompt: Prompt,
    pub(crate) max_tokens: u32,
    pub(crate) temperature: f32,
    pub(crate) response_format: Option<Value>,
}

/// Result of one HTTP attempt.
enum Attempt {
    Done(Result<String, UnsureReason>),
    Retry {
        reason: UnsureReason,
        after: Option<Duration>,
    },
}

#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoint: String,
    model: String,
    key: Option<ApiKey>,
    timeout: Duration,
    max_retries: u32,
    backoff: Duration,
    max_wait: Duration,
    max_body: usize,
    /// Retries made, for metrics.
    pub(crate) retries: AtomicU64,
}

impl Transport {
    pub(crate) fn new(config: &AiConfig, key: Option<ApiKey>) -> Result<Self, AiError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .timeout(config.request_timeout())
            .user_agent(concat!("guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| AiError::HttpClient { source })?;
        Ok(Self {
            http,
            endpoint: config.endpoint(),
            model: config.model.clone(),
            key,
            timeout: config.request_timeout(),
            max_retries: config.max_retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            max_wait: Duration::from_millis(config.retry_max_wait_ms),
            max_body: config.max_response_bytes,
            retries: AtomicU64::new(0),
        })
    }

    fn body(&self, request: &ChatRequest) -> Vec<u8> {
        let mut body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.prompt.system},
                {"role": "user", "content": request.prompt.user},
            ],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": false,
        });
        if let (Some(format), Some(map)) = (&request.response_format, body.as_object_mut()) {
            map.insert("response_format".to_owned(), format.clone());
        }
        body.to_string().into_bytes()
    }

    /// Sends the request, retrying as configured; returns the answer text of the first choice.
    pub(crate) async fn complete(&self, request: &ChatRequest) -> Result<String, UnsureReason> {
        let body = self.body(request);
        let mut attempt = 0u32;
        loop {
            match self.attempt(&body).await {
                Attempt::Done(result) => return result,
                Attempt::Retry { reason, after } => {
                    if attempt >= self.max_retries {
                        return Err(reason);
                    }
                    let wait = match after {
                        Some(after) if after > self.max_wait => {
                            return Err(UnsureReason::RetryAfterTooLong {
                                secs: after.as_secs(),
                            });
                        }
                        Some(after) => after,
                        None => self
                            .backoff
                            .saturating_mul(1 << attempt.min(16))
                            .min(self.max_wait),
                    };
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%reason, ?wait, attempt, "ai call retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> Attempt {
        match tokio::time::timeout(self.timeout, self.exchange(body)).await {
            Ok(attempt) => attempt,
            Err(_) => Attempt::Done(Err(UnsureReason::Timeout)),
        }
    }

    async fn exchange(&self, body: &[u8]) -> Attempt {
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.key {
            request = request.bearer_auth(key.expose());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => return transport_error(&err),
        };
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Attempt::Retry {
                reason: UnsureReason::Http {
                    status: status.as_u16(),
                },
                after: retry_after(response.headers()),
            };
        }
        if !status.is_success() {
            return Attempt::Done(Err(UnsureReason::Http {
                status: status.as_u16(),
            }));
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > self.max_body {
                        return Attempt::Done(Err(UnsureReason::TooLarge {
                            limit: self.max_body,
                        }));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) => return transport_error(&err),
            }
        }
        Attempt::Done(answer::content(&bytes))
    }
}

fn transport_error(err: &reqwest::Error) -> Attempt {
    if err.is_timeout() {
        Attempt::Done(Err(UnsureReason::Timeout))
    } else if err.is_connect() {
        Attempt::Retry {
            reason: UnsureReason::Connect {
                detail: error_chain(err),
            },
            after: None,
        }
    } else {
        Attempt::Done(Err(UnsureReason::Connect {
            detail: error_chain(err),
        }))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// `Retry-After` in seconds; an HTTP-date is not parsed and falls back to the backoff.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    value.parse::<u64>().ok().map(Duration::from_secs)
}
