//! The allowlist and the protected addresses: both let a source through XDP whatever its
//! bans, so a change to either re-writes the bans it overlaps (their allowlist flag follows).
use super::{AllowRecord, BanError, Bans, Net, ProtectList, now_ms};

impl Bans {
    /// Replaces what is never banned (the host's facts were read again): the XDP allowlist
    /// gains the new protected networks and loses those no longer protected (unless the
    /// operator allowlisted them), and the bans overlapping either are re-written so that their
    /// allowlist flag follows (a ban made before an address became protected no longer drops
    /// it). The bans themselves stay in the store.
    pub fn set_protected(&mut self, list: ProtectList) -> Result<(), BanError> {
        let (old, new) = (self.protected.nets(), list.nets());
        let added: Vec<Net> = new.iter().filter(|n| !old.contains(n)).copied().collect();
        let removed: Vec<Net> = old
            .iter()
            .filter(|n| !new.contains(n) && !self.allows.contains(n))
            .copied()
            .collect();
        for net in &added {
            self.xdp.put_allow(net)?;
        }
        for net in &removed {
            self.xdp.remove_allow(net)?;
        }
        self.protected = list;
        for net in added.iter().chain(&removed) {
            self.refresh_overlapping(net)?;
        }
        Ok(())
    }

    /// Adds an allowlist entry: the maps first, then the store.
    pub fn allow(&mut self, target: Net, reason: String) -> Result<AllowRecord, BanError> {
        let rec = AllowRecord {
            target,
            reason,
            created_at: now_ms(),
        };
        self.xdp.put_allow(&target)?;
        self.dirty = true;
        if let Err(e) = self.store.put_allow(&rec) {
            // Not stored: not allowed either, so the maps and the store stay the same.
            if !self.allows.contains(&target) && !self.protected.nets().contains(&target) {
                let _ = self.xdp.remove_allow(&target);
            }
            return Err(e.into());
        }
        if !self.allows.contains(&target) {
            self.allows.push(target);
        }
        self.refresh_overlapping(&target)?;
        Ok(rec)
    }

    /// Re-writes the bans that overlap `net` so their allowlist flag follows the allowlist.
    fn refresh_overlapping(&mut self, net: &Net) -> Result<(), BanError> {
        for ban in self.store.bans()? {
            if ban.target.overlaps(net) {
                let deadline = match ban.expires_at {
                    None => 0,
                    // Expired but not yet swept: the sweep removes it.
                    Some(_) => match self.xdp.ban_deadline(&ban.target) {
                        Some(d) if d != 0 => d,
                        _ => continue,
                    },
                };
                self.xdp.put_ban(&ban.target, deadline)?;
            }
        }
        Ok(())
    }

    /// Removes an allowlist entry.
    pub fn disallow(&mut self, target: &Net) -> Result<AllowRecord, BanError> {
        self.dirty = true;
        let rec = self
            .store
            .remove_allow(target)?
            .ok_or(BanError::NotAllowed { target: *target })?;
        self.allows.retain(|a| a != target);
        // A protected network stays in the XDP allowlist.
        if !self.protected.nets().contains(target) {
            self.xdp.remove_allow(target)?;
        }
        self.refresh_overlapping(target)?;
        Ok(rec)
    }

    /// The allowlist.
    pub fn allows(&self) -> Result<Vec<AllowRecord>, BanError> {
        Ok(self.store.allows()?)
    }
}
