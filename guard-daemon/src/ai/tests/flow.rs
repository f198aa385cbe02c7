//! Admission in front of the server: circuit breaker, bounded queue, budgets, cache, and the
//! non-blocking submit path.
use std::time::Duration;

use super::server::{Reply, TestServer, chat, status};
use super::{client, ip, request, test_config};
use crate::ai::{ScoreOutcome, Unsure, UnsureReason};

fn reason(outcome: ScoreOutcome) -> UnsureReason {
    match outcome {
        ScoreOutcome::Unsure(Unsure(reason)) => reason,
        ScoreOutcome::Score(score) => panic!("expected unsure, got {}", score.value()),
    }
}

#[tokio::test]
async fn breaker_opens_after_failures_and_closes_after_a_good_trial() {
    let server = TestServer::start(vec![status(500), status(500), chat("5")]).await;
    let mut config = test_config(&server.base_url);
    config.max_retries = 0;
    config.breaker_failures = 2;
    config.breaker_open_ms = 400;
    let ai = client(config);
    let req = request(ip(1), "x");
    for _ in 0..2 {
        assert_eq!(
            reason(ai.score_request(&req).await),
            UnsureReason::Http { status: 500 }
        );
    }
    assert_eq!(
        reason(ai.score_request(&req).await),
        UnsureReason::BreakerOpen
    );
    assert_eq!(server.count(), 2, "no call while open");
    assert_eq!(ai.stats().skipped_breaker, 1);
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(
        matches!(ai.score_request(&req).await, ScoreOutcome::Score(_)),
        "trial call"
    );
    assert!(
        matches!(ai.score_request(&req).await, ScoreOutcome::Score(_)),
        "closed again"
    );
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn a_full_queue_skips_the_call_at_once() {
    let slow = Reply::Delayed {
        after: Duration::from_millis(300),
        reply: Box::new(chat("2")),
    };
    let server = TestServer::start(vec![slow]).await;
    let mut config = test_config(&server.base_url);
    config.max_concurrency = 1;
    config.queue_size = 1;
    let ai = client(config);
    let first = ai.try_submit_score(&request(ip(1), "one"));
    let second = ai.try_submit_score(&request(ip(2), "two"));
    let mut third = ai.try_submit_score(&request(ip(3), "three"));
    assert_eq!(
        third.try_take(),
        Some(ScoreOutcome::Unsure(Unsure(UnsureReason::QueueFull))),
        "answered at submission"
    );
    // The refusal is there before this test has yielded once, so before any call could run
    // (a single-threaded runtime): it was given at submission, with no clock to stretch.
    assert_eq!(ai.stats().skipped_queue_full, 1);
    assert!(matches!(first.await, ScoreOutcome::Score(_)));
    assert!(matches!(second.await, ScoreOutcome::Score(_)));
    assert_eq!(server.count(), 2);
    let received = server.received();
    assert!(
        received[1].at - received[0].at >= Duration::from_millis(250),
        "one call at a time"
    );
    assert!(
        matches!(
            ai.score_request(&request(ip(3), "three")).await,
            ScoreOutcome::Score(_)
        ),
        "room again once the queue drained"
    );
}

#[tokio::test]
async fn budgets_per_client_and_per_day_skip_calls() {
    let server = TestServer::start(vec![chat("1")]).await;
    let mut config = test_config(&server.base_url);
    config.budget_per_client_per_day = 2;
    config.budget_per_day = 3;
    let ai = client(config);
    for body in ["a", "b"] {
        assert!(matches!(
            ai.score_request(&request(ip(1), body)).await,
            ScoreOutcome::Score(_)
        ));
    }
    assert_eq!(
        reason(ai.score_request(&request(ip(1), "c")).await),
        UnsureReason::ClientBudget
    );
    assert!(matches!(
        ai.score_request(&request(ip(2), "d")).await,
        ScoreOutcome::Score(_)
    ));
    assert_eq!(
        reason(ai.score_request(&request(ip(3), "e")).await),
        UnsureReason::DailyBudget
    );
    assert_eq!(server.count(), 3);
    assert_eq!(ai.stats().skipped_budget, 2);
}

#[tokio::test]
async fn the_cache_answers_a_repeated_payload_without_a_call() {
    let server = TestServer::start(vec![chat("64"), chat("10")]).await;
    let mut config = test_config(&server.base_url);
    config.cache_ttl_secs = 60;
    config.budget_per_client_per_day = 1;
    let ai = client(config);
    let req = request(ip(1), "q=1");
    let first = ai.score_request(&req).await;
    let again = ai.score_request(&req).await;
    assert_eq!(first, again);
    assert!(matches!(first, ScoreOutcome::Score(s) if s.value() == 64));
    assert_eq!(server.count(), 1);
    assert_eq!(ai.stats().cache_hits, 1, "and no budget spent on the hit");
    let other = ai.score_request(&request(ip(2), "q=2")).await;
    assert!(matches!(other, ScoreOutcome::Score(s) if s.value() == 10));
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn disabled_answers_unsure_without_a_call() {
    let server = TestServer::start(vec![chat("99")]).await;
    let mut config = test_config(&server.base_url);
    config.enabled = false;
    let ai = client(config);
    let mut pending = ai.try_submit_score(&request(ip(1), "x"));
    assert_eq!(
        pending.try_take(),
        Some(ScoreOutcome::Unsure(Unsure(UnsureReason::Disabled)))
    );
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn try_submit_returns_before_the_answer() {
    let slow = Reply::Delayed {
        after: Duration::from_millis(400),
        reply: Box::new(chat("30")),
    };
    let server = TestServer::start(vec![slow]).await;
    let ai = client(test_config(&server.base_url));
    let mut pending = ai.try_submit_score(&request(ip(1), "x"));
    // The answer takes 400 ms: still missing means the submission returned before it.
    assert_eq!(pending.try_take(), None, "not there yet");
    assert!(matches!(pending.await, ScoreOutcome::Score(s) if s.value() == 30));
}
