//! The one thread that owns bans, user bans and the allowlist (`guard-bans`): sled's `bans`,
//! `user_bans` and `allow` trees, the XDP maps, the user lookup and the expiry deadlines.
//! Everything else holds a [`BanHandle`] and sends it typed [`Command`]s, each with a reply
//! channel, and waits for the answer; nobody holds a lock on this state, so nothing waits on a
//! lock held across I/O. (The one exception is read-only: the per-request paths read banned
//! users through [`BanHandle::users`], a lookup the owner writes, see `users`.)
//!
//! The thread takes every command queued, applies them in order, flushes sled **once** for the
//! batch, and only then answers: a reply that says a ban is saved means sled has flushed it to
//! disk. Between commands it sleeps until the next ban deadline (on the monotonic clock), at
//! most `bans.sweep_interval`, and then ends the bans that are due.
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{error, info, warn};

use super::{BanError, BanFilter, BanRequest, BanView, Bans, Origin, UserBanRequest, UserLookup};
use crate::net::Net;
use crate::protect::ProtectList;
use crate::store::{AllowRecord, StoreError, UserBanRecord};
use crate::xdp::Xdp;

/// Commands waiting for the owner, at most; a caller beyond waits (engine orders beyond are
/// dropped by the judge's own bounded queue, and given again).
pub const QUEUE: usize = 4096;

/// Commands applied between two flushes, at most (so that a flood of commands still gets
/// answers in bounded time).
pub const MAX_BATCH: usize = 8192;

/// Where an answer goes.
pub type Reply<T> = SyncSender<T>;

/// What the owner does for its callers.
pub enum Command {
    /// An operator's ban (`guard ban add`).
    Ban(BanRequest, Reply<Result<BanView, BanError>>),
    /// A ban the daemon orders by itself (engine, packet rate); see [`Bans::order`].
    Order(BanRequest, Reply<Result<Ordered, BanError>>),
    /// Lifts a ban; the flag forgets an engine ban's stored offence.
    Unban(Net, bool, Reply<Result<BanView, BanError>>),
    /// Lifts the bans a filter selects; the flag as for `Unban`.
    UnbanMatching(BanFilter, bool, Reply<Result<Vec<BanView>, BanError>>),
    Import(
        Vec<BanRequest>,
        Reply<Result<Vec<Result<Net, BanError>>, BanError>>,
    ),
    Allow(Net, String, Reply<Result<AllowRecord, BanError>>),
    Disallow(Net, Reply<Result<AllowRecord, BanError>>),
    List(BanFilter, Reply<Result<Vec<BanView>, BanError>>),
    Count(Reply<Result<usize, BanError>>),
    Allows(Reply<Result<Vec<AllowRecord>, BanError>>),
    /// Ends the bans that are due now; answers with them.
    Sweep(Reply<Result<Vec<Net>, BanError>>),
    /// Reads the state (counters, status): the closure sends its own answer.
    Read(Box<dyn FnOnce(&Bans) + Send>),
    /// Changes the XDP layer outside bans (the tap's ports): the closure answers.
    Xdp(Box<dyn FnOnce(&mut Xdp) + Send>),
    /// Replaces what is never banned (the host's addresses were read again).
    SetProtected(ProtectList, Reply<Result<(), BanError>>),
    /// An operator's user ban (`guard ban add --user`).
    BanUser(UserBanRequest, Reply<Result<UserBanRecord, BanError>>),
    /// Lifts a user ban (`guard ban rm --user`).
    UnbanUser(String, Reply<Result<UserBanRecord, BanError>>),
    /// Every user ban (`guard ban ls --user`).
    ListUsers(Reply<Result<Vec<UserBanRecord>, BanError>>),
    /// A user ban the daemon orders by itself (a CrowdSec decision): a longer ban of the user
    /// is left as it is (`None`).
    OrderUser(
        UserBanRequest,
        Reply<Result<Option<UserBanRecord>, BanError>>,
    ),
    /// Lifts the ban of an address, network or user only if `Origin` made it (a CrowdSec
    /// decision deleted): `false` when it is not banned, or banned by someone else.
    LiftFrom(Lift, Origin, Reply<Result<bool, BanError>>),
}

/// What [`Command::LiftFrom`] lifts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lift {
    Net(Net),
    User(String),
}

/// The outcome of [`Command::Order`].
#[derive(Debug)]
pub enum Ordered {
    Banned(Box<BanView>),
    /// The target was banned already: left as it is.
    Already(Net),
}

/// A message to the owner thread.
pub enum Msg<C> {
    Cmd(C),
    /// Answer what is queued, flush, and end.
    Stop,
}

/// What the owner loop needs of its state (bans in the daemon; a fake in the tests).
pub trait Owned {
    type Command;
    /// Applies one command; returns how to answer it once the batch is flushed (with the flush's
    /// error, if it failed).
    fn apply(&mut self, cmd: Self::Command) -> Answer;
    /// Whether a write since the last flush needs one.
    fn dirty(&self) -> bool;
    fn flush(&mut self) -> Result<(), StoreError>;
    /// The next monotonic deadline (ns) at which [`Owned::expire`] has work.
    fn next_deadline(&self) -> Option<u64>;
    /// Ends what is due (and writes the heartbeat).
    fn expire(&mut self);
}

/// Sends one command's answer after the batch's flush.
pub type Answer = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// Runs the owner loop on `state` until [`Msg::Stop`] or every sender is gone; returns the state.
/// `every` bounds the sleep between two expiry passes; `mono` reads the monotonic clock (ns).
pub fn run<O: Owned>(
    mut state: O,
    rx: &Receiver<Msg<O::Command>>,
    every: Duration,
    mono: impl Fn() -> u64,
) -> O {
    let every_ns = u64::try_from(every.as_nanos()).unwrap_or(u64::MAX);
    let mut next_pass = mono().saturating_add(every_ns);
    loop {
        let wake = state
            .next_deadline()
            .map_or(next_pass, |d| d.min(next_pass));
        let wait = Duration::from_nanos(wake.saturating_sub(mono()));
        let mut answers: Vec<Answer> = Vec::new();
        let mut stop = false;
        match rx.recv_timeout(wait) {
            Ok(Msg::Cmd(c)) => answers.extend(contained(&mut state, c)),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
            Err(RecvTimeoutError::Timeout) => {}
        }
        // Everything queued meanwhile joins the batch.
        while !stop && answers.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Cmd(c)) => answers.extend(contained(&mut state, c)),
                Ok(Msg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        let now = mono();
        if now >= next_pass || state.next_deadline().is_some_and(|d| d <= now) {
            state.expire();
            next_pass = now.saturating_add(every_ns);
        }
        let failed = if state.dirty() {
            state.flush().err()
        } else {
            None
        };
        if let Some(e) = &failed {
            error!("flushing the ban store: {e}");
        }
        for answer in answers {
            answer(failed.as_ref());
        }
        if stop {
            return state;
        }
    }
}

/// Applies one command; a panic costs that command only (its caller gets no answer, and
/// [`BanError::OwnerGone`]), never the owner thread, which every other caller depends on.
fn contained<O: Owned>(state: &mut O, cmd: O::Command) -> Option<Answer> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.apply(cmd))) {
        Ok(answer) => Some(answer),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            error!(panic = %message, "a ban command panicked; the owner goes on");
            None
        }
    }
}

/// The same store error again, for each command of a batch whose flush failed.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sled(s) | StoreError::Open { source: s, .. } => StoreError::Sled(s.clone()),
        StoreError::Locked { path, holder } => StoreError::Locked {
            path: path.clone(),
            holder: *holder,
        },
        other @ (StoreError::Corrupt { .. } | StoreError::BadBan { .. }) => {
            StoreError::Sled(sled::Error::Unsupported(other.to_string()))
        }
    }
}

/// An answer that does not depend on the flush (reads, refusals).
fn now<T: Send + 'static>(reply: Reply<T>, value: T) -> Answer {
    Box::new(move |_| {
        let _ = reply.send(value);
    })
}

/// An answer that turns into `not_saved` if the flush failed.
fn after_flush<T: Send + 'static>(
    reply: Reply<Result<T, BanError>>,
    value: Result<T, BanError>,
    not_saved: impl FnOnce(&T, StoreError) -> BanError + Send + 'static,
) -> Answer {
    Box::new(move |failed| {
        let value = match (value, failed) {
            (Ok(v), Some(e)) => Err(not_saved(&v, again(e))),
            (value, _) => value,
        };
        let _ = reply.send(value);
    })
}

impl Owned for Bans {
    type Command = Command;

    fn apply(&mut self, cmd: Command) -> Answer {
        match cmd {
            Command::Ban(req, reply) => {
                let r = self.ban(req);
                after_flush(reply, r, |v, source| BanError::NotSaved {
                    target: v.addr,
                    source,
                })
            }
            Command::Order(req, reply) => {
                let r = self.order(req);
                after_flush(reply, r, |o, source| BanError::NotSaved {
                    target: match o {
                        Ordered::Banned(v) => v.addr,
                        Ordered::Already(n) => *n,
                    },
                    source,
                })
            }
            Command::Unban(target, forget, reply) => {
                let r = self.unban(&target, forget);
                after_flush(reply, r, move |_, source| BanError::RemovalNotSaved {
                    target,
                    source,
                })
            }
            Command::UnbanMatching(filter, forget, reply) => {
                let r = self.unban_matching(&filter, forget);
                after_flush(reply, r, |lifted, source| BanError::BatchRemovalNotSaved {
                    count: lifted.len(),
                    source,
                })
            }
            Command::Import(reqs, reply) => {
                let r = self.import(reqs);
                after_flush(reply, r, |lines, source| BanError::BatchNotSaved {
                    // Every line the maps took is enforced; none is known to be on disk.
                    count: lines
                        .iter()
                        .filter(|l| matches!(l, Ok(_) | Err(BanError::NotSaved { .. })))
                        .count(),
                    source,
                })
            }
            Command::Allow(target, reason, reply) => {
                let r = self.allow(target, reason);
                after_flush(reply, r, |_, source| BanError::Store(source))
            }
            Command::Disallow(target, reply) => {
                let r = self.disallow(&target);
                after_flush(reply, r, |_, source| BanError::Store(source))
            }
            Command::List(filter, reply) => now(reply, self.list(&filter)),
            Command::Count(reply) => now(reply, self.count()),
            Command::Allows(reply) => now(reply, self.allows()),
            Command::Sweep(reply) => {
                let r = self.sweep();
                log_expired(&r);
                now(reply, r)
            }
            Command::Read(f) => {
                f(self);
                Box::new(|_| {})
            }
            Command::Xdp(f) => {
                f(self.xdp_mut());
                Box::new(|_| {})
            }
            Command::SetProtected(list, reply) => now(reply, self.set_protected(list)),
            Command::BanUser(req, reply) => {
                let r = self.ban_user(req);
                after_flush(reply, r, |b, source| BanError::UserNotSaved {
                    id: b.id.clone(),
                    source,
                })
            }
            Command::UnbanUser(id, reply) => {
                let r = self.unban_user(&id);
                after_flush(reply, r, |b, source| BanError::UserRemovalNotSaved {
                    id: b.id.clone(),
                    source,
                })
            }
            Command::ListUsers(reply) => now(reply, self.list_users()),
            Command::OrderUser(req, reply) => {
                let r = self.order_user(req);
                after_flush(reply, r, |b, source| BanError::UserNotSaved {
                    id: b.as_ref().map(|b| b.id.clone()).unwrap_or_default(),
                    source,
                })
            }
            Command::LiftFrom(target, origin, reply) => {
                let r = self.lift_from(&target, origin);
                after_flush(reply, r, |_, source| BanError::Store(source))
            }
        }
    }

    fn dirty(&self) -> bool {
        Bans::dirty(self)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        Bans::flush(self)
    }

    fn next_deadline(&self) -> Option<u64> {
        Bans::next_deadline(self)
    }

    fn expire(&mut self) {
        let r = self.sweep();
        log_expired(&r);
    }
}

fn log_expired(r: &Result<Vec<Net>, BanError>) {
    match r {
        Ok(gone) => {
            for net in gone {
                info!(target = %net, "ban expired");
            }
        }
        Err(e) => warn!("sweeping expired bans: {e}"),
    }
}

/// The owner thread and a handle to it.
pub struct Owner {
    handle: BanHandle,
    thread: JoinHandle<Bans>,
}

impl Owner {
    /// Starts the owner thread on `bans`; expired bans are looked for at least every `every`.
    pub fn spawn(bans: Bans, every: Duration) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let expired = bans.expired_counter();
        let users = bans.user_lookup();
        let thread = std::thread::Builder::new()
            .name("guard-bans".into())
            .spawn(move || run(bans, &rx, every, crate::clock::mono_ns))?;
        Ok(Self {
            handle: BanHandle { tx, expired, users },
            thread,
        })
    }

    /// A handle for callers.
    #[must_use]
    pub fn handle(&self) -> BanHandle {
        self.handle.clone()
    }

    /// Answers what is queued, flushes, ends the thread and returns its state (`None` if the
    /// thread panicked).
    #[must_use]
    pub fn stop(self) -> Option<Bans> {
        let _ = self.handle.tx.send(Msg::Stop);
        self.thread.join().ok()
    }
}

/// A handle to the owner: cloneable, each call waits for the owner's answer (call it from a
/// thread that may block: a control handler's blocking task, the ban applier, `spawn_blocking`).
#[derive(Clone)]
pub struct BanHandle {
    tx: SyncSender<Msg<Command>>,
    expired: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The banned users, read without the owner (see [`UserLookup`]).
    users: UserLookup,
}

impl BanHandle {
    fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, BanError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Msg::Cmd(make(tx)))
            .map_err(|_| BanError::OwnerGone)?;
        rx.recv().map_err(|_| BanError::OwnerGone)
    }

    /// Sends a command, waiting for room in the queue; `false` if the owner is gone.
    #[must_use]
    pub fn send(&self, cmd: Command) -> bool {
        self.tx.send(Msg::Cmd(cmd)).is_ok()
    }

    /// Sends a command if the queue has room now; `false` if it is full or the owner is gone.
    #[must_use]
    pub fn try_send(&self, cmd: Command) -> bool {
        self.tx.try_send(Msg::Cmd(cmd)).is_ok()
    }

    pub fn ban(&self, req: BanRequest) -> Result<BanView, BanError> {
        self.call(|r| Command::Ban(req, r))?
    }

    pub fn order(&self, req: BanRequest) -> Result<Ordered, BanError> {
        self.call(|r| Command::Order(req, r))?
    }

    /// Lifts the ban of `target`; `forget` forgets an engine ban's stored offence.
    pub fn unban(&self, target: Net, forget: bool) -> Result<BanView, BanError> {
        self.call(|r| Command::Unban(target, forget, r))?
    }

    /// Lifts the bans `filter` selects; `forget` as for [`BanHandle::unban`].
    pub fn unban_matching(
        &self,
        filter: BanFilter,
        forget: bool,
    ) -> Result<Vec<BanView>, BanError> {
        self.call(|r| Command::UnbanMatching(filter, forget, r))?
    }

    pub fn import(&self, reqs: Vec<BanRequest>) -> Result<Vec<Result<Net, BanError>>, BanError> {
        self.call(|r| Command::Import(reqs, r))?
    }

    pub fn allow(&self, target: Net, reason: String) -> Result<AllowRecord, BanError> {
        self.call(|r| Command::Allow(target, reason, r))?
    }

    pub fn disallow(&self, target: Net) -> Result<AllowRecord, BanError> {
        self.call(|r| Command::Disallow(target, r))?
    }

    pub fn list(&self, filter: BanFilter) -> Result<Vec<BanView>, BanError> {
        self.call(|r| Command::List(filter, r))?
    }

    pub fn count(&self) -> Result<usize, BanError> {
        self.call(Command::Count)?
    }

    pub fn allows(&self) -> Result<Vec<AllowRecord>, BanError> {
        self.call(Command::Allows)?
    }

    /// Replaces what is never banned.
    pub fn set_protected(&self, list: ProtectList) -> Result<(), BanError> {
        self.call(|r| Command::SetProtected(list, r))?
    }

    /// Ends the bans due now; returns them.
    pub fn sweep(&self) -> Result<Vec<Net>, BanError> {
        self.call(Command::Sweep)?
    }

    /// Runs `f` on the owner's state and returns its result.
    pub fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Bans) -> T + Send + 'static,
    ) -> Result<T, BanError> {
        self.call(|r| {
            Command::Read(Box::new(move |bans| {
                let _ = r.send(f(bans));
            }))
        })
    }

    /// Runs `f` on the owner's XDP layer and returns its result.
    pub fn with_xdp<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Xdp) -> T + Send + 'static,
    ) -> Result<T, BanError> {
        self.call(|r| {
            Command::Xdp(Box::new(move |xdp| {
                let _ = r.send(f(xdp));
            }))
        })
    }

    /// The lookup of banned users for the per-request paths: `is_banned(id)` answers from
    /// memory, never waiting for the owner or the disk. Clone it once and keep it.
    #[must_use]
    pub fn users(&self) -> UserLookup {
        self.users.clone()
    }

    /// Bans a user (an operator's ban: replaces any ban of that user).
    pub fn ban_user(&self, req: UserBanRequest) -> Result<UserBanRecord, BanError> {
        self.call(|r| Command::BanUser(req, r))?
    }

    /// Lifts a user ban.
    pub fn unban_user(&self, id: String) -> Result<UserBanRecord, BanError> {
        self.call(|r| Command::UnbanUser(id, r))?
    }

    /// Every user ban, by id.
    pub fn list_users(&self) -> Result<Vec<UserBanRecord>, BanError> {
        self.call(Command::ListUsers)?
    }

    /// A user ban the daemon orders by itself (see [`Command::OrderUser`]).
    pub fn order_user(&self, req: UserBanRequest) -> Result<Option<UserBanRecord>, BanError> {
        self.call(|r| Command::OrderUser(req, r))?
    }

    /// Lifts a ban only if `origin` made it (see [`Command::LiftFrom`]).
    pub fn lift_from(&self, target: Lift, origin: Origin) -> Result<bool, BanError> {
        self.call(|r| Command::LiftFrom(target, origin, r))?
    }

    /// Bans ended by expiry since start.
    #[must_use]
    pub fn expired(&self) -> u64 {
        self.expired.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
