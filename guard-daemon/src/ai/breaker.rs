//! Circuit breaker: after `failures` consecutive failed calls no call is made for `open_for`; then
//! one trial call decides between closing again and another open period. Clock passed in.
use std::time::{Duration, Instant};

/// State of the breaker; plain data, no I/O.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    open_for: Duration,
    consecutive_failures: u32,
    /// Set while open: calls are refused until then.
    open_until: Option<Instant>,
    /// A trial call after an open period is in flight; others are refused until it ends.
    trial_in_flight: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            consecutive_failures: 0,
            open_until: None,
            trial_in_flight: false,
        }
    }

    /// Whether a call may start now. After the open period, lets exactly one trial call through.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        match self.open_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) if self.trial_in_flight => false,
            Some(_) => {
                self.trial_in_flight = true;
                true
            }
        }
    }

    pub(crate) fn record_success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
        self.trial_in_flight = false;
    }

    pub(crate) fn record_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.trial_in_flight || self.consecutive_failures >= self.threshold {
            self.open_until = Some(now + self.open_for);
            self.trial_in_flight = false;
        }
    }

    /// Whether the breaker is refusing calls at `now`.
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now < until)
    }
}
