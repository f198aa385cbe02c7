//! `xdp_guard` run with `BPF_PROG_TEST_RUN` on crafted frames: IPv4, IPv6, one and two VLAN tags,
//! truncated and malformed headers, non-IP; each case checks the verdict and the counters.
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use guard_common::*;
use guard_tests::require_root;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The loaded program with a private bpffs pin directory, removed on drop.
struct Loaded {
    ebpf: Ebpf,
    pins: PathBuf,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn load() -> anyhow::Result<Loaded> {
    let object = PathBuf::from(env!("GUARD_EBPF_DIR")).join("guard-ebpf");
    let bytes = std::fs::read(&object)
        .map_err(|e| anyhow::anyhow!("{}: {e} (run `cargo xtask build`)", object.display()))?;
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/guard-ptr-{}",
        guard_tests::unique("p")
    ));
    std::fs::create_dir_all(&pins)?;
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(&pins)
        .load(&bytes)?;
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP_GUARD)
        .expect("program")
        .try_into()?;
    prog.load()?;
    Ok(Loaded { ebpf, pins })
}

impl Loaded {
    fn run(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let prog: &Xdp = self
            .ebpf
            .program(PROG_XDP_GUARD)
            .expect("program")
            .try_into()?;
        let r = prog.test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1,
            ..Default::default()
        })?;
        Ok(r.return_value)
    }

    /// A global counter as the daemon reports it: exact-ban drops include those the hot-ban
    /// cache has not flushed yet.
    fn stat(&self, idx: u32) -> u64 {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_STATS).unwrap()).unwrap();
        let mut n = m.get(&idx, 0).unwrap().iter().sum();
        if idx == STAT_DROP_BAN_EXACT {
            let hot: PerCpuArray<&MapData, HotBan> =
                PerCpuArray::try_from(self.ebpf.map(MAP_HOT).unwrap()).unwrap();
            n += hot
                .get(&0, 0)
                .unwrap()
                .iter()
                .filter(|h| h.valid != 0)
                .map(|h| h.pending_packets)
                .sum::<u64>();
        }
        n
    }

    fn set_config(&mut self, cfg: XdpConfig) {
        let mut m: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        m.set(0, cfg, 0).unwrap();
    }

    fn ban_v4(&mut self, a: Ipv4Addr, expires_ns: u64) {
        let mut m: HashMap<&mut MapData, u32, BanEntry> =
            HashMap::try_from(self.ebpf.map_mut(MAP_BANS_V4).unwrap()).unwrap();
        m.insert(
            u32::from_ne_bytes(a.octets()),
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    }

    /// The ban entry with the drops still pending in the per-CPU hot-ban cache added in.
    fn ban_entry_v4(&self, a: Ipv4Addr) -> BanEntry {
        let m: HashMap<&MapData, u32, BanEntry> =
            HashMap::try_from(self.ebpf.map(MAP_BANS_V4).unwrap()).unwrap();
        let mut e = m.get(&u32::from_ne_bytes(a.octets()), 0).unwrap();
        let hot: PerCpuArray<&MapData, HotBan> =
            PerCpuArray::try_from(self.ebpf.map(MAP_HOT).unwrap()).unwrap();
        for h in hot.get(&0, 0).unwrap().iter() {
            if h.valid != 0 && h.addr == u32::from_ne_bytes(a.octets()) {
                e.packets += h.pending_packets;
                e.bytes += h.pending_bytes;
            }
        }
        e
    }

    fn generation(&mut self, generation: u64) {
        let mut m: Array<&mut MapData, XdpConfig> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        let mut c = m.get(&0, 0).unwrap();
        c.generation = generation;
        m.set(0, c, 0).unwrap();
    }

    fn ban_v6(&mut self, a: Ipv6Addr) {
        let mut m: HashMap<&mut MapData, [u8; 16], BanEntry> =
            HashMap::try_from(self.ebpf.map_mut(MAP_BANS_V6).unwrap()).unwrap();
        m.insert(a.octets(), BanEntry::default(), 0).unwrap();
    }

    fn cidr_v4(&mut self, a: Ipv4Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, u32, BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V4).unwrap()).unwrap();
        m.insert(
            &Key::new(len, u32::from_ne_bytes(a.octets())),
            BanEntry::default(),
            0,
        )
        .unwrap();
    }

    fn cidr_v4_flagged(&mut self, a: Ipv4Addr, len: u32, expires_ns: u64) {
        let mut m: LpmTrie<&mut MapData, u32, BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V4).unwrap()).unwrap();
        m.insert(
            &Key::new(len, u32::from_ne_bytes(a.octets())),
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    }

    fn cidr_v6(&mut self, a: Ipv6Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, [u8; 16], BanEntry> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_CIDR_V6).unwrap()).unwrap();
        m.insert(&Key::new(len, a.octets()), BanEntry::default(), 0)
            .unwrap();
    }

    fn allow_v4(&mut self, a: Ipv4Addr, len: u32) {
        let mut m: LpmTrie<&mut MapData, u32, u32> =
            LpmTrie::try_from(self.ebpf.map_mut(MAP_ALLOW_V4).unwrap()).unwrap();
        m.insert(&Key::new(len, u32::from_ne_bytes(a.octets())), 1, 0)
            .unwrap();
    }
}

/// Ethernet header with the given VLAN tags (TPIDs) and final ethertype.
fn eth(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A 64-byte-ish IPv4/UDP frame from `src`.
fn v4_frame(tags: &[u16], src: Ipv4Addr) -> Vec<u8> {
    let mut f = eth(tags, 0x0800);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&28u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
    f.resize(f.len().max(64), 0);
    f
}

fn v6_frame(tags: &[u16], src: Ipv6Addr) -> Vec<u8> {
    let mut f = eth(tags, 0x86DD);
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&8u16.to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00]);
    f
}

const A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const Q: u16 = 0x8100;
const AD: u16 = 0x88A8;

#[test]
fn passes_everything_with_empty_maps() -> anyhow::Result<()> {
    require_root!();
    let l = load()?;
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    assert_eq!(l.run(&v6_frame(&[Q], "2001:db8::1".parse()?))?, XDP_PASS);
    assert_eq!(l.stat(STAT_PASSED), 2);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 0);
    Ok(())
}

#[test]
fn exact_ipv4_ban_drops_with_and_without_vlan_tags_and_counts() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 0);
    for tags in [&[][..], &[Q], &[AD, Q], &[Q, Q]] {
        assert_eq!(l.run(&v4_frame(tags, A))?, XDP_DROP, "tags {tags:x?}");
    }
    assert_eq!(l.run(&v4_frame(&[], B))?, XDP_PASS, "unbanned neighbour");
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 4);
    assert_eq!(l.stat(STAT_PASSED), 1);
    let e = l.ban_entry_v4(A);
    assert_eq!(e.packets, 4);
    assert_eq!(e.bytes, 64 * 4, "frames are padded to 64 bytes");
    assert!(e.last_hit_ns > 0);
    Ok(())
}

#[test]
fn hot_ban_cache_counts_every_drop_and_follows_the_generation() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 0);
    // 150 drops from one source: the first goes through the hash, the rest through the
    // per-CPU cache, flushed into the entry every HOT_FLUSH packets.
    for _ in 0..150 {
        assert_eq!(l.run(&v4_frame(&[], A))?, XDP_DROP);
    }
    assert_eq!(l.ban_entry_v4(A).packets, 150);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 150);
    let m: HashMap<&MapData, u32, BanEntry> = HashMap::try_from(l.ebpf.map(MAP_BANS_V4).unwrap())?;
    let flushed = m.get(&u32::from_ne_bytes(A.octets()), 0)?.packets;
    assert!((HOT_FLUSH..150).contains(&flushed), "flushed {flushed}");
    // The daemon removes the ban and bumps the generation: the cached verdict is gone.
    {
        let mut m: HashMap<&mut MapData, u32, BanEntry> =
            HashMap::try_from(l.ebpf.map_mut(MAP_BANS_V4).unwrap())?;
        m.remove(&u32::from_ne_bytes(A.octets()))?;
    }
    l.generation(1);
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    // Another source in between pushes the first one's pending count into its entry.
    l.ban_v4(A, 0);
    l.ban_v4(B, 0);
    for _ in 0..3 {
        assert_eq!(l.run(&v4_frame(&[], A))?, XDP_DROP);
    }
    assert_eq!(l.run(&v4_frame(&[], B))?, XDP_DROP);
    let m: HashMap<&MapData, u32, BanEntry> = HashMap::try_from(l.ebpf.map(MAP_BANS_V4).unwrap())?;
    assert_eq!(m.get(&u32::from_ne_bytes(A.octets()), 0)?.packets, 3);
    Ok(())
}

#[test]
fn three_vlan_tags_are_not_parsed_and_pass() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 0);
    // A third tag leaves an 802.1Q ethertype where IP should be: treated as non-IP, passed.
    assert_eq!(l.run(&v4_frame(&[AD, Q, Q], A))?, XDP_PASS);
    assert_eq!(l.stat(STAT_NON_IP), 1);
    Ok(())
}

#[test]
fn ipv6_exact_and_cidr_bans() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v6("2001:db8::66".parse()?);
    l.cidr_v6("2001:db8:bad::".parse()?, 48);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_CIDR_V6,
        ..Default::default()
    });
    assert_eq!(l.run(&v6_frame(&[], "2001:db8::66".parse()?))?, XDP_DROP);
    assert_eq!(
        l.run(&v6_frame(&[AD, Q], "2001:db8::66".parse()?))?,
        XDP_DROP
    );
    assert_eq!(
        l.run(&v6_frame(&[], "2001:db8:bad:1::9".parse()?))?,
        XDP_DROP
    );
    assert_eq!(l.run(&v6_frame(&[], "2001:db8:bae::9".parse()?))?, XDP_PASS);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 2);
    assert_eq!(l.stat(STAT_DROP_BAN_CIDR), 1);
    Ok(())
}

#[test]
fn cidr_lookup_only_when_flagged() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.cidr_v4(Ipv4Addr::new(198, 51, 100, 0), 24);
    // Flag off: the daemon has said the trie is empty, so the program skips it.
    assert_eq!(
        l.run(&v4_frame(&[], Ipv4Addr::new(198, 51, 100, 7)))?,
        XDP_PASS
    );
    l.set_config(XdpConfig {
        flags: CFG_HAVE_CIDR_V4,
        ..Default::default()
    });
    assert_eq!(
        l.run(&v4_frame(&[], Ipv4Addr::new(198, 51, 100, 7)))?,
        XDP_DROP
    );
    assert_eq!(
        l.run(&v4_frame(&[Q], Ipv4Addr::new(198, 51, 101, 7)))?,
        XDP_PASS
    );
    assert_eq!(l.stat(STAT_DROP_BAN_CIDR), 1);
    Ok(())
}

#[test]
fn allowlist_beats_exact_and_cidr_bans() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    // The daemon flags bans that overlap the allowlist; only those make the program look.
    l.ban_v4(A, BAN_CHECK_ALLOW);
    l.cidr_v4_flagged(Ipv4Addr::new(192, 0, 2, 0), 24, BAN_CHECK_ALLOW);
    l.allow_v4(A, 32);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_CIDR_V4 | CFG_HAVE_ALLOW_V4,
        ..Default::default()
    });
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    assert_eq!(
        l.run(&v4_frame(&[], B))?,
        XDP_DROP,
        "B is only in the banned /24"
    );
    assert_eq!(l.stat(STAT_ALLOWLISTED), 1);
    assert_eq!(
        l.ban_entry_v4(A).packets,
        0,
        "an allowlisted packet is not charged to the ban"
    );
    Ok(())
}

#[test]
fn allowlist_is_only_consulted_for_flagged_bans() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.allow_v4(A, 32);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_ALLOW_V4,
        ..Default::default()
    });
    l.ban_v4(A, 0);
    assert_eq!(
        l.run(&v4_frame(&[], A))?,
        XDP_DROP,
        "unflagged: no allowlist lookup on the drop path"
    );
    // Changing a ban means bumping the generation (as the daemon does), or a CPU's cached
    // verdict would outlive it.
    l.ban_v4(A, BAN_CHECK_ALLOW);
    l.generation(1);
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    // A flagged ban with a deadline still expires.
    l.ban_v4(A, BAN_CHECK_ALLOW | 1);
    l.allow_v4(B, 32);
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    Ok(())
}

#[test]
fn expired_ban_is_ignored() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 1); // expired at boot + 1 ns
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    l.ban_v4(A, u64::MAX);
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_DROP);
    Ok(())
}

/// `CLOCK_MONOTONIC_COARSE`, the clock ban deadlines are written in.
fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The program reads the clock through a per-CPU cache refreshed at each tick: under a steady
/// stream that keeps the cache warm, a ban still stops dropping within a tick of its deadline.
#[test]
fn a_ban_expires_on_time_under_a_steady_stream() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    let deadline = coarse_now_ns() + 150_000_000;
    l.ban_v4(A, deadline);
    let frame = v4_frame(&[], A);
    let mut dropped = 0u64;
    let passed_at = loop {
        let verdict = l.run(&frame)?;
        let now = coarse_now_ns();
        if verdict == XDP_PASS {
            assert!(
                now >= deadline,
                "passed {} ns before its deadline",
                deadline - now
            );
            break now;
        }
        assert_eq!(verdict, XDP_DROP);
        dropped += 1;
        assert!(
            now < deadline + 1_000_000_000,
            "still dropped a second after the deadline"
        );
    };
    assert!(dropped > 10, "only {dropped} drops before the deadline");
    // One tick is at most 10 ms (HZ >= 100); the user-side clock read adds at most another.
    let late = passed_at - deadline;
    assert!(
        late <= 25_000_000,
        "still dropped {late} ns after the deadline"
    );
    Ok(())
}

#[test]
fn truncated_and_malformed_frames_pass_and_are_counted() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 0);
    let full = v4_frame(&[], A);
    // Ethernet header only, claiming IPv4.
    assert_eq!(l.run(&full[..14])?, XDP_PASS);
    // IPv4 header cut before the source address.
    assert_eq!(l.run(&full[..14 + 12])?, XDP_PASS);
    // One VLAN tag, cut inside the tag.
    assert_eq!(l.run(&v4_frame(&[Q], A)[..16])?, XDP_PASS);
    // IPv4 ethertype but version 6 in the header.
    let mut bad = full.clone();
    bad[14] = 0x65;
    assert_eq!(l.run(&bad)?, XDP_PASS);
    // IHL below 5.
    let mut bad = full.clone();
    bad[14] = 0x44;
    assert_eq!(l.run(&bad)?, XDP_PASS);
    // IPv6 cut in the source address.
    assert_eq!(
        l.run(&v6_frame(&[], "2001:db8::1".parse()?)[..14 + 20])?,
        XDP_PASS
    );
    assert_eq!(l.stat(STAT_MALFORMED), 6);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 0);
    // ARP: well-formed, not IP.
    assert_eq!(
        l.run(&{
            let mut f = eth(&[], 0x0806);
            f.resize(60, 0);
            f
        })?,
        XDP_PASS
    );
    assert_eq!(l.stat(STAT_NON_IP), 1);
    Ok(())
}

#[test]
fn token_bucket_limits_a_source_and_emits_one_event_per_window() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    // 1 packet/s, burst 3, events at most once a minute.
    let cost = 1_000_000_000;
    l.set_config(XdpConfig {
        flags: 0,
        cost_ns: cost,
        cap_ns: 3 * cost,
        event_window_ns: 60_000_000_000,
        generation: 0,
    });
    let verdicts: Vec<u32> = (0..6)
        .map(|_| l.run(&v4_frame(&[], A)))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        verdicts,
        [XDP_PASS, XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP, XDP_DROP]
    );
    assert_eq!(
        l.run(&v4_frame(&[], B))?,
        XDP_PASS,
        "another source has its own bucket"
    );
    assert_eq!(l.stat(STAT_DROP_RATE), 3);
    let mut ring: RingBuf<&mut MapData> = RingBuf::try_from(l.ebpf.map_mut(MAP_EVENTS).unwrap())?;
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        // SAFETY: the program writes whole RateEvents.
        events.push(unsafe { item.as_ptr().cast::<RateEvent>().read_unaligned() });
    }
    assert_eq!(events.len(), 1, "one event per source per window");
    assert_eq!(events[0].family, FAMILY_V4);
    assert_eq!(&events[0].addr[..4], &A.octets());
    assert_eq!(events[0].dropped, 1);
    Ok(())
}

#[test]
fn rate_limit_spares_allowlisted_sources() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    let cost = 1_000_000_000;
    l.allow_v4(A, 32);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_ALLOW_V4,
        cost_ns: cost,
        cap_ns: cost,
        event_window_ns: 1,
        generation: 0,
    });
    for _ in 0..5 {
        assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    }
    assert_eq!(l.stat(STAT_DROP_RATE), 0);
    assert_eq!(l.stat(STAT_ALLOWLISTED), 4);
    Ok(())
}

/// The dense tier as the daemon keeps it, on the program's own maps.
struct Dense {
    tier: guard_common::dense::DenseTier,
    exact: HashMap<MapData, u32, BanEntry>,
}

impl Dense {
    fn open(l: &mut Loaded) -> anyhow::Result<Self> {
        let mut take = |name| {
            l.ebpf
                .take_map(name)
                .ok_or_else(|| anyhow::anyhow!("no map {name}"))
        };
        let tier = guard_common::dense::DenseTier::open(
            take(MAP_DENSE_INDEX)?,
            take(MAP_DENSE)?,
            take(MAP_DENSE_HITS)?,
            take(MAP_DENSE_V16)?,
        )?;
        let exact = HashMap::try_from(take(MAP_BANS_V4)?)?;
        Ok(Self { tier, exact })
    }

    fn ban(&mut self, a: Ipv4Addr, expires_ns: u64) -> anyhow::Result<()> {
        let key = u32::from_ne_bytes(a.octets());
        let old = self.exact.get(&key, 0).ok().map(|e| e.expires_ns);
        self.exact.insert(
            key,
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )?;
        self.tier.added(&mut self.exact, key, expires_ns, old)?;
        Ok(())
    }

    fn unban(&mut self, a: Ipv4Addr) -> anyhow::Result<()> {
        let key = u32::from_ne_bytes(a.octets());
        let old = self.exact.get(&key, 0).ok().map(|e| e.expires_ns);
        self.tier.removing(&mut self.exact, key, old)?;
        self.exact.remove(&key)?;
        Ok(())
    }

    fn hits(&self, a: Ipv4Addr) -> u64 {
        self.tier
            .hits(u32::from_ne_bytes(a.octets()))
            .map_or(0, |h| h.packets)
    }

    fn exact_packets(&self, a: Ipv4Addr) -> u64 {
        self.exact
            .get(&u32::from_ne_bytes(a.octets()), 0)
            .map_or(0, |e| e.packets)
    }
}

fn in_block(host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 7, host)
}

#[test]
fn dense_tier_drops_its_bans_counts_them_and_hands_back_to_the_exact_map() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    let mut d = Dense::open(&mut l)?;
    // Fifteen bans: not yet a dense block.
    for h in 0..15 {
        d.ban(in_block(h), 0)?;
    }
    assert_eq!(d.tier.blocks(), 0);
    d.ban(in_block(15), 0)?;
    assert_eq!(d.tier.blocks(), 1, "the 16th ban puts the /24 in the tier");
    l.set_config(XdpConfig {
        flags: CFG_HAVE_DENSE_V4,
        ..Default::default()
    });
    // Alternate sources so that the per-CPU hot-ban cache never answers.
    for _ in 0..5 {
        assert_eq!(l.run(&v4_frame(&[], in_block(3)))?, XDP_DROP);
        assert_eq!(l.run(&v4_frame(&[Q], in_block(9)))?, XDP_DROP);
    }
    assert_eq!(d.hits(in_block(3)), 5, "drops counted in the tier");
    assert_eq!(d.hits(in_block(9)), 5);
    assert_eq!(
        d.exact_packets(in_block(3)),
        0,
        "the exact map was not consulted"
    );
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 10);
    // Same block, no ban; another block: both pass.
    assert_eq!(l.run(&v4_frame(&[], in_block(200)))?, XDP_PASS);
    assert_eq!(
        l.run(&v4_frame(&[], Ipv4Addr::new(198, 18, 8, 3)))?,
        XDP_PASS
    );
    // A removed ban passes at once.
    d.unban(in_block(9))?;
    assert_eq!(l.run(&v4_frame(&[], in_block(9)))?, XDP_PASS);
    // A ban that has already expired makes the block defer to the exact map, which still
    // drops the live bans and passes the expired one.
    d.ban(in_block(50), 1)?;
    assert_eq!(l.run(&v4_frame(&[], in_block(50)))?, XDP_PASS);
    assert_eq!(l.run(&v4_frame(&[], in_block(3)))?, XDP_DROP);
    assert_eq!(d.hits(in_block(3)), 5, "deferred: not counted in the tier");
    assert_eq!(
        d.exact_packets(in_block(3)),
        1,
        "deferred: counted by the exact map"
    );
    d.unban(in_block(50))?;
    // A ban overlapping the allowlist stays out of the bits: the exact path checks the
    // allowlist for it.
    l.allow_v4(in_block(60), 32);
    let mut cfg = XdpConfig {
        flags: CFG_HAVE_DENSE_V4 | CFG_HAVE_ALLOW_V4,
        ..Default::default()
    };
    l.set_config(cfg);
    d.ban(in_block(60), BAN_CHECK_ALLOW)?;
    assert_eq!(l.run(&v4_frame(&[], in_block(60)))?, XDP_PASS);
    assert_eq!(l.stat(STAT_ALLOWLISTED), 1);
    // Down to seven eligible bans: the block leaves the tier and its counts move into the
    // exact entries, which keep dropping.
    for h in 7..=15 {
        if h != 9 {
            d.unban(in_block(h))?;
        }
    }
    assert_eq!(
        d.tier.blocks(),
        0,
        "below the keep threshold the block leaves"
    );
    cfg.flags &= !CFG_HAVE_DENSE_V4;
    l.set_config(cfg);
    assert_eq!(
        d.exact_packets(in_block(3)),
        6,
        "tier counts folded into the exact entry"
    );
    assert_eq!(l.run(&v4_frame(&[], in_block(3)))?, XDP_DROP);
    Ok(())
}

#[test]
fn dense_tier_rebuild_matches_the_bans_and_reopen_adopts_the_blocks() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    let mut d = Dense::open(&mut l)?;
    // Two blocks from a list, as the daemon rebuilds at start: one full, one just short.
    let mut bans = Vec::new();
    for h in 0..=255u8 {
        bans.push((u32::from_ne_bytes(in_block(h).octets()), 0));
    }
    for h in 0..15u8 {
        bans.push((u32::from_ne_bytes([198, 18, 9, h]), 0));
    }
    for &(key, expires_ns) in &bans {
        d.exact.insert(
            key,
            BanEntry {
                expires_ns,
                ..Default::default()
            },
            0,
        )?;
    }
    d.tier.rebuild(&mut d.exact, bans.iter().copied())?;
    assert_eq!(d.tier.blocks(), 1);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_DENSE_V4,
        ..Default::default()
    });
    for h in [0u8, 128, 255] {
        assert_eq!(l.run(&v4_frame(&[], in_block(h)))?, XDP_DROP);
        assert_eq!(d.hits(in_block(h)), 1);
    }
    // A second tier on the same (pinned) maps — a restarted daemon — adopts the block with
    // its counters.
    let Dense { tier, exact } = d;
    drop(tier);
    drop(exact);
    let pins = l.pins.clone();
    let index = aya::maps::Map::HashMap(MapData::from_pin(pins.join(MAP_DENSE_INDEX))?);
    let blocks = aya::maps::Map::Array(MapData::from_pin(pins.join(MAP_DENSE))?);
    let hits = aya::maps::Map::Array(MapData::from_pin(pins.join(MAP_DENSE_HITS))?);
    let v16 = aya::maps::Map::Array(MapData::from_pin(pins.join(MAP_DENSE_V16))?);
    let again = guard_common::dense::DenseTier::open(index, blocks, hits, v16)?;
    assert_eq!(again.blocks(), 1);
    assert_eq!(
        again
            .hits(u32::from_ne_bytes(in_block(128).octets()))
            .map(|h| h.packets),
        Some(1)
    );
    assert_eq!(l.run(&v4_frame(&[], in_block(77)))?, XDP_DROP);
    Ok(())
}

#[test]
fn one_source_flood_from_a_dense_block_moves_to_the_hot_cache_and_counts_every_drop()
-> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    let mut d = Dense::open(&mut l)?;
    for h in 0..20 {
        d.ban(in_block(h), 0)?;
    }
    l.set_config(XdpConfig {
        flags: CFG_HAVE_DENSE_V4,
        ..Default::default()
    });
    for _ in 0..100 {
        assert_eq!(l.run(&v4_frame(&[], in_block(4)))?, XDP_DROP);
    }
    let hot: PerCpuArray<&MapData, HotBan> =
        PerCpuArray::try_from(l.ebpf.map(MAP_HOT).expect("HOT"))?;
    let key = u32::from_ne_bytes(in_block(4).octets());
    let cached = hot
        .get(&0, 0)?
        .iter()
        .find(|h| h.valid != 0 && h.addr == key)
        .copied();
    let cached = cached.ok_or_else(|| anyhow::anyhow!("the flood never reached the hot cache"))?;
    assert_eq!(
        d.hits(in_block(4)),
        2,
        "two drops through the tier, then the cache"
    );
    assert_eq!(
        d.hits(in_block(4)) + d.exact_packets(in_block(4)) + cached.pending_packets,
        100,
        "every drop counted once"
    );
    Ok(())
}
