//! What the typed operations return. An answer can only ever *raise* a decision: the one
//! actionable thing it can carry is an [`Escalation`], which has no public constructor and whose
//! only use, [`Escalation::raise`], returns the more severe of two decisions. Nothing here can
//! lower, unban or allowlist; an [`Unsure`] carries only its reason and converts to nothing.
use std::cmp;
use std::fmt;

use guard_core::engine::SecondOpinion;

/// Why an operation has no answer. The caller takes no action on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsureReason {
    #[error("ai triage is disabled")]
    Disabled,
    #[error("queue full")]
    QueueFull,
    #[error("budget of calls for this client exhausted for today")]
    ClientBudget,
    #[error("budget of calls exhausted for today")]
    DailyBudget,
    #[error("circuit breaker open")]
    BreakerOpen,
    #[error("timeout")]
    Timeout,
    #[error("connection failed: {detail}")]
    Connect { detail: String },
    #[error("http status {status}")]
    Http { status: u16 },
    #[error("retry-after of {secs} s is longer than the configured maximum wait")]
    RetryAfterTooLong { secs: u64 },
    #[error("response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed response: {detail}")]
    Malformed { detail: String },
    #[error("empty choices")]
    EmptyChoices,
    #[error("truncated answer (finish_reason: length)")]
    Truncated,
    #[error("the model refused")]
    Refusal,
    #[error("unparsable answer: {answer:?}")]
    Unparsable { answer: String },
    #[error("the client was shut down before answering")]
    Cancelled,
}

impl UnsureReason {
    /// Whether this failure counts against the circuit breaker (the server or the path to it is
    /// failing, as opposed to the model giving an unusable answer).
    pub(crate) fn is_transport_failure(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Connect { .. }
                | Self::Http { .. }
                | Self::RetryAfterTooLong { .. }
                | Self::TooLarge { .. }
                | Self::Malformed { .. }
        )
    }
}

/// No answer: the caller keeps the decision its own rules made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsure(pub UnsureReason);

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsure ({})", self.0)
    }
}

/// The cause recorded in an [`Escalation`], for logs and ban reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationCause {
    /// A borderline request scored at or above the configured `escalate_score`.
    MaliciousRequest { score: u8 },
    /// A grey client judged `BLOCK`.
    HostileClient,
}

/// Permission to raise a borderline decision. Only this module creates one, and only from a
/// parsed answer that asks for more severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "an escalation does nothing until raised"]
pub struct Escalation {
    cause: EscalationCause,
}

impl Escalation {
    pub(crate) fn new(cause: EscalationCause) -> Self {
        Self { cause }
    }

    #[must_use]
    pub fn cause(&self) -> EscalationCause {
        self.cause
    }

    /// Returns the more severe of `current` (what the hard rules decided) and `proposed` (what
    /// the caller would do on this escalation). With an `Ord` from least to most severe, the
    /// result is never below `current`, whatever the model answered.
    pub fn raise<D: Ord>(self, current: D, proposed: D) -> D {
        cmp::max(current, proposed)
    }
}

/// A maliciousness score 0..=100 of a borderline request, with the threshold it is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    value: u8,
    escalate_at: u8,
}

impl Score {
    pub(crate) fn new(value: u8, escalate_at: u8) -> Self {
        Self {
            value: value.min(100),
            escalate_at,
        }
    }

    /// The score, for logs and metrics.
    #[must_use]
    pub fn value(self) -> u8 {
        self.value
    }

    /// An escalation when the score reaches the threshold; a low score gives nothing (it is not
    /// a reason to lower anything).
    #[must_use]
    pub fn escalation(self) -> Option<Escalation> {
        (self.value >= self.escalate_at)
            .then(|| Escalation::new(EscalationCause::MaliciousRequest { score: self.value }))
    }
}

/// Answer of [`super::AiClient::score_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreOutcome {
    Score(Score),
    Unsure(Unsure),
}

impl ScoreOutcome {
    /// The escalation this outcome allows, if any.
    #[must_use]
    pub fn escalation(&self) -> Option<Escalation> {
        match self {
            Self::Score(score) => score.escalation(),
            Self::Unsure(_) => None,
        }
    }
}

/// Answer of [`super::AiClient::judge_client`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The model says block: the caller may raise its decision with this escalation.
    Block(Escalation),
    /// The model sees no reason to block. Carries nothing: it is not a reason to lower,
    /// unban or allowlist.
    Allow,
    Unsure(Unsure),
}

impl Judgement {
    /// The engine's view of this answer: only a BLOCK, which carries an escalation, maps to
    /// [`SecondOpinion::Block`].
    #[must_use]
    pub fn opinion(&self) -> SecondOpinion {
        match self {
            Self::Block(_) => SecondOpinion::Block,
            Self::Allow => SecondOpinion::Allow,
            Self::Unsure(_) => SecondOpinion::Unsure,
        }
    }

    /// The escalation this judgement allows, if any.
    #[must_use]
    pub fn escalation(&self) -> Option<Escalation> {
        match self {
            Self::Block(escalation) => Some(*escalation),
            Self::Allow | Self::Unsure(_) => None,
        }
    }
}

/// Answer of [`super::AiClient::summarise_day`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Summary {
    /// Plain-English text, control characters removed, length capped.
    Text(String),
    Unsure(Unsure),
}
