//! `xdp_guard` run with `BPF_PROG_TEST_RUN` on crafted frames: IPv4, IPv6, one and two VLAN tags,
//! truncated and malformed headers, non-IP; each case checks the verdict and the counters. The
//! dense tier has its tests in `prog_test_run_dense.rs`.
mod prog;

use std::net::Ipv4Addr;

use aya::maps::RingBuf;
use guard_common::*;
use guard_tests::require_root;
use prog::*;

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
    Ok(())
}

/// The allowlist flag shares `expires_ns` with the deadline: a flagged ban still expires, and a
/// flagged ban of an address that is not allowlisted still drops. B is on no allowlist, so only
/// the deadline can let it through.
#[test]
fn a_flagged_ban_still_drops_and_expires() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.allow_v4(A, 32);
    l.set_config(XdpConfig {
        flags: CFG_HAVE_ALLOW_V4,
        ..Default::default()
    });
    // Live (far deadline), flagged, not allowlisted: dropped after an allowlist miss.
    l.ban_v4(B, BAN_CHECK_ALLOW | (u64::MAX >> 2));
    assert_eq!(l.run(&v4_frame(&[], B))?, XDP_DROP);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 1);
    // The same ban past its deadline: passed, and not by the allowlist.
    l.ban_v4(B, BAN_CHECK_ALLOW | 1);
    l.generation(1);
    assert_eq!(
        l.run(&v4_frame(&[], B))?,
        XDP_PASS,
        "a flagged ban past its deadline still drops"
    );
    assert_eq!(l.stat(STAT_ALLOWLISTED), 0, "B is not allowlisted");
    assert_eq!(l.stat(STAT_PASSED), 1);
    assert_eq!(l.stat(STAT_DROP_BAN_EXACT), 1);
    Ok(())
}

#[test]
fn expired_ban_is_ignored() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    l.ban_v4(A, 1); // expired at boot + 1 ns
    assert_eq!(l.run(&v4_frame(&[], A))?, XDP_PASS);
    // The latest deadline there is (the top bit is the allowlist flag, not part of it).
    l.ban_v4(A, !BAN_CHECK_ALLOW);
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
///
/// Each verdict is bracketed by clock reads on the same coarse clock the program uses, so a
/// preempted test thread cannot fail it: a drop must have *started* before the deadline plus a
/// tick of lag, and a pass must have *ended* at or after the deadline.
#[test]
fn a_ban_expires_on_time_under_a_steady_stream() -> anyhow::Result<()> {
    require_root!();
    let mut l = load()?;
    // Far enough ahead that even a descheduled test thread makes many runs before it.
    let deadline = coarse_now_ns() + 300_000_000;
    l.ban_v4(A, deadline);
    let frame = v4_frame(&[], A);
    // One tick is at most 10 ms (HZ >= 100); twice that leaves room for the coarse clock's own
    // update moment.
    let lag = 20_000_000;
    let mut dropped = 0u64;
    loop {
        let started = coarse_now_ns();
        let verdict = l.run(&frame)?;
        let ended = coarse_now_ns();
        if verdict == XDP_PASS {
            assert!(
                ended >= deadline,
                "passed {} ns before its deadline",
                deadline - ended
            );
            break;
        }
        assert_eq!(verdict, XDP_DROP);
        dropped += 1;
        assert!(
            started < deadline + lag,
            "a run started {} ns after the deadline still dropped",
            started - deadline
        );
    }
    assert!(dropped > 10, "only {dropped} drops before the deadline");
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
