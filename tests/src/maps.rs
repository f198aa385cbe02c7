//! Reading guard's pinned XDP maps from a test: the bans and allowlist entries they hold, written
//! the way `guard ban ls` writes them, to compare with what sled holds.
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map, MapData};
use guard_common::{
    BanEntry, MAP_ALLOW_V4, MAP_ALLOW_V6, MAP_BANS_V4, MAP_BANS_V6, MAP_CIDR_V4, MAP_CIDR_V6,
};

/// The pinned map `name` in `pins`.
pub fn open(pins: &Path, name: &str) -> anyhow::Result<MapData> {
    MapData::from_pin(pins.join(name)).map_err(|e| anyhow::anyhow!("pinned map {name}: {e}"))
}

/// Every ban in the pinned maps (exact and CIDR, both families), as `addr` or `addr/prefix`
/// the way `ban ls` writes them.
pub fn bans(pins: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let v4: HashMap<_, u32, BanEntry> = HashMap::try_from(Map::HashMap(open(pins, MAP_BANS_V4)?))?;
    for k in v4.keys() {
        out.insert(IpAddr::from(k?.to_ne_bytes()).to_string());
    }
    let v6: HashMap<_, [u8; 16], BanEntry> =
        HashMap::try_from(Map::HashMap(open(pins, MAP_BANS_V6)?))?;
    for k in v6.keys() {
        out.insert(IpAddr::from(k?).to_string());
    }
    let c4: LpmTrie<_, u32, BanEntry> = LpmTrie::try_from(Map::LpmTrie(open(pins, MAP_CIDR_V4)?))?;
    for k in c4.keys() {
        out.insert(prefix4(k?));
    }
    let c6: LpmTrie<_, [u8; 16], BanEntry> =
        LpmTrie::try_from(Map::LpmTrie(open(pins, MAP_CIDR_V6)?))?;
    for k in c6.keys() {
        out.insert(prefix6(k?));
    }
    Ok(out)
}

/// Every allowlist entry in the pinned maps.
pub fn allows(pins: &Path) -> anyhow::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let a4: LpmTrie<_, u32, u32> = LpmTrie::try_from(Map::LpmTrie(open(pins, MAP_ALLOW_V4)?))?;
    for k in a4.keys() {
        out.insert(prefix4(k?));
    }
    let a6: LpmTrie<_, [u8; 16], u32> = LpmTrie::try_from(Map::LpmTrie(open(pins, MAP_ALLOW_V6)?))?;
    for k in a6.keys() {
        out.insert(prefix6(k?));
    }
    Ok(out)
}

fn prefix4(k: Key<u32>) -> String {
    let addr = IpAddr::from(k.data().to_ne_bytes());
    if k.prefix_len() == 32 {
        addr.to_string()
    } else {
        format!("{addr}/{}", k.prefix_len())
    }
}

fn prefix6(k: Key<[u8; 16]>) -> String {
    let addr = IpAddr::from(k.data());
    if k.prefix_len() == 128 {
        addr.to_string()
    } else {
        format!("{addr}/{}", k.prefix_len())
    }
}
