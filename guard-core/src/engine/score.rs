//! The seed's rules over a client's windows: BLACK (block outright) and the GREY score.
use super::decide::{Facts, Finding, MINUTE};
use super::patterns::any_prefix;
use super::state::ClientState;
use super::{Core, Details, RateProfile, Rule};
use crate::tap::RequestEvent;

/// How long after resuming from idle a burst counts as "after idle".
const BURST_AFTER_IDLE: u32 = 60;

impl Core {
    /// The seed's BLACK rules (plus the flood bound).
    pub(super) fn black(&self, t: u32, f: &Facts, st: &mut ClientState) -> Option<Finding> {
        let b = &self.cfg.black;
        let finding = |rule, status, reason| Finding {
            rule,
            status,
            reason,
            details: Details::default(),
        };
        if b.empty_user_agent && f.empty_user_agent {
            return Some(finding(
                Rule::EmptyUserAgent,
                403,
                "empty user agent".into(),
            ));
        }
        let all = st.all_10s.sum(t);
        if all >= b.flood_requests_10s {
            return Some(finding(Rule::Flood, 429, format!("{all} requests in 10 s")));
        }
        let n = st.req_10s.sum(t);
        if n >= b.requests_10s {
            return Some(finding(
                Rule::RequestRate,
                429,
                format!("{n} requests in 10 s"),
            ));
        }
        let total = st.req_2min.sum(t / 10);
        let errors = st.err_2min.sum(t / 10);
        if total >= b.error_min_requests.max(1) && errors * 100 >= b.error_percent * total {
            return Some(finding(
                Rule::ErrorRate,
                403,
                format!("{errors} errors in {total} requests in 2 min"),
            ));
        }
        None
    }

    /// Whether a busy client's rate may count against it: always under the seed's profile;
    /// under the weighted one only when its recent requests do harm (errors, probes, sensitive
    /// targets). A fast client whose requests all succeed is rate-limited, never banned for it.
    pub(super) fn rate_counts(&self, t: u32, st: &mut ClientState) -> bool {
        if self.cfg.rate_profile == RateProfile::Seed {
            return true;
        }
        let total = st.req_2min.sum(t / 10);
        let errors = st.err_2min.sum(t / 10);
        if total > 0 && errors * 100 >= self.cfg.grey.error_percent * total {
            return true;
        }
        st.harm_at != 0 && t.saturating_sub(st.harm_at) < MINUTE
    }

    /// The seed's GREY score: the points and the rules that gave them.
    pub(super) fn grey(
        &self,
        t: u32,
        ev: &RequestEvent,
        f: &Facts,
        st: &mut ClientState,
        validator: bool,
    ) -> (u32, Vec<Rule>) {
        let g = &self.cfg.grey;
        let w = &g.weights;
        let mut rules = Vec::new();
        let ua = ev.headers.user_agent.as_deref().unwrap_or("");
        if self.user_agents.is_match(ua) {
            rules.push((Rule::SuspiciousUserAgent, w.suspicious_user_agent));
        }
        let n10 = st.req_10s.sum(t);
        let distinct = st.ring.distinct(t, MINUTE, 0);
        // Computed only when a rate rule is met: most requests need none of it.
        let busy = (g.elevated_requests_10s..self.cfg.black.requests_10s).contains(&n10)
            || distinct >= g.distinct_paths_1min
            || (st.resumed_at != 0 && n10 >= g.idle_burst_requests_10s);
        let rate_counts = busy && self.rate_counts(t, st);
        if rate_counts && (g.elevated_requests_10s..self.cfg.black.requests_10s).contains(&n10) {
            rules.push((Rule::ElevatedRate, w.elevated_rate));
        }
        let total = st.req_2min.sum(t / 10);
        let errors = st.err_2min.sum(t / 10);
        if total >= self.cfg.black.error_min_requests.max(1) {
            let pct = errors * 100 / total;
            if (g.error_percent..self.cfg.black.error_percent).contains(&pct) {
                rules.push((Rule::ModerateErrorRate, w.error_rate));
            }
        }
        if any_prefix(&f.path, &g.sensitive_paths) {
            rules.push((Rule::SensitivePath, w.sensitive_path));
        }
        if rate_counts && distinct >= g.distinct_paths_1min {
            rules.push((Rule::EndpointScanning, w.endpoint_scanning));
        }
        if st.ring.sequential_run(t, MINUTE) >= g.sequential_ids {
            rules.push((Rule::SequentialIds, w.sequential_ids));
        }
        if rate_counts
            && st.resumed_at != 0
            && t.saturating_sub(st.resumed_at) <= BURST_AFTER_IDLE
            && n10 >= g.idle_burst_requests_10s
            && distinct <= g.idle_burst_max_paths
        {
            rules.push((Rule::IdleBurst, w.idle_burst));
        }
        if !f.authenticated {
            rules.push((Rule::Unauthenticated, w.unauthenticated));
        }
        if validator {
            rules.push((Rule::ValidatorSuspicious, w.validator));
        }
        let score = rules.iter().map(|(_, w)| w).sum();
        (score, rules.into_iter().map(|(r, _)| r).collect())
    }
}
