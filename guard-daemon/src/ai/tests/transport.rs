//! The client against a real loopback server: answers, HTTP errors, retries, timeouts and
//! malformed output. Each test asserts what reached the server and what the caller got.
use std::time::{Duration, Instant};

use guard_core::engine::SecondOpinion;
use serde_json::json;

use super::server::{Reply, TestServer, chat, chat_finished, ok_body, status};
use super::{KEY, client, ip, request, test_config};
use crate::ai::config::{ApiKey, ResponseFormat};
use crate::ai::{
    AiClient, ClientBehaviour, DayAggregates, EscalationCause, Judgement, ScoreOutcome, Summary,
    Unsure, UnsureReason,
};

fn unsure(outcome: &ScoreOutcome) -> &UnsureReason {
    match outcome {
        ScoreOutcome::Unsure(Unsure(reason)) => reason,
        ScoreOutcome::Score(score) => panic!("expected unsure, got score {}", score.value()),
    }
}

fn score(outcome: &ScoreOutcome) -> u8 {
    match outcome {
        ScoreOutcome::Score(score) => score.value(),
        ScoreOutcome::Unsure(unsure) => panic!("expected a score, got {unsure}"),
    }
}

pub(super) fn behaviour(user_agent: &str) -> ClientBehaviour {
    ClientBehaviour {
        client: ip(9),
        user_agent: user_agent.to_owned(),
        authenticated: false,
        current_path: "/admin".to_owned(),
        recent_paths: vec!["/users/1".to_owned(), "/users/2".to_owned()],
        requests_10s: 25,
        distinct_paths_1min: 16,
        requests_2min: 40,
        error_rate_2min_percent: 55,
    }
}

#[tokio::test]
async fn success_sends_model_key_and_prompt_and_parses_the_score() {
    let server = TestServer::start_with_key(vec![chat("42")], Some(KEY)).await;
    let ai = client(test_config(&server.base_url));
    let outcome = ai.score_request(&request(ip(1), "name=bob;")).await;
    assert_eq!(score(&outcome), 42);
    assert_eq!(outcome.escalation(), None, "42 is below the threshold");
    let sent = &server.received()[0];
    assert_eq!(sent.header("authorization"), Some("Bearer test-key"));
    let body = sent.json();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0.0);
    assert!(body.get("response_format").is_none(), "text mode");
    let (system, user) = sent.messages();
    assert!(
        system.contains("sql_comment_at_end"),
        "rules named: {system}"
    );
    assert!(user.contains("name=bob;"), "{user}");
    let stats = ai.stats();
    assert_eq!((stats.calls, stats.answered, stats.failed), (1, 1, 0));
}

#[tokio::test]
async fn json_schema_mode_requests_a_schema_and_a_high_score_escalates() {
    let server = TestServer::start(vec![chat(r#"{"score": 91}"#)]).await;
    let mut config = test_config(&server.base_url);
    config.response_format = ResponseFormat::JsonSchema;
    let outcome = client(config).score_request(&request(ip(1), "x")).await;
    assert_eq!(score(&outcome), 91);
    assert_eq!(
        outcome.escalation().map(|e| e.cause()),
        Some(EscalationCause::MaliciousRequest { score: 91 })
    );
    let format = &server.received()[0].json()["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["required"],
        json!(["score"])
    );
}

#[tokio::test]
async fn judge_and_summary_parse_their_answers() {
    let server = TestServer::start(vec![
        chat("BLOCK"),
        chat(r#"{"verdict": "ALLOW"}"#),
        chat("Traffic was healthy.\nNothing to do."),
    ])
    .await;
    let ai = client(test_config(&server.base_url));
    let block = ai.judge_client(&behaviour("curl/8")).await;
    assert!(matches!(block, Judgement::Block(_)), "{block:?}");
    let mut json_config = test_config(&server.base_url);
    json_config.response_format = ResponseFormat::JsonObject;
    let allow = client(json_config).judge_client(&behaviour("curl/8")).await;
    assert_eq!(allow, Judgement::Allow);
    assert_eq!(
        server.received()[1].json()["response_format"],
        json!({"type": "json_object"})
    );
    let day = DayAggregates {
        date: "2026-11-23".to_owned(),
        total_requests: 1000,
        errors: 50,
        blocked: 3,
        avg_latency_ms: 12.5,
        slowest: vec![("/report".to_owned(), 800.0)],
        most_hit: vec![("/".to_owned(), 600)],
    };
    let summary = ai.summarise_day(&day).await;
    assert_eq!(
        summary,
        Summary::Text("Traffic was healthy.\nNothing to do.".to_owned())
    );
    assert!(server.received()[2].messages().1.contains("/report"));
}

#[tokio::test]
async fn unauthorized_is_unsure_and_not_retried() {
    let server = TestServer::start_with_key(vec![chat("1")], Some("right-key")).await;
    let ai = AiClient::new(
        test_config(&server.base_url),
        Some(ApiKey::new("wrong-key")),
    )
    .expect("client");
    let outcome = ai.score_request(&request(ip(1), "x")).await;
    assert_eq!(unsure(&outcome), &UnsureReason::Http { status: 401 });
    assert_eq!(server.count(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn rate_limited_retry_waits_for_retry_after() {
    let limited = Reply::Http {
        status: 429,
        headers: vec![("retry-after", "1".to_owned())],
        body: "{}".to_owned(),
    };
    let server = TestServer::start(vec![limited, chat("7")]).await;
    let ai = client(test_config(&server.base_url));
    let outcome = ai.score_request(&request(ip(1), "x")).await;
    assert_eq!(score(&outcome), 7);
    let received = server.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before the Retry-After of 1 s (backoff alone is 10 ms)"
    );
    assert_eq!(ai.stats().retries, 1);
}

#[tokio::test]
async fn retry_after_longer_than_the_maximum_wait_gives_up() {
    let limited = Reply::Http {
        status: 429,
        headers: vec![("retry-after", "3600".to_owned())],
        body: "{}".to_owned(),
    };
    let server = TestServer::start(vec![limited, chat("7")]).await;
    let started = Instant::now();
    let outcome = client(test_config(&server.base_url))
        .score_request(&request(ip(1), "x"))
        .await;
    assert_eq!(
        unsure(&outcome),
        &UnsureReason::RetryAfterTooLong { secs: 3600 }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let server = TestServer::start(vec![status(500), status(503), chat("3")]).await;
    let ai = client(test_config(&server.base_url));
    let outcome = ai.score_request(&request(ip(1), "x")).await;
    assert_eq!(score(&outcome), 3);
    assert_eq!(server.count(), 3);
    assert_eq!(ai.stats().retries, 2);
}

#[tokio::test]
async fn server_errors_beyond_the_retries_are_unsure() {
    let server = TestServer::start(vec![status(502)]).await;
    let mut config = test_config(&server.base_url);
    config.max_retries = 1;
    let outcome = client(config).score_request(&request(ip(1), "x")).await;
    assert_eq!(unsure(&outcome), &UnsureReason::Http { status: 502 });
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let slow = Reply::Delayed {
        after: Duration::from_secs(10),
        reply: Box::new(chat("1")),
    };
    let server = TestServer::start(vec![slow]).await;
    let mut config = test_config(&server.base_url);
    config.request_timeout_ms = 300;
    let started = Instant::now();
    let outcome = client(config).score_request(&request(ip(1), "x")).await;
    assert_eq!(unsure(&outcome), &UnsureReason::Timeout);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(server.count(), 1, "a timeout is not retried");
}

#[tokio::test]
async fn a_body_dripping_past_the_total_timeout_times_out() {
    let body = json!({"choices": [{"message": {"content": "1"}, "finish_reason": "stop"}]});
    let drip = Reply::Drip {
        body: body.to_string(),
        every: Duration::from_millis(50),
    };
    let server = TestServer::start(vec![drip]).await;
    let mut config = test_config(&server.base_url);
    config.request_timeout_ms = 600;
    let started = Instant::now();
    let outcome = client(config).score_request(&request(ip(1), "x")).await;
    assert_eq!(unsure(&outcome), &UnsureReason::Timeout);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the drip takes ~3 s; gave up after {took:?}"
    );
}

#[tokio::test]
async fn malformed_truncated_empty_refused_and_chatty_answers_are_unsure() {
    let malformed = Reply::Http {
        status: 200,
        headers: Vec::new(),
        body: "{\"choices\": [{\"message\": ".to_owned(),
    };
    let truncated = chat_finished("{\"score\": 9", "length");
    let empty = ok_body(&json!({"choices": []}));
    let refused = ok_body(&json!({"choices": [{
        "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
        "finish_reason": "stop",
    }]}));
    let chatty = chat("85 because the body ends in a SQL comment");
    let server = TestServer::start(vec![malformed, truncated, empty, refused, chatty]).await;
    let mut config = test_config(&server.base_url);
    config.response_format = ResponseFormat::JsonObject;
    let json_ai = client(config);
    let text_ai = client(test_config(&server.base_url));
    let req = request(ip(1), "x");
    assert!(matches!(
        unsure(&json_ai.score_request(&req).await),
        UnsureReason::Malformed { .. }
    ));
    assert_eq!(
        unsure(&json_ai.score_request(&req).await),
        &UnsureReason::Truncated
    );
    assert_eq!(
        unsure(&text_ai.score_request(&req).await),
        &UnsureReason::EmptyChoices
    );
    assert_eq!(
        unsure(&text_ai.score_request(&req).await),
        &UnsureReason::Refusal
    );
    let chatty = text_ai.score_request(&req).await;
    assert!(
        matches!(unsure(&chatty), UnsureReason::Unparsable { answer } if answer.starts_with("85 because")),
        "{chatty:?}"
    );
    assert_eq!(chatty.escalation(), None, "an unsure 85 escalates nothing");
    assert_eq!(server.count(), 5, "none of these is retried");
}

#[tokio::test]
async fn probe_prints_the_parsed_answer_or_unsure_with_the_reason() {
    let server = TestServer::start_with_key(vec![chat("12")], Some(KEY)).await;
    let config = test_config(&server.base_url);
    let (line, parsed) = crate::ai::cli::probe(config.clone(), Some(ApiKey::new(KEY)))
        .await
        .expect("probe runs");
    assert!(parsed);
    assert!(
        line.starts_with("score 12 (model test-model at http://127.0.0.1:"),
        "{line}"
    );
    let (line, parsed) = crate::ai::cli::probe(config, Some(ApiKey::new("wrong")))
        .await
        .expect("probe runs");
    assert!(!parsed);
    assert_eq!(line, "unsure: http status 401");
}

#[tokio::test]
async fn a_server_that_hangs_up_is_unsure_and_opens_the_breaker() {
    let server = TestServer::start(vec![Reply::HangUp]).await;
    let mut config = test_config(&server.base_url);
    config.max_retries = 0;
    config.breaker_failures = 2;
    config.breaker_open_ms = 60_000;
    let ai = client(config);
    let outcome = ai.score_request(&request(ip(1), "x")).await;
    assert!(
        matches!(unsure(&outcome), UnsureReason::Connect { .. }),
        "{outcome:?}"
    );
    assert_eq!(outcome.escalation(), None);
    let judgement = ai.judge_client(&behaviour("curl/8")).await;
    assert!(
        matches!(
            judgement,
            Judgement::Unsure(Unsure(UnsureReason::Connect { .. }))
        ),
        "{judgement:?}"
    );
    assert_eq!(judgement.opinion(), SecondOpinion::Unsure);
    assert_eq!(server.count(), 2, "both calls reached the server");
    // Two hang-ups in a row are failures of the server: the breaker stops calling it.
    assert_eq!(
        unsure(&ai.score_request(&request(ip(1), "y")).await),
        &UnsureReason::BreakerOpen
    );
    assert_eq!(server.count(), 2);
    let stats = ai.stats();
    assert_eq!((stats.failed, stats.skipped_breaker), (2, 1));
}
