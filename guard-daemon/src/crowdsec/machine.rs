//! The machine side: guard's own bans pushed to the LAPI as alerts with their decisions, so
//! that every other bouncer of the installation enforces them.
//!
//! The ban owner (and, in shadow mode, the judge) offers each new ban to a [`Feed`]: a bounded
//! queue, never waited on (a full queue drops the alert and counts it). The [`Pusher`] task
//! logs in with `/v1/watchers/login`, and posts what is queued to `/v1/alerts`: scenario
//! `guard/<rule>`, the evidence as the alert's event, the ban as its decision (origin
//! `crowdsec`, so that `cscli decisions list` shows it), marked simulated in shadow mode.
//! While the LAPI is down the batch in hand is kept and retried with backoff; the queue holds
//! the rest. Bans that came from the LAPI (origin `crowdsec`) are never offered back.
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{CrowdsecConfig, CrowdsecError, CrowdsecStats, Secret, body_within, http_client};
use crate::engine::Evidence;
use crate::net::Net;
use crate::store::{BanRecord, Origin};

/// Alerts posted in one request, at most.
const BATCH: usize = 100;
/// Largest answer read from the LAPI for a login or a push.
const MAX_ANSWER: usize = 1024 * 1024;
/// A permanent ban is pushed as a decision of ten years.
const PERMANENT: Duration = Duration::from_hours(87_600);

/// A ban to push.
#[derive(Debug, Clone)]
pub struct Pending {
    pub target: Net,
    /// Wall-clock ms at which the ban ends; `None` = permanent. The decision pushed lasts what
    /// is left of it at the push, a second less, so that it never outlasts the ban here (its
    /// echo through the stream then finds the ban and leaves it as it is).
    pub ends_at: Option<u64>,
    pub reason: String,
    pub origin: Origin,
    pub evidence: Option<Evidence>,
    /// Decided in shadow mode: pushed as simulated (no bouncer enforces it).
    pub simulated: bool,
    /// Wall-clock ms of the ban.
    pub at_ms: u64,
}

/// Where new bans are offered; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Feed {
    tx: mpsc::Sender<Pending>,
    push_manual: bool,
    stats: Arc<CrowdsecStats>,
}

impl Feed {
    /// Offers a ban as stored; bans from the LAPI, and the operator's unless
    /// `crowdsec.push_manual`, are not pushed.
    pub fn offer(&self, record: &BanRecord, simulated: bool) {
        self.offer_pending(Pending {
            target: record.target,
            ends_at: record.expires_at,
            reason: record.reason.clone(),
            origin: record.origin,
            evidence: record.evidence.clone(),
            simulated,
            at_ms: record.created_at,
        });
    }

    /// Offers a ban to push (see [`Feed::offer`]).
    pub fn offer_pending(&self, p: Pending) {
        let wanted = match p.origin {
            Origin::Engine | Origin::RateLimit => true,
            Origin::Cli | Origin::Import => self.push_manual,
            // No echo: what came from the LAPI goes back to no one.
            Origin::Crowdsec | Origin::Unknown => false,
        };
        if !wanted {
            return;
        }
        match self.tx.try_send(p) {
            Ok(()) => {
                self.stats.push_queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p)) => {
                self.stats.alerts_dropped.fetch_add(1, Ordering::Relaxed);
                debug!(target = %p.target, "CrowdSec push queue full: alert dropped");
            }
        }
    }
}

/// Posts queued bans to the LAPI until the task is aborted.
pub struct Pusher {
    cfg: CrowdsecConfig,
    machine_id: String,
    password: Secret,
    http: reqwest::Client,
    rx: mpsc::Receiver<Pending>,
    stats: Arc<CrowdsecStats>,
    token: Option<String>,
}

/// A feed and the task that empties it.
pub fn channel(
    cfg: &CrowdsecConfig,
    machine_id: String,
    password: Secret,
    stats: Arc<CrowdsecStats>,
) -> Result<(Feed, Pusher), CrowdsecError> {
    let (tx, rx) = mpsc::channel(cfg.push_queue);
    let feed = Feed {
        tx,
        push_manual: cfg.push_manual,
        stats: Arc::clone(&stats),
    };
    let pusher = Pusher {
        http: http_client(cfg)?,
        cfg: cfg.clone(),
        machine_id,
        password,
        rx,
        stats,
        token: None,
    };
    Ok((feed, pusher))
}

impl Pusher {
    /// Takes batches off the queue and posts them; a batch that fails is kept and posted again
    /// after a doubling wait (up to `crowdsec.retry_max`).
    pub async fn run(mut self) {
        info!(machine = %self.machine_id, "CrowdSec machine: guard's bans are pushed as alerts");
        let mut batch: Vec<Pending> = Vec::new();
        let mut failures = 0u32;
        loop {
            if batch.is_empty() {
                let Some(first) = self.rx.recv().await else {
                    return;
                };
                batch.push(first);
                while batch.len() < BATCH {
                    match self.rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
            }
            match self.push(&batch).await {
                Ok(()) => {
                    let n = batch.len() as u64;
                    self.stats.alerts_pushed.fetch_add(n, Ordering::Relaxed);
                    self.stats.push_queued.fetch_sub(n, Ordering::Relaxed);
                    debug!(alerts = n, "pushed to the CrowdSec LAPI");
                    if failures > 0 {
                        info!(alerts = n, "CrowdSec LAPI takes alerts again");
                    }
                    batch.clear();
                    failures = 0;
                }
                Err(e) => {
                    self.stats.push_failures.fetch_add(1, Ordering::Relaxed);
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        warn!("pushing alerts to the CrowdSec LAPI failed (kept and retried): {e}");
                    }
                    let wait = self
                        .cfg
                        .poll_interval
                        .saturating_mul(1 << failures.min(16).saturating_sub(1))
                        .min(self.cfg.retry_max);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn login(&mut self) -> Result<String, CrowdsecError> {
        let body = json!({
            "machine_id": self.machine_id,
            "password": self.password.expose(),
            "scenarios": [],
        });
        let resp = self
            .http
            .post(self.cfg.url("/v1/watchers/login"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|source| CrowdsecError::Unreachable { source })?;
        if !resp.status().is_success() {
            return Err(CrowdsecError::Status {
                what: "the machine login",
                status: resp.status().as_u16(),
            });
        }
        let answer = body_within(resp, "the machine login", MAX_ANSWER).await?;
        let token = serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_owned))
            .filter(|t| !t.is_empty())
            .ok_or(CrowdsecError::NoToken)?;
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        self.token = Some(token.clone());
        Ok(token)
    }

    async fn push(&mut self, batch: &[Pending]) -> Result<(), CrowdsecError> {
        let now = crate::clock::now_ms();
        let alerts: Vec<Value> = batch
            .iter()
            .filter_map(|p| {
                let a = alert(p, now);
                if a.is_none() {
                    debug!(target = %p.target, "ban over before its push: not pushed");
                }
                a
            })
            .collect();
        if alerts.is_empty() {
            return Ok(());
        }
        let body = Value::Array(alerts).to_string();
        // One more login if the token has expired.
        for attempt in 0..2 {
            let token = match self.token.clone() {
                Some(t) => t,
                None => self.login().await?,
            };
            let resp = self
                .http
                .post(self.cfg.url("/v1/alerts"))
                .header("Content-Type", "application/json")
                .bearer_auth(token)
                .body(body.clone())
                .send()
                .await
                .map_err(|source| CrowdsecError::Unreachable { source })?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token = None;
                continue;
            }
            if !status.is_success() {
                return Err(CrowdsecError::Status {
                    what: "the alerts",
                    status: status.as_u16(),
                });
            }
            let _ = body_within(resp, "the alerts", MAX_ANSWER).await?;
            return Ok(());
        }
        Err(CrowdsecError::Status {
            what: "the alerts",
            status: 401,
        })
    }
}

/// RFC 3339 UTC time of ms since the epoch.
fn rfc3339(ms: u64) -> String {
    let t = guard_core::time::format_utc(ms).replace(' ', "T");
    if t.ends_with('Z') { t } else { format!("{t}Z") }
}

/// The alert of one ban at `now_ms`: scenario `guard/<rule>`, the evidence as its event, the
/// ban as its decision; `None` when less than two seconds of the ban are left.
#[must_use]
pub fn alert(p: &Pending, now_ms: u64) -> Option<Value> {
    let left = match p.ends_at {
        None => PERMANENT,
        Some(end) => Duration::from_secs((end.saturating_sub(now_ms) / 1000).checked_sub(1)?),
    };
    if left.is_zero() {
        return None;
    }
    let rule = p
        .evidence
        .as_ref()
        .map(|e| e.rule.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or(match p.origin {
            Origin::Cli | Origin::Import => "manual",
            _ => p.origin.name(),
        });
    let scenario = format!("guard/{rule}");
    let (scope, value) = if p.target.is_host() {
        ("Ip", p.target.addr().to_string())
    } else {
        ("Range", p.target.to_string())
    };
    let at = rfc3339(p.at_ms);
    let mut meta = vec![
        json!({"key": "reason", "value": p.reason}),
        json!({"key": "origin", "value": p.origin.name()}),
    ];
    if let Some(e) = &p.evidence {
        for path in e.sample_paths.iter().take(10) {
            meta.push(json!({"key": "path", "value": path}));
        }
        let mut text = serde_json::to_string(e).unwrap_or_default();
        if text.len() > 4000 {
            let cut = (0..=4000)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            text.truncate(cut);
        }
        meta.push(json!({"key": "evidence", "value": text}));
    }
    let mut source = json!({"scope": scope, "value": value});
    if p.target.is_host() {
        source["ip"] = json!(value);
    } else {
        source["range"] = json!(value);
    }
    Some(json!({
        "scenario": scenario,
        "scenario_hash": "",
        "scenario_version": "",
        "message": format!("guard: {} banned: {}", p.target, p.reason),
        "events_count": 1,
        "start_at": at,
        "stop_at": at,
        "capacity": 0,
        "leakspeed": "0",
        "simulated": p.simulated,
        "events": [{"timestamp": at, "meta": meta}],
        "source": source,
        "decisions": [{
            "duration": format!("{}s", left.as_secs()),
            "origin": "crowdsec",
            "scenario": scenario,
            "scope": scope,
            "type": "ban",
            "value": value,
            "simulated": p.simulated,
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(origin: Origin) -> Pending {
        Pending {
            target: "192.0.2.7".parse().unwrap(),
            ends_at: Some(1_796_283_360_000 + 600_000),
            reason: "backdoor: 2 hits".into(),
            origin,
            evidence: Some(Evidence {
                rule: "backdoor".into(),
                sample_paths: vec!["/shell.php".into()],
                ..Evidence::default()
            }),
            simulated: false,
            at_ms: 1_796_283_360_000,
        }
    }

    #[test]
    fn an_alert_carries_scenario_evidence_and_decision() {
        let a = alert(&pending(Origin::Engine), 1_796_283_360_000).unwrap();
        assert_eq!(a["scenario"], "guard/backdoor");
        assert_eq!(a["source"]["ip"], "192.0.2.7");
        assert_eq!(a["start_at"], "2026-12-03T07:36:00Z");
        let d = &a["decisions"][0];
        assert_eq!(
            (&d["duration"], &d["scope"], &d["value"], &d["origin"]),
            (
                &json!("599s"),
                &json!("Ip"),
                &json!("192.0.2.7"),
                &json!("crowdsec")
            )
        );
        let meta = a["events"][0]["meta"].as_array().unwrap();
        assert!(
            meta.iter()
                .any(|m| m["key"] == "path" && m["value"] == "/shell.php")
        );
        let mut p = pending(Origin::Cli);
        p.target = "198.51.100.0/24".parse().unwrap();
        p.evidence = None;
        p.simulated = true;
        // Pushed 100.5 s after the ban: what is left, a second less, so it never outlasts it.
        let a = alert(&p, 1_796_283_360_000 + 100_500).unwrap();
        assert_eq!(a["decisions"][0]["duration"], "498s");
        assert!(
            alert(&p, 1_796_283_360_000 + 599_000).is_none(),
            "over: not pushed"
        );
        assert_eq!(a["scenario"], "guard/manual");
        assert_eq!(a["decisions"][0]["scope"], "Range");
        assert_eq!(a["decisions"][0]["simulated"], true);
    }

    #[test]
    fn the_feed_never_echoes_and_counts_what_it_cannot_hold() {
        let stats = Arc::new(CrowdsecStats::default());
        let cfg = CrowdsecConfig {
            lapi_url: Some("http://127.0.0.1:1".into()),
            push_queue: 2,
            ..CrowdsecConfig::default()
        };
        let (feed, mut pusher) =
            channel(&cfg, "m".into(), Secret::new("p"), Arc::clone(&stats)).unwrap();
        feed.offer_pending(pending(Origin::Crowdsec));
        feed.offer_pending(pending(Origin::Cli));
        assert!(
            pusher.rx.try_recv().is_err(),
            "LAPI and manual bans are not pushed"
        );
        for _ in 0..3 {
            feed.offer_pending(pending(Origin::Engine));
        }
        assert_eq!(stats.push_queued.load(Ordering::Relaxed), 2);
        assert_eq!(stats.alerts_dropped.load(Ordering::Relaxed), 1);
    }
}
