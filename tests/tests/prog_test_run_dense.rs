//! The dense IPv4 tier under `BPF_PROG_TEST_RUN`: drops and counts through the tier, hand-back
//! to the exact map on expiry and on leaving, rebuild and adoption, and the hot-cache promotion.
mod prog;

use std::net::Ipv4Addr;

use guard_common::*;
use guard_tests::require_root;
use prog::*;

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
