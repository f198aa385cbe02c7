//! Against a real local model server (ignored by default; see `docs/ai.md`): checks transport
//! and parsing, not the model's judgement. With a schema in `response_format` the server
//! constrains the output, so even a 135M-parameter model must give a parsable answer.
//!
//! ```text
//! GUARD_AI_TEST_BASE_URL=http://127.0.0.1:8181/v1 GUARD_AI_TEST_MODEL=smollm2 GUARD_AI_KEY=... \
//!   cargo test -p guard-daemon --lib ai::tests::real_model -- --ignored --nocapture
//! ```
use super::transport::behaviour;
use super::{ip, request};
use crate::ai::config::{AiConfig, ResponseFormat, load_api_key};
use crate::ai::{AiClient, DayAggregates, Judgement, ScoreOutcome, Summary, Unsure, UnsureReason};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test]
#[ignore = "needs a local OpenAI-compatible model server; see docs/ai.md"]
async fn a_real_model_server_answers_in_parsable_form() {
    let config = AiConfig {
        enabled: true,
        base_url: env_or("GUARD_AI_TEST_BASE_URL", "http://127.0.0.1:8181/v1"),
        model: env_or("GUARD_AI_TEST_MODEL", "smollm2"),
        request_timeout_ms: 300_000,
        max_retries: 0,
        // llama-cpp-python's server takes a schema only inside `json_object`.
        response_format: match env_or("GUARD_AI_TEST_FORMAT", "json_object_schema").as_str() {
            "json_schema" => ResponseFormat::JsonSchema,
            "json_object" => ResponseFormat::JsonObject,
            "text" => ResponseFormat::Text,
            _ => ResponseFormat::JsonObjectSchema,
        },
        summary_max_tokens: 200,
        ..AiConfig::default()
    };
    let key = load_api_key(&config, |name| std::env::var(name).ok()).expect("key");
    assert!(
        key.is_some(),
        "set GUARD_AI_KEY: the test server is started with a key"
    );
    let ai = AiClient::new(config, key).expect("client");

    let score = ai
        .score_request(&request(ip(1), "name=' OR '1'='1' --"))
        .await;
    println!("score: {score:?}");
    assert!(matches!(score, ScoreOutcome::Score(_)), "{score:?}");

    let verdict = ai.judge_client(&behaviour("sqlmap/1.7")).await;
    println!("verdict: {verdict:?}");
    assert!(
        matches!(verdict, Judgement::Block(_) | Judgement::Allow),
        "{verdict:?}"
    );

    let day = DayAggregates {
        date: "2026-11-23".to_owned(),
        total_requests: 1200,
        errors: 90,
        blocked: 12,
        avg_latency_ms: 48.0,
        slowest: vec![("/api/report".to_owned(), 900.0)],
        most_hit: vec![("/api/items".to_owned(), 700)],
    };
    let summary = ai.summarise_day(&day).await;
    println!("summary: {summary:?}");
    assert!(
        matches!(
            summary,
            Summary::Text(_) | Summary::Unsure(Unsure(UnsureReason::Truncated))
        ),
        "{summary:?}"
    );
}
