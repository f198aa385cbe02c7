//! Lifting bans: by target or by filter. An address that is not banned itself but lies inside
//! banned networks is an error naming them; the operator may have the offence of a lifted
//! engine ban forgotten, so that a restart does not escalate the client's next ban for it.
use tracing::warn;

use super::{BanError, BanFilter, BanView, Bans, Lift, Net, Origin};

impl Bans {
    /// Lifts a ban. With `forget`, an engine ban's offence is forgotten in the store too (see
    /// [`Bans::forget_offence`]). A target that is not banned itself but lies inside banned
    /// networks is an error naming them.
    pub fn unban(&mut self, target: &Net, forget: bool) -> Result<BanView, BanError> {
        let not_saved = |source| BanError::RemovalNotSaved {
            target: *target,
            source,
        };
        self.dirty = true;
        let record = match self.store.remove_ban(target) {
            Ok(Some(record)) => record,
            Ok(None) => return Err(self.not_banned(target)),
            Err(source) => {
                // The operator wants it lifted: lift it, and say the store did not follow.
                self.xdp.remove_ban(target)?;
                return Err(not_saved(source));
            }
        };
        let view = self.view(record);
        self.xdp.remove_ban(target)?;
        if forget {
            self.forget_offence(&view);
        }
        Ok(view)
    }

    /// Why `target` cannot be lifted: it is not banned, or only the wider bans covering it are.
    fn not_banned(&self, target: &Net) -> BanError {
        let filter = BanFilter {
            ip: Some(target.addr()),
            ..BanFilter::default()
        };
        let covering: Vec<Net> = self
            .list(&filter)
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.addr)
            .filter(|n| n.prefix() < target.prefix() && n.contains(target.addr()))
            .collect();
        if covering.is_empty() {
            BanError::NotBanned { target: *target }
        } else {
            BanError::Covered {
                target: *target,
                covering: covering
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        }
    }

    /// The operator lifted an engine ban: the offence it counted is forgotten in the store, so
    /// that a restart does not escalate the client's next ban for it. A store error is logged:
    /// the ban is lifted all the same.
    fn forget_offence(&self, view: &BanView) {
        if view.origin != Origin::Engine {
            return;
        }
        if let Some(client) = view.evidence.as_ref().and_then(|e| e.client)
            && let Err(e) = self.store.forget_offence(client)
        {
            warn!(%client, "the lifted offence is still stored: {e}");
        }
    }

    /// Lifts every ban `filter` selects (its order and limit apply); returns the bans lifted.
    /// With `forget`, as [`Bans::unban`].
    pub fn unban_matching(
        &mut self,
        filter: &BanFilter,
        forget: bool,
    ) -> Result<Vec<BanView>, BanError> {
        let lifted = self.list(filter)?;
        let mut failure = None;
        self.dirty = true;
        for view in &lifted {
            if let Err(e) = self.store.remove_ban(&view.addr) {
                // Lifted anyway; the error is reported once for the batch.
                failure = failure.or(Some(e));
            }
            self.xdp.remove_ban(&view.addr)?;
            if forget {
                self.forget_offence(view);
            }
        }
        if let Some(source) = failure {
            return Err(BanError::BatchRemovalNotSaved {
                count: lifted.len(),
                source,
            });
        }
        Ok(lifted)
    }

    /// Lifts the ban of `target` only if `origin` made it: a deleted CrowdSec decision lifts
    /// the ban it made, never an operator's or the engine's ban of the same target. `false`
    /// when there is no such ban.
    pub fn lift_from(&mut self, target: &Lift, origin: Origin) -> Result<bool, BanError> {
        match target {
            Lift::Net(net) => {
                if self.store.ban(net)?.is_none_or(|b| b.origin != origin) {
                    return Ok(false);
                }
                self.unban(net, false).map(|_| true)
            }
            Lift::User(id) => {
                if self.store.user_ban(id)?.is_none_or(|b| b.origin != origin) {
                    return Ok(false);
                }
                self.unban_user(id).map(|_| true)
            }
        }
    }
}
