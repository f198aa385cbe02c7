//! Bans the daemon orders by itself (the engine, the packet rate): a target already banned at
//! least as long is left as it is, a protected address inside the client's network narrows the
//! ban to the client, the engine's offence is stored for escalation, and a verified user named
//! in the order is banned with the address.
use tracing::{info, warn};

use super::{BanError, BanRequest, Bans, Ordered, UserBanRequest};
use crate::clock::now_ms;
use crate::net::Net;
use crate::protect::Refusal;
use crate::store::OffenceRecord;

impl Bans {
    /// A ban the daemon orders by itself (the engine, the packet rate): a target already
    /// banned at least as long is left as it is (an operator's longer ban is not shortened, a
    /// shorter one is extended); an IPv6 network that holds a protected address narrows to the
    /// client; the engine's offence is stored for escalation across restarts. A verified user
    /// named in the order is banned too, for as long, whatever becomes of the address (it may be
    /// refused as allowlisted: the user is still the offender); a failure to ban the user is
    /// logged, not returned.
    pub fn order(&mut self, mut req: BanRequest) -> Result<Ordered, BanError> {
        let user = req.user.take();
        let result = self.order_addr(&mut req);
        if let Some(id) = user {
            let ureq = UserBanRequest {
                id,
                ttl: req.ttl,
                reason: req.reason.clone(),
                origin: req.origin,
                addr: Some(req.target),
            };
            let id = ureq.id.clone();
            match self.order_user(ureq) {
                Ok(Some(b)) => {
                    info!(user = %id.escape_debug(), addr = %req.target, expires_at = %crate::clock::format_expiry(b.expires_at), "user banned with the address");
                }
                Ok(None) => {}
                Err(e) => warn!(user = %id.escape_debug(), "engine user ban: {e}"),
            }
        }
        result
    }

    fn order_addr(&mut self, req: &mut BanRequest) -> Result<Ordered, BanError> {
        let client = req.evidence.as_ref().and_then(|e| e.client);
        if !req.target.is_host()
            && let Some(c) = client
            && matches!(
                self.protected.check(&req.target, false),
                Err(Refusal::Contains { .. })
            )
        {
            info!(network = %req.target, client = %c, "the client's network holds a protected address: banning the client alone");
            req.target = Net::host(c);
        }
        // A ban that lasts at least as long stays as it is; a shorter one is extended (else
        // the engine would count the client as banned after the maps let it go).
        if let Some(existing) = self.store.ban(&req.target)? {
            let wanted = req
                .ttl
                .unwrap_or(self.default_ttl)
                .as_millis()
                .try_into()
                .map_or(u64::MAX, |ms: u64| now_ms().saturating_add(ms));
            if existing.expires_at.is_none_or(|t| t >= wanted) {
                return Ok(Ordered::Already(req.target));
            }
        }
        let offence = req.evidence.as_ref().and_then(|e| e.offence);
        let view = self.ban(req.clone())?;
        if let (Some(count), Some(client)) = (offence, client) {
            let record = OffenceRecord {
                count,
                last: view.created_at / 1000,
            };
            if let Err(e) = self.store.put_offence(client, record) {
                warn!(target = %view.addr, "repeat offence not stored: {e}");
            }
        }
        Ok(Ordered::Banned(Box::new(view)))
    }
}
