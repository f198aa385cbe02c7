//! The eBPF programs' log (aya-log) through `BPF_PROG_TEST_RUN`: with the level on, a malformed
//! frame and a source's first over-rate packet each leave one record in the log ring, read back
//! by aya-log's own reader; with the level off (what `guard run` loads by default) the same
//! frames leave none, while the counters still move.
mod prog;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use aya_log::EbpfLogger;
use guard_common::*;
use guard_tests::require_root;
use prog::*;

/// A `log::Log` that keeps every record (level and text).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(log::Level, String)>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }

    fn flush(&self) {}
}

impl Capture {
    fn take(&self) -> Vec<(log::Level, String)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// `xdp_guard` loaded as the daemon loads it, with aya-log's level global set to `level`
/// (0 = off), and the log ring's reader (opened after the load, as the daemon does).
fn load_with_log(level: u8) -> anyhow::Result<(Loaded, EbpfLogger<Capture>, Capture)> {
    let object = std::path::PathBuf::from(env!("GUARD_EBPF_DIR")).join("guard-ebpf");
    let bytes = std::fs::read(&object)?;
    let pins = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/guard-log-{}",
        guard_tests::unique("p")
    ));
    std::fs::create_dir_all(&pins)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins)
        .override_global(aya_log::LEVEL, &level, true)
        .load(&bytes)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP_GUARD)
        .expect("program")
        .try_into()?;
    prog.load()?;
    let capture = Capture::default();
    let logger = EbpfLogger::init_with_logger(&mut ebpf, capture.clone())?;
    Ok((Loaded { ebpf, pins }, logger, capture))
}

/// An Ethernet header announcing IPv4, followed by 10 bytes: too short for an IPv4 header.
fn truncated_v4() -> Vec<u8> {
    let mut f = eth(&[], 0x0800);
    f.extend_from_slice(&[0x45; 10]);
    f
}

/// Rate limit of one packet per second with a burst of one: the second packet from a source
/// within a second is over the rate.
fn one_per_second() -> XdpConfig {
    XdpConfig {
        cost_ns: 1_000_000_000,
        cap_ns: 1_000_000_000,
        event_window_ns: 1_000_000_000,
        ..Default::default()
    }
}

#[test]
fn prog_test_run_log_records_malformed_frames_and_first_rate_drop_when_on() -> anyhow::Result<()> {
    require_root!();
    let (mut l, mut logger, capture) = load_with_log(aya_log::Level::Debug as u8)?;
    assert_eq!(l.run(&truncated_v4())?, XDP_PASS);
    assert_eq!(l.stat(STAT_MALFORMED), 1);
    logger.flush();
    let records = capture.take();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].0, log::Level::Debug);
    assert!(
        records[0].1.contains("malformed frame"),
        "{:?}",
        records[0].1
    );

    l.set_config(one_per_second());
    let src = Ipv4Addr::new(192, 0, 2, 77);
    assert_eq!(l.run(&v4_frame(&[], src))?, XDP_PASS, "within the burst");
    for _ in 0..3 {
        assert_eq!(l.run(&v4_frame(&[], src))?, XDP_DROP);
    }
    assert_eq!(l.stat(STAT_DROP_RATE), 3);
    logger.flush();
    let records = capture.take();
    // One record for the source's first over-rate packet, none for the next two.
    let first: Vec<_> = records
        .iter()
        .filter(|(_, text)| text.contains("first drop"))
        .collect();
    assert_eq!(first.len(), 1, "{records:?}");
    assert_eq!(first[0].0, log::Level::Info);
    assert!(first[0].1.contains("192.0.2.77"), "{:?}", first[0].1);
    Ok(())
}

#[test]
fn prog_test_run_log_level_filters_and_off_writes_nothing() -> anyhow::Result<()> {
    require_root!();
    // Warn: the malformed frame (debug) and the first drop (info) are below the level.
    // Off: nothing at all. The verdicts and counters are the same either way.
    for level in [aya_log::Level::Warn as u8, 0] {
        let (mut l, mut logger, capture) = load_with_log(level)?;
        assert_eq!(l.run(&truncated_v4())?, XDP_PASS);
        l.set_config(one_per_second());
        let src = Ipv4Addr::new(192, 0, 2, 78);
        assert_eq!(l.run(&v4_frame(&[], src))?, XDP_PASS);
        assert_eq!(l.run(&v4_frame(&[], src))?, XDP_DROP);
        assert_eq!(l.stat(STAT_MALFORMED), 1);
        assert_eq!(l.stat(STAT_DROP_RATE), 1);
        logger.flush();
        let records = capture.take();
        assert!(records.is_empty(), "level {level}: {records:?}");
    }
    Ok(())
}
