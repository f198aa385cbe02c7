//! The triage client: admission (cache, breaker, bounded queue, budget) happens synchronously at
//! submission, so the engine never waits; the call itself runs on the tokio runtime, at most
//! `max_concurrency` at a time, and its answer arrives through a [`Pending`].
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};

use super::AiError;
use super::answer;
use super::breaker::Breaker;
use super::budget::{Budget, Refusal};
use super::cache::{Cache, Key};
use super::config::{AiConfig, ApiKey, ResponseFormat, load_api_key};
use super::input::{ClientBehaviour, DayAggregates, TriageRequest};
use super::outcome::{
    Escalation, EscalationCause, Judgement, Score, ScoreOutcome, Summary, Unsure, UnsureReason,
};
use super::prompt::{self, Prompt};
use super::transport::{ChatRequest, Transport};

/// Longest summary kept, in characters.
const MAX_SUMMARY_CHARS: usize = 8_000;

/// A parsed answer, as cached.
#[derive(Debug, Clone)]
enum Parsed {
    Score(u8),
    Block(bool),
    Text(String),
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Score,
    Verdict,
    Summary,
}

type Deliver = Box<dyn FnOnce(Result<Parsed, UnsureReason>) + Send>;

/// Counters of the client, shown by `guard stats` (section `ai`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AiStats {
    pub submitted: u64,
    /// Calls sent to the server (retries not included).
    pub calls: u64,
    pub retries: u64,
    pub answered: u64,
    pub cache_hits: u64,
    pub skipped_queue_full: u64,
    pub skipped_budget: u64,
    pub skipped_breaker: u64,
    /// Calls made that ended `Unsure` (timeout, HTTP error, unparsable answer, ...).
    pub failed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    submitted: AtomicU64,
    calls: AtomicU64,
    answered: AtomicU64,
    cache_hits: AtomicU64,
    skipped_queue_full: AtomicU64,
    skipped_budget: AtomicU64,
    skipped_breaker: AtomicU64,
    failed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

#[derive(Debug)]
struct Inner {
    config: AiConfig,
    transport: Transport,
    runtime: Handle,
    permits: Semaphore,
    /// Calls admitted and not finished (in flight plus queued).
    pending: AtomicUsize,
    capacity: usize,
    breaker: Mutex<Breaker>,
    budget: Mutex<Budget>,
    cache: Mutex<Cache<Parsed>>,
    counters: Counters,
}

/// Lock a mutex that holds plain counters: a panic elsewhere cannot leave them inconsistent.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Frees the admission slot when a job ends, however it ends.
struct Slot(Arc<Inner>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The OpenAI-compatible triage client. Cheap to clone; all clones share queue, budget, breaker
/// and cache.
#[derive(Debug, Clone)]
pub struct AiClient {
    inner: Arc<Inner>,
}

/// An answer on its way. Await it, or poll it with [`Pending::try_take`]; a skipped call
/// (disabled, queue full, budget, breaker) is ready at once.
#[derive(Debug)]
#[must_use = "the answer arrives through this"]
pub struct Pending<T> {
    receiver: oneshot::Receiver<T>,
}

impl<T: From<Unsure>> Pending<T> {
    /// The answer if it has arrived, without waiting.
    pub fn try_take(&mut self) -> Option<T> {
        match self.receiver.try_recv() {
            Ok(value) => Some(value),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => {
                Some(Unsure(UnsureReason::Cancelled).into())
            }
        }
    }
}

impl<T: From<Unsure>> Future for Pending<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.receiver)
            .poll(cx)
            .map(|result| result.unwrap_or_else(|_| Unsure(UnsureReason::Cancelled).into()))
    }
}

impl From<Unsure> for ScoreOutcome {
    fn from(unsure: Unsure) -> Self {
        Self::Unsure(unsure)
    }
}

impl From<Unsure> for Judgement {
    fn from(unsure: Unsure) -> Self {
        Self::Unsure(unsure)
    }
}

impl From<Unsure> for Summary {
    fn from(unsure: Unsure) -> Self {
        Self::Unsure(unsure)
    }
}

impl AiClient {
    /// Builds the client with the key from the environment or the key file. Must be called
    /// within a tokio runtime, on which the calls will run.
    pub fn from_config(config: AiConfig) -> Result<Self, AiError> {
        let key = load_api_key(&config, |name| std::env::var(name).ok())?;
        Self::new(config, key)
    }

    /// Builds the client with an explicit key (or none). Must be called within a tokio runtime.
    pub fn new(config: AiConfig, key: Option<ApiKey>) -> Result<Self, AiError> {
        config.validate()?;
        let runtime = Handle::try_current().map_err(|_| AiError::NoRuntime)?;
        let transport = Transport::new(&config, key)?;
        let inner = Inner {
            transport,
            runtime,
            permits: Semaphore::new(config.max_concurrency),
            pending: AtomicUsize::new(0),
            capacity: config.max_concurrency + config.queue_size,
            breaker: Mutex::new(Breaker::new(
                config.breaker_failures,
                Duration::from_millis(config.breaker_open_ms),
            )),
            budget: Mutex::new(Budget::new(
                config.budget_per_client_per_day,
                config.budget_per_day,
                config.budget_max_clients,
            )),
            cache: Mutex::new(Cache::new(
                Duration::from_secs(config.cache_ttl_secs),
                config.cache_max_entries,
            )),
            counters: Counters::default(),
            config,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The runtime the calls run on (callers may spawn their follow-ups there).
    #[must_use]
    pub fn runtime(&self) -> &Handle {
        &self.inner.runtime
    }

    /// The settings in use.
    #[must_use]
    pub fn config(&self) -> &AiConfig {
        &self.inner.config
    }

    /// Queues a maliciousness score of a borderline request; returns at once.
    pub fn try_submit_score(&self, request: &TriageRequest) -> Pending<ScoreOutcome> {
        let config = &self.inner.config;
        let prompt = prompt::score_prompt(request, config.response_format, config.max_field_chars);
        let escalate_at = config.escalate_score;
        self.submit(
            Op::Score,
            prompt,
            Some(request.client),
            move |result| match result {
                Ok(Parsed::Score(value)) => ScoreOutcome::Score(Score::new(value, escalate_at)),
                Ok(_) => ScoreOutcome::Unsure(Unsure(UnsureReason::Cancelled)),
                Err(reason) => ScoreOutcome::Unsure(Unsure(reason)),
            },
        )
    }

    /// Scores a borderline request 0..=100, or `Unsure`.
    pub async fn score_request(&self, request: &TriageRequest) -> ScoreOutcome {
        self.try_submit_score(request).await
    }

    /// Queues a BLOCK/ALLOW judgement of a grey client; returns at once.
    pub fn try_submit_judgement(&self, behaviour: &ClientBehaviour) -> Pending<Judgement> {
        let config = &self.inner.config;
        let prompt =
            prompt::judge_prompt(behaviour, config.response_format, config.max_field_chars);
        self.submit(
            Op::Verdict,
            prompt,
            Some(behaviour.client),
            |result| match result {
                Ok(Parsed::Block(true)) => {
                    Judgement::Block(Escalation::new(EscalationCause::HostileClient))
                }
                Ok(Parsed::Block(false)) => Judgement::Allow,
                Ok(_) => Judgement::Unsure(Unsure(UnsureReason::Cancelled)),
                Err(reason) => Judgement::Unsure(Unsure(reason)),
            },
        )
    }

    /// Judges a grey client `Block`, `Allow` or `Unsure`.
    pub async fn judge_client(&self, behaviour: &ClientBehaviour) -> Judgement {
        self.try_submit_judgement(behaviour).await
    }

    /// Queues the plain-English summary of a day; returns at once.
    pub fn try_submit_summary(&self, day: &DayAggregates) -> Pending<Summary> {
        let prompt = prompt::summary_prompt(day, self.inner.config.max_field_chars);
        self.submit(Op::Summary, prompt, None, |result| match result {
            Ok(Parsed::Text(text)) => Summary::Text(text),
            Ok(_) => Summary::Unsure(Unsure(UnsureReason::Cancelled)),
            Err(reason) => Summary::Unsure(Unsure(reason)),
        })
    }

    /// Summarises a day of traffic in plain English, or `Unsure`.
    pub async fn summarise_day(&self, day: &DayAggregates) -> Summary {
        self.try_submit_summary(day).await
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> AiStats {
        let c = &self.inner.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        AiStats {
            submitted: get(&c.submitted),
            calls: get(&c.calls),
            retries: get(&self.inner.transport.retries),
            answered: get(&c.answered),
            cache_hits: get(&c.cache_hits),
            skipped_queue_full: get(&c.skipped_queue_full),
            skipped_budget: get(&c.skipped_budget),
            skipped_breaker: get(&c.skipped_breaker),
            failed: get(&c.failed),
        }
    }

    fn submit<T: Send + 'static>(
        &self,
        op: Op,
        prompt: Prompt,
        client: Option<IpAddr>,
        map: impl FnOnce(Result<Parsed, UnsureReason>) -> T + Send + 'static,
    ) -> Pending<T> {
        let (sender, receiver) = oneshot::channel();
        let deliver: Deliver = Box::new(move |result| {
            // The receiver may be gone: the caller lost interest, which is fine.
            let _ = sender.send(map(result));
        });
        self.admit(op, prompt, client, deliver);
        Pending { receiver }
    }

    /// Everything that can refuse a call, in order of cost; then the call is spawned.
    fn admit(&self, op: Op, prompt: Prompt, client: Option<IpAddr>, deliver: Deliver) {
        let inner = &self.inner;
        bump(&inner.counters.submitted);
        if !inner.config.enabled {
            return deliver(Err(UnsureReason::Disabled));
        }
        let now = Instant::now();
        let (key, hit) = {
            let mut cache = lock(&inner.cache);
            let key = cache.key(&[op.tag(), &prompt.system, &prompt.user]);
            (key, cache.get(key, now))
        };
        if let Some(hit) = hit {
            bump(&inner.counters.cache_hits);
            return deliver(Ok(hit));
        }
        if lock(&inner.breaker).is_open(now) {
            bump(&inner.counters.skipped_breaker);
            return deliver(Err(UnsureReason::BreakerOpen));
        }
        let admitted = inner
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |pending| {
                (pending < inner.capacity).then_some(pending + 1)
            })
            .is_ok();
        if !admitted {
            bump(&inner.counters.skipped_queue_full);
            return deliver(Err(UnsureReason::QueueFull));
        }
        let slot = Slot(Arc::clone(inner));
        if let Err(refusal) = lock(&inner.budget).try_charge(client, utc_day()) {
            drop(slot);
            bump(&inner.counters.skipped_budget);
            return deliver(Err(match refusal {
                Refusal::Client | Refusal::TooManyClients => UnsureReason::ClientBudget,
                Refusal::Total => UnsureReason::DailyBudget,
            }));
        }
        let request = op.request(prompt, &inner.config);
        let task_inner = Arc::clone(inner);
        inner.runtime.spawn(async move {
            let result = task_inner.run(op, &request, key).await;
            drop(slot);
            deliver(result);
        });
    }
}

impl Inner {
    async fn run(&self, op: Op, request: &ChatRequest, key: Key) -> Result<Parsed, UnsureReason> {
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(UnsureReason::Cancelled);
        };
        if !lock(&self.breaker).allow(Instant::now()) {
            bump(&self.counters.skipped_breaker);
            return Err(UnsureReason::BreakerOpen);
        }
        bump(&self.counters.calls);
        let result = self
            .transport
            .complete(request)
            .await
            .and_then(|text| op.parse(&text, self.config.response_format));
        match &result {
            Ok(parsed) => {
                lock(&self.breaker).record_success();
                lock(&self.cache).insert(key, parsed.clone(), Instant::now());
                bump(&self.counters.answered);
            }
            Err(reason) => {
                bump(&self.counters.failed);
                if reason.is_transport_failure() {
                    lock(&self.breaker).record_failure(Instant::now());
                } else {
                    // The server answered; only the answer was unusable.
                    lock(&self.breaker).record_success();
                }
                tracing::debug!(%reason, "ai call unsure");
            }
        }
        result
    }
}

impl Op {
    fn tag(self) -> &'static str {
        match self {
            Self::Score => "score",
            Self::Verdict => "verdict",
            Self::Summary => "summary",
        }
    }

    fn request(self, prompt: Prompt, config: &AiConfig) -> ChatRequest {
        let (max_tokens, temperature, response_format) = match self {
            Self::Score => (
                config.triage_max_tokens,
                0.0,
                prompt::response_format(config.response_format, "score"),
            ),
            Self::Verdict => (
                config.triage_max_tokens,
                0.0,
                prompt::response_format(config.response_format, "verdict"),
            ),
            Self::Summary => (config.summary_max_tokens, 0.3, None),
        };
        ChatRequest {
            prompt,
            max_tokens,
            temperature,
            response_format,
        }
    }

    fn parse(self, text: &str, format: ResponseFormat) -> Result<Parsed, UnsureReason> {
        match self {
            Self::Score => answer::score(text, format).map(Parsed::Score),
            Self::Verdict => answer::verdict(text, format).map(Parsed::Block),
            Self::Summary => answer::summary(text, MAX_SUMMARY_CHARS).map(Parsed::Text),
        }
    }
}

/// Days since the Unix epoch, in UTC: the budget's day.
fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400)
}
