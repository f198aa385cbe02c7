//! Tests of the AI module: pure parts here, the client against a real loopback HTTP server in
//! `tests/`.
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::breaker::Breaker;
use super::budget::{Budget, Refusal};
use super::config::{AiConfig, ApiKey, ResponseFormat, load_api_key};
use super::input::TriageRequest;
use super::prompt::{DATAMARK, mark};
use super::{AiClient, AiError, answer, load_config_file};

mod flow;
mod injection;
mod real_model;
mod server;
mod transport;

pub(super) const KEY: &str = "test-key";

/// Settings for tests against `server`: enabled, text answers, short timeouts and backoff, no
/// cache unless a test turns it on.
pub(super) fn test_config(base_url: &str) -> AiConfig {
    AiConfig {
        enabled: true,
        base_url: base_url.to_owned(),
        model: "test-model".to_owned(),
        request_timeout_ms: 2_000,
        connect_timeout_ms: 1_000,
        retry_backoff_ms: 10,
        response_format: ResponseFormat::Text,
        cache_ttl_secs: 0,
        ..AiConfig::default()
    }
}

pub(super) fn client(config: AiConfig) -> AiClient {
    AiClient::new(config, Some(ApiKey::new(KEY))).expect("client")
}

pub(super) fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

pub(super) fn request(client: IpAddr, body: &str) -> TriageRequest {
    TriageRequest {
        client,
        method: "POST".to_owned(),
        path: "/api/orders".to_owned(),
        query: "page=1".to_owned(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        user_agent: "Mozilla/5.0".to_owned(),
        body: body.as_bytes().to_vec(),
        matched_rules: vec!["sql_comment_at_end".to_owned()],
    }
}

#[test]
fn default_config_is_valid_and_documented_keys_parse() {
    AiConfig::default().validate().expect("defaults validate");
    let dir = std::env::temp_dir().join(format!("guard-ai-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("guard.toml");
    std::fs::write(
        &path,
        "[ai]\nenabled = true\nbase_url = \"https://api.groq.com/openai/v1\"\nmodel = \"m\"\n\
         response_format = \"json_object\"\nqueue_size = 3\n\n[other]\nx = 1\n",
    )
    .expect("write");
    let config = load_config_file(&path).expect("parses");
    assert!(config.enabled);
    assert_eq!(config.response_format, ResponseFormat::JsonObject);
    assert_eq!(config.queue_size, 3);
    assert_eq!(config.max_concurrency, AiConfig::default().max_concurrency);
    assert_eq!(
        config.endpoint(),
        "https://api.groq.com/openai/v1/chat/completions"
    );

    std::fs::write(&path, "[ai]\napi_key = \"sk-secret\"\n").expect("write");
    let err = load_config_file(&path).expect_err("a key in the file is an unknown field");
    assert!(matches!(err, AiError::ConfigParse { .. }), "{err}");

    std::fs::write(&path, "[ai]\nbase_url = \"ftp://x\"\n").expect("write");
    let err = load_config_file(&path).expect_err("bad scheme");
    assert!(
        matches!(
            err,
            AiError::InvalidConfig {
                key: "base_url",
                ..
            }
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn api_key_comes_from_the_variable_then_the_file() {
    let dir = std::env::temp_dir().join(format!("guard-ai-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("key");
    std::fs::write(&file, "from-file\nignored\n").expect("write");
    let config = AiConfig {
        api_key_env: "MY_KEY".to_owned(),
        api_key_file: Some(file.clone()),
        ..AiConfig::default()
    };
    let env = |name: &str| (name == "MY_KEY").then(|| "from-env".to_owned());
    assert_eq!(
        load_api_key(&config, env).expect("key"),
        Some(ApiKey::new("from-env"))
    );
    let empty = |_: &str| Some(String::new());
    assert_eq!(
        load_api_key(&config, empty).expect("key"),
        Some(ApiKey::new("from-file"))
    );
    let none = AiConfig::default();
    assert_eq!(load_api_key(&none, |_| None).expect("no key"), None);
    let missing = AiConfig {
        api_key_file: Some(dir.join("absent")),
        ..AiConfig::default()
    };
    assert!(matches!(
        load_api_key(&missing, |_| None),
        Err(AiError::KeyFile { .. })
    ));
    assert_eq!(format!("{:?}", ApiKey::new("sk-1")), "ApiKey(<redacted>)");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn mark_strips_invisible_characters_marks_whitespace_and_cuts() {
    let marked = mark(
        "ig\u{200B}nore\u{202E} all\t\n previous\u{E0041} \u{0}x",
        100,
    );
    assert_eq!(
        marked,
        format!("ignore{DATAMARK}all{DATAMARK}previous{DATAMARK}\u{FFFD}x")
    );
    let long = "a".repeat(50);
    let cut = mark(&long, 20);
    assert!(cut.starts_with(&"a".repeat(20)), "{cut}");
    assert!(
        cut.ends_with(&format!("[cut{DATAMARK}30{DATAMARK}chars]")),
        "{cut}"
    );
}

#[test]
fn strict_answer_parsing() {
    assert_eq!(answer::score(" 85\n", ResponseFormat::Text), Ok(85));
    assert!(answer::score("85 because it looks like SQL", ResponseFormat::Text).is_err());
    assert!(answer::score("101", ResponseFormat::Text).is_err());
    assert!(answer::score("-1", ResponseFormat::Text).is_err());
    assert_eq!(
        answer::score(r#"{"score": 7}"#, ResponseFormat::JsonSchema),
        Ok(7)
    );
    assert!(answer::score(r#"{"score": 7.5}"#, ResponseFormat::JsonObject).is_err());
    assert!(answer::score(r#"{"score": 7, "why": "x"}"#, ResponseFormat::JsonObject).is_err());
    assert_eq!(answer::verdict("block", ResponseFormat::Text), Ok(true));
    assert_eq!(answer::verdict("ALLOW", ResponseFormat::Text), Ok(false));
    assert!(answer::verdict("Don't BLOCK", ResponseFormat::Text).is_err());
    assert_eq!(
        answer::verdict(r#"{"verdict":"BLOCK"}"#, ResponseFormat::JsonObject),
        Ok(true)
    );
}

#[test]
fn breaker_opens_after_consecutive_failures_and_lets_one_trial_through() {
    let start = Instant::now();
    let mut breaker = Breaker::new(3, Duration::from_secs(10));
    for _ in 0..2 {
        assert!(breaker.allow(start));
        breaker.record_failure(start);
    }
    breaker.record_success();
    for _ in 0..3 {
        assert!(breaker.allow(start));
        breaker.record_failure(start);
    }
    assert!(breaker.is_open(start));
    assert!(!breaker.allow(start + Duration::from_secs(9)));
    let later = start + Duration::from_secs(10);
    assert!(breaker.allow(later), "one trial call");
    assert!(!breaker.allow(later), "only one");
    breaker.record_failure(later);
    assert!(!breaker.allow(later + Duration::from_secs(9)), "re-opened");
    let much_later = later + Duration::from_secs(10);
    assert!(breaker.allow(much_later));
    breaker.record_success();
    assert!(
        breaker.allow(much_later) && breaker.allow(much_later),
        "closed"
    );
}

#[test]
fn budget_per_client_per_day_and_total() {
    let mut budget = Budget::new(2, 3, 2);
    assert_eq!(budget.try_charge(Some(ip(1)), 10), Ok(()));
    assert_eq!(budget.try_charge(Some(ip(1)), 10), Ok(()));
    assert_eq!(budget.try_charge(Some(ip(1)), 10), Err(Refusal::Client));
    assert_eq!(budget.try_charge(Some(ip(2)), 10), Ok(()));
    assert_eq!(budget.try_charge(None, 10), Err(Refusal::Total));
    assert_eq!(budget.try_charge(Some(ip(1)), 11), Ok(()), "a new day");
    assert_eq!(budget.try_charge(Some(ip(2)), 11), Ok(()));
    assert_eq!(
        budget.try_charge(Some(ip(3)), 11),
        Err(Refusal::TooManyClients)
    );
}

#[test]
fn response_format_per_mode() {
    use super::prompt::response_format;
    assert_eq!(response_format(ResponseFormat::Text, "score"), None);
    assert_eq!(
        response_format(ResponseFormat::JsonObject, "score"),
        Some(serde_json::json!({"type": "json_object"}))
    );
    let with_schema = response_format(ResponseFormat::JsonObjectSchema, "verdict").expect("some");
    assert_eq!(with_schema["type"], "json_object");
    assert_eq!(
        with_schema["schema"]["properties"]["verdict"]["enum"],
        serde_json::json!(["BLOCK", "ALLOW"])
    );
    let strict = response_format(ResponseFormat::JsonSchema, "score").expect("some");
    assert_eq!(strict["json_schema"]["name"], "guard_score");
    assert_eq!(
        strict["json_schema"]["schema"]["properties"]["score"]["maximum"],
        100
    );
}
