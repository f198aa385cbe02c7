//! The owner loop on a fake state: batching (one flush for all that is queued), answers only
//! after the flush, a failed flush turned into "not saved", and the expiry timer.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A write command: its number, and where to answer (number, flushes done when answered).
struct Write(u32, Reply<WriteAnswer>);

/// Counts flushes, records the order of events, can fail its flushes, and has one deadline.
struct Fake {
    flushes: Arc<AtomicU64>,
    events: Arc<Mutex<Vec<String>>>,
    dirty: bool,
    fail_flush: bool,
    deadline: Option<u64>,
    expired: Arc<AtomicU64>,
}

impl Fake {
    fn new() -> Self {
        Self {
            flushes: Arc::default(),
            events: Arc::default(),
            dirty: false,
            fail_flush: false,
            deadline: None,
            expired: Arc::default(),
        }
    }
}

impl Owned for Fake {
    type Command = Write;

    fn apply(&mut self, Write(n, reply): Write) -> Answer {
        self.dirty = true;
        self.events.lock().unwrap().push(format!("apply {n}"));
        let (flushes, events) = (Arc::clone(&self.flushes), Arc::clone(&self.events));
        Box::new(move |failed| {
            events.lock().unwrap().push(format!("answer {n}"));
            let value = match failed {
                Some(e) => Err(BanError::Store(again(e))),
                None => Ok((n, flushes.load(Ordering::SeqCst))),
            };
            let _ = reply.send(value);
        })
    }

    fn dirty(&self) -> bool {
        self.dirty
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.dirty = false;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.events.lock().unwrap().push("flush".into());
        if self.fail_flush {
            return Err(StoreError::Sled(sled::Error::Io(
                std::io::Error::from_raw_os_error(28),
            )));
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.deadline
    }

    fn expire(&mut self) {
        if self.deadline.is_some_and(|d| d <= crate::clock::mono_ns()) {
            self.deadline = None;
            self.expired.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// What a write is answered: its number and the flushes done, or the error.
type WriteAnswer = Result<(u32, u64), BanError>;

/// Queues `n` writes before the owner starts, runs it until they are answered, and returns
/// the answers and the state.
fn run_batch(fake: Fake, n: u32) -> (Vec<WriteAnswer>, Fake) {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let mut replies: Vec<Receiver<_>> = Vec::new();
    for i in 0..n {
        let (rtx, rrx) = mpsc::sync_channel(1);
        tx.send(Msg::Cmd(Write(i, rtx))).unwrap();
        replies.push(rrx);
    }
    tx.send(Msg::Stop).unwrap();
    let fake = run(fake, &rx, Duration::from_secs(1), crate::clock::mono_ns);
    let answers = replies
        .into_iter()
        .map(|r| r.recv_timeout(Duration::from_secs(5)).expect("answered"))
        .collect();
    (answers, fake)
}

#[test]
fn queued_commands_are_flushed_once_and_answered_after_the_flush() {
    let (answers, fake) = run_batch(Fake::new(), 500);
    assert_eq!(
        fake.flushes.load(Ordering::SeqCst),
        1,
        "one flush for the batch"
    );
    for (i, a) in answers.into_iter().enumerate() {
        let (n, flushes_seen) = a.expect("saved");
        assert_eq!(n as usize, i, "answers in order");
        assert_eq!(flushes_seen, 1, "answered before its flush");
    }
    let events = fake.events.lock().unwrap();
    let flush_at = events.iter().position(|e| e == "flush").unwrap();
    assert_eq!(flush_at, 500, "every command applied before the flush");
    assert!(
        events[flush_at + 1..]
            .iter()
            .all(|e| e.starts_with("answer"))
    );
    assert_eq!(events.len(), 1001);
}

#[test]
fn a_failed_flush_answers_every_write_of_the_batch_with_the_error() {
    let mut fake = Fake::new();
    fake.fail_flush = true;
    let (answers, _) = run_batch(fake, 3);
    for a in answers {
        let e = a.expect_err("not saved");
        assert!(e.to_string().contains("No space left"), "{e}");
    }
}

#[test]
fn commands_sent_one_by_one_are_each_answered_promptly() {
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let fake = Fake::new();
    let flushes = Arc::clone(&fake.flushes);
    let owner =
        std::thread::spawn(move || run(fake, &rx, Duration::from_secs(1), crate::clock::mono_ns));
    let start = Instant::now();
    for i in 0..20 {
        let (rtx, rrx) = mpsc::sync_channel(1);
        tx.send(Msg::Cmd(Write(i, rtx))).unwrap();
        let (n, seen) = rrx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!((n, seen), (i, u64::from(i) + 1));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(tx);
    owner.join().unwrap();
    assert_eq!(flushes.load(Ordering::SeqCst), 20);
}

#[test]
fn expiry_runs_at_the_deadline_without_any_command() {
    let (tx, rx) = mpsc::sync_channel::<Msg<Write>>(QUEUE);
    let mut fake = Fake::new();
    fake.deadline = Some(crate::clock::mono_ns() + 100_000_000);
    let expired = Arc::clone(&fake.expired);
    // The periodic pass is far away: only the deadline can wake the owner in time.
    let owner =
        std::thread::spawn(move || run(fake, &rx, Duration::from_mins(1), crate::clock::mono_ns));
    let start = Instant::now();
    while expired.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    assert_eq!(expired.load(Ordering::SeqCst), 1);
    assert!(
        took >= Duration::from_millis(90) && took < Duration::from_secs(1),
        "{took:?}"
    );
    tx.send(Msg::Stop).unwrap();
    let fake = owner.join().unwrap();
    assert_eq!(
        fake.flushes.load(Ordering::SeqCst),
        0,
        "nothing written, nothing flushed"
    );
}

/// A command that panics inside the owner costs that command only: its caller is told, and the
/// commands before and after it are applied, flushed and answered.
#[test]
fn a_panicking_command_does_not_stop_the_owner() {
    struct Boom;
    impl Owned for Boom {
        type Command = Option<Reply<u32>>;
        fn apply(&mut self, cmd: Self::Command) -> Answer {
            let reply = cmd.expect("injected panic");
            Box::new(move |_| {
                let _ = reply.send(7);
            })
        }
        fn dirty(&self) -> bool {
            false
        }
        fn flush(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn next_deadline(&self) -> Option<u64> {
            None
        }
        fn expire(&mut self) {}
    }
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let owner = std::thread::spawn(move || {
        run(Boom, &rx, Duration::from_secs(1), crate::clock::mono_ns);
    });
    let (a, ra) = mpsc::sync_channel(1);
    tx.send(Msg::Cmd(Some(a))).unwrap();
    tx.send(Msg::Cmd(None)).unwrap();
    let (b, rb) = mpsc::sync_channel(1);
    tx.send(Msg::Cmd(Some(b))).unwrap();
    assert_eq!(ra.recv_timeout(Duration::from_secs(5)), Ok(7));
    assert_eq!(rb.recv_timeout(Duration::from_secs(5)), Ok(7));
    tx.send(Msg::Stop).unwrap();
    owner.join().expect("the owner thread survived");
}

/// sled on disk behind the owner loop: each write inserts a key; the flush is sled's.
struct Disk {
    db: sled::Db,
    dirty: bool,
    flushes: u64,
}

impl Owned for Disk {
    type Command = (u32, Reply<bool>);

    fn apply(&mut self, (n, reply): Self::Command) -> Answer {
        self.dirty = true;
        let ok = self.db.insert(n.to_be_bytes(), &[0u8; 64][..]).is_ok();
        Box::new(move |failed| {
            let _ = reply.send(ok && failed.is_none());
        })
    }
    fn dirty(&self) -> bool {
        self.dirty
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        self.dirty = false;
        self.flushes += 1;
        self.db.flush()?;
        Ok(())
    }
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    fn expire(&mut self) {}
}

/// Measures what batching buys on a real disk: 2,000 writes from 8 callers at once through
/// the owner, against the same writes each flushed on its own (as every ban was before).
/// `cargo test -p guard-daemon --lib owner_batching_on_disk -- --ignored --nocapture`
#[test]
#[ignore = "a measurement on the real disk, not a check"]
fn owner_batching_on_disk() {
    let dir = std::env::temp_dir().join(format!("guard-owner-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let db = sled::Config::new().path(&dir).open().unwrap();
    let start = Instant::now();
    for n in 0..2_000u32 {
        db.insert(n.to_be_bytes(), &[0u8; 64][..]).unwrap();
        db.flush().unwrap();
    }
    let one_by_one = start.elapsed();
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let disk = Disk {
        db,
        dirty: false,
        flushes: 0,
    };
    let owner =
        std::thread::spawn(move || run(disk, &rx, Duration::from_secs(1), crate::clock::mono_ns));
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let tx = tx.clone();
            s.spawn(move || {
                for i in 0..250u32 {
                    let (rtx, rrx) = mpsc::sync_channel(1);
                    tx.send(Msg::Cmd((10_000 + t * 1_000 + i, rtx))).unwrap();
                    assert!(rrx.recv().unwrap());
                }
            });
        }
    });
    let batched = start.elapsed();
    tx.send(Msg::Stop).unwrap();
    let disk = owner.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "2,000 writes, each flushed: {one_by_one:?}; through the owner from 8 callers: {batched:?} \
         with {} flushes",
        disk.flushes
    );
}
