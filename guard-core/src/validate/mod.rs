//! The request validation engine: is this one HTTP request an attack?
//!
//! A pure library (no I/O, no clock): the tap/engine and the inline proxy hand it a borrowed
//! [`Request`] and get a [`Verdict`] back — allow, triage (borderline: the engine may ask the AI)
//! or block — with the findings that explain it. The pipeline: [`extract`] splits the request
//! into named values (query and form parameters, JSON strings and keys, multipart fields, cookies,
//! the headers attackers use, the path); [`normalise`] undoes the encodings that hide payloads;
//! [`detect`] runs a literal prefilter and then the [`rules`] it selected; the scores of distinct
//! rules add up and the thresholds of [`ValidatorConfig`] decide.

mod config;
mod detect;
mod extract;
mod normalise;
mod protocol;
mod rules;
mod sqltok;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use config::{CategorySwitches, PathException, ValidatorConfig};

/// Errors building a [`Validator`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The thresholds are inconsistent.
    #[error(
        "validator.triage_threshold ({triage}) must be at most validator.block_threshold ({block}), and block_threshold above 0"
    )]
    Thresholds { triage: u32, block: u32 },
    /// The paranoia level is out of range.
    #[error("validator.paranoia ({level}) must be 1, 2, 3 or 4")]
    Paranoia { level: u8 },
    /// A built-in rule failed to compile (a bug, caught by the unit tests).
    #[error("validator rule {rule} does not compile")]
    Rule {
        rule: &'static str,
        #[source]
        source: regex::Error,
    },
    /// The literal prefilter failed to build.
    #[error("validator prefilter does not build")]
    Prefilter {
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// What kind of attack a finding points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// SQL injection.
    Sqli,
    /// Cross-site scripting.
    Xss,
    /// Path traversal and local file inclusion.
    PathTraversal,
    /// Remote file inclusion and server-side request forgery.
    RfiSsrf,
    /// Shell command injection.
    CommandInjection,
    /// Code injection (PHP, templates, JNDI, Java, Node, Python).
    CodeInjection,
    /// Prompt injection aimed at an LLM behind the application.
    PromptInjection,
    /// Protocol and encoding tricks.
    Protocol,
    /// A known attack tool.
    Scanner,
}

impl Category {
    /// Every category, in the order of the enum.
    pub const ALL: [Category; 9] = [
        Self::Sqli,
        Self::Xss,
        Self::PathTraversal,
        Self::RfiSsrf,
        Self::CommandInjection,
        Self::CodeInjection,
        Self::PromptInjection,
        Self::Protocol,
        Self::Scanner,
    ];

    /// The name as serialised (`sqli`, `path_traversal`, ...).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqli => "sqli",
            Self::Xss => "xss",
            Self::PathTraversal => "path_traversal",
            Self::RfiSsrf => "rfi_ssrf",
            Self::CommandInjection => "command_injection",
            Self::CodeInjection => "code_injection",
            Self::PromptInjection => "prompt_injection",
            Self::Protocol => "protocol",
            Self::Scanner => "scanner",
        }
    }

    /// The position in [`Category::ALL`].
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One HTTP request, borrowed from whoever parsed it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// Method as sent (`GET`).
    pub method: &'a str,
    /// Protocol version as sent in the request line (`HTTP/1.1`); `Some("")` when the request
    /// line had none (HTTP/0.9), `None` when the caller does not know it.
    pub version: Option<&'a str>,
    /// Path, still percent-encoded, without the query (`/a/b`).
    pub path: &'a str,
    /// Query string without the `?`, still percent-encoded.
    pub query: &'a str,
    /// Headers in order, names as sent.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body as received (possibly truncated by the caller).
    pub body: &'a [u8],
    /// The Content-Type header's value, if any.
    pub content_type: Option<&'a str>,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing (or too little) suspicious.
    Allow,
    /// Borderline: let the AI decide out of the request path.
    Triage,
    /// Clearly hostile.
    Block,
}

/// One reason a request scored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of attack.
    pub category: Category,
    /// The rule that matched (stable id, e.g. `sqli-union-select`).
    pub rule: &'static str,
    /// Where: `query:id`, `json:$.user.name`, `header:User-Agent`, `path`, …
    pub field: String,
    /// The matched text after normalisation, truncated.
    pub fragment: String,
    /// What this finding added to the score.
    pub weight: u32,
}

/// The validator's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Allow, triage or block.
    pub action: Action,
    /// Sum of the weights of the distinct rules that matched.
    pub score: u32,
    /// Every distinct rule that matched, first place it matched.
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// The category of the strongest finding (the greatest weight; the first of equals), which
    /// names the request's reason: a SQL injection sent with an odd `Host` is a SQL injection.
    #[must_use]
    pub fn strongest(&self) -> Option<Category> {
        self.findings
            .iter()
            .fold(None::<&Finding>, |best, f| match best {
                Some(b) if b.weight >= f.weight => Some(b),
                _ => Some(f),
            })
            .map(|f| f.category)
    }
}

/// A compiled validator: build once, share across threads, call [`Validator::inspect`] per request.
#[derive(Debug)]
pub struct Validator {
    config: ValidatorConfig,
    detector: detect::Detector,
}

impl Validator {
    /// Compiles the rules for `config`.
    pub fn new(config: &ValidatorConfig) -> Result<Self, Error> {
        if config.triage_threshold > config.block_threshold || config.block_threshold == 0 {
            return Err(Error::Thresholds {
                triage: config.triage_threshold,
                block: config.block_threshold,
            });
        }
        if !(1..=4).contains(&config.paranoia) {
            return Err(Error::Paranoia {
                level: config.paranoia,
            });
        }
        Ok(Self {
            config: config.clone(),
            detector: detect::Detector::new(config.paranoia)?,
        })
    }

    /// The configuration this validator was built with.
    #[must_use]
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Inspects one request. Never panics, whatever the input.
    #[must_use]
    pub fn inspect(&self, req: &Request<'_>) -> Verdict {
        let exception = self
            .config
            .exceptions
            .iter()
            .find(|e| req.path.starts_with(e.path_prefix.as_str()));
        let enabled = |c: Category| {
            self.config.categories.enabled(c)
                && !exception.is_some_and(|e| e.disabled_categories.contains(&c))
        };
        let mut acc = detect::Accumulator::new(self.config.max_fragment_chars);
        protocol::check(req, &self.config, &mut acc);
        let items = extract::extract(
            req,
            &extract::Limits {
                max_body_bytes: self.config.max_body_bytes,
                max_value_bytes: self.config.max_value_bytes,
                max_values: self.config.max_values,
                skip_body: exception.is_some_and(|e| e.skip_body),
                skip_query: exception.is_some_and(|e| e.skip_query),
            },
        );
        // Enough evidence ends the inspection early: a hostile request stuffed with payloads
        // costs no more than the first few of them.
        let enough = self.config.block_threshold.saturating_mul(4);
        for item in &items {
            if acc.score() >= enough {
                break;
            }
            self.detector
                .scan(item, self.config.max_decode_passes, &mut acc);
        }
        let findings: Vec<Finding> = acc
            .into_findings()
            .into_iter()
            .filter(|f| enabled(f.category))
            .collect();
        let score = findings.iter().map(|f| f.weight).sum();
        let action = if score >= self.config.block_threshold {
            Action::Block
        } else if score >= self.config.triage_threshold {
            Action::Triage
        } else {
            Action::Allow
        };
        Verdict {
            action,
            score,
            findings,
        }
    }
}
