//! What the engine and the report hand to the typed operations: plain data, most of it written
//! by the client and therefore never trusted (see `prompt` for how it is marked as data).
use std::net::IpAddr;

pub use guard_core::engine::ClientBehaviour;

/// A borderline request, as the validator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriageRequest {
    /// The client address, charged against its daily budget; never put in the prompt.
    pub client: IpAddr,
    pub method: String,
    pub path: String,
    /// The query string without the leading `?`.
    pub query: String,
    /// Request headers as received (names and values are client-controlled).
    pub headers: Vec<(String, String)>,
    pub user_agent: String,
    /// The body as received (decoded lossily as UTF-8 for the prompt).
    pub body: Vec<u8>,
    /// Names of the validator rules that matched: guard's own identifiers, shown to the model
    /// (the seed told the model that nothing matched when something had).
    pub matched_rules: Vec<String>,
}

/// One day of traffic, aggregated by the report.
#[derive(Debug, Clone, PartialEq)]
pub struct DayAggregates {
    /// The UTC date, `YYYY-MM-DD`.
    pub date: String,
    pub total_requests: u64,
    pub errors: u64,
    pub blocked: u64,
    pub avg_latency_ms: f64,
    /// Slowest paths with their average latency in ms (paths are client-controlled).
    pub slowest: Vec<(String, f64)>,
    /// Most requested paths with their hit counts (paths are client-controlled).
    pub most_hit: Vec<(String, u64)>,
}
