//! Strict parsing of a chat-completions response and of the answer inside it. Anything that is
//! not exactly the expected shape is an [`UnsureReason`], never a default such as "safe".
use serde::Deserialize;

use super::config::ResponseFormat;
use super::outcome::UnsureReason;

/// Longest piece of an unparsable answer kept in the reason (for logs and `guard ai probe`).
const ANSWER_EXCERPT_CHARS: usize = 120;

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<Message>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    content: Option<String>,
    refusal: Option<String>,
}

/// The text of the first choice of a complete, unrefused answer.
pub(crate) fn content(body: &[u8]) -> Result<String, UnsureReason> {
    let response: ChatResponse =
        serde_json::from_slice(body).map_err(|err| UnsureReason::Malformed {
            detail: err.to_string(),
        })?;
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or(UnsureReason::EmptyChoices)?;
    match choice.finish_reason.as_deref() {
        Some("length") => return Err(UnsureReason::Truncated),
        Some("content_filter") => return Err(UnsureReason::Refusal),
        _ => {}
    }
    let message = choice.message.ok_or_else(|| UnsureReason::Malformed {
        detail: "choice without message".to_owned(),
    })?;
    if message.refusal.is_some_and(|r| !r.trim().is_empty()) {
        return Err(UnsureReason::Refusal);
    }
    match message.content {
        Some(text) if !text.trim().is_empty() => Ok(text),
        _ => Err(unparsable("")),
    }
}

fn unparsable(answer: &str) -> UnsureReason {
    UnsureReason::Unparsable {
        answer: answer.chars().take(ANSWER_EXCERPT_CHARS).collect(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreJson {
    score: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictJson {
    verdict: String,
}

/// A score 0..=100: the whole answer is the number (text) or `{"score": N}` (JSON modes).
pub(crate) fn score(answer: &str, format: ResponseFormat) -> Result<u8, UnsureReason> {
    let trimmed = answer.trim();
    let value = match format {
        ResponseFormat::Text => {
            if trimmed.is_empty()
                || trimmed.len() > 3
                || !trimmed.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(unparsable(answer));
            }
            trimmed.parse::<u8>().map_err(|_| unparsable(answer))?
        }
        ResponseFormat::JsonObject
        | ResponseFormat::JsonObjectSchema
        | ResponseFormat::JsonSchema => {
            serde_json::from_str::<ScoreJson>(trimmed)
                .map_err(|_| unparsable(answer))?
                .score
        }
    };
    if value > 100 {
        return Err(unparsable(answer));
    }
    Ok(value)
}

/// A verdict, `true` for block: the whole answer is `BLOCK` or `ALLOW` (any case), or the JSON
/// object `{"verdict": ...}`. "Don't BLOCK" is not a verdict (the seed read it as BLOCK).
pub(crate) fn verdict(answer: &str, format: ResponseFormat) -> Result<bool, UnsureReason> {
    let trimmed = answer.trim();
    let word = match format {
        ResponseFormat::Text => trimmed.to_owned(),
        ResponseFormat::JsonObject
        | ResponseFormat::JsonObjectSchema
        | ResponseFormat::JsonSchema => {
            serde_json::from_str::<VerdictJson>(trimmed)
                .map_err(|_| unparsable(answer))?
                .verdict
        }
    };
    if word.eq_ignore_ascii_case("BLOCK") {
        Ok(true)
    } else if word.eq_ignore_ascii_case("ALLOW") {
        Ok(false)
    } else {
        Err(unparsable(answer))
    }
}

/// The summary text: control characters other than newlines removed, at most `max_chars`.
pub(crate) fn summary(answer: &str, max_chars: usize) -> Result<String, UnsureReason> {
    let text: String = answer
        .trim()
        .chars()
        .filter(|&c| c == '\n' || !c.is_control())
        .take(max_chars)
        .collect();
    if text.trim().is_empty() {
        return Err(unparsable(answer));
    }
    Ok(text)
}
