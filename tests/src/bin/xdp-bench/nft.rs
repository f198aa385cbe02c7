//! The nftables baseline of part 2.
use std::net::Ipv4Addr;

use anyhow::{Context, ensure};
use guard_tests::Netns;

use crate::live::NFT_TABLE;
use crate::micro::MILLION;
use crate::veth::rx_packets;

/// The nftables baseline: a netdev ingress chain on the receiver veth with a set of banned
/// sources and a named drop counter. Lives in the receiver namespace; deleted on drop.
pub struct Nft<'a> {
    ns: &'a Netns,
    dev: &'a str,
    file: std::path::PathBuf,
    /// Receiver rx count when the table was made.
    rx_start: u64,
}

impl<'a> Nft<'a> {
    pub fn new(ns: &'a Netns, dev: &'a str) -> anyhow::Result<Self> {
        let file = std::env::temp_dir().join(guard_tests::unique("guard-bench-nft-"));
        let nft = Self {
            ns,
            dev,
            file,
            rx_start: rx_packets(ns, dev)?,
        };
        nft.load(&format!(
            "table netdev {NFT_TABLE} {{\n  counter dropped {{ }}\n  set banned {{ type ipv4_addr; size {}; }}\n  \
             chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    \
             ip saddr @banned counter name \"dropped\" drop\n  }}\n}}\n",
            2 * MILLION
        ))?;
        Ok(nft)
    }

    fn load(&self, text: &str) -> anyhow::Result<()> {
        std::fs::write(&self.file, text)?;
        let out = self
            .ns
            .command("nft")
            .arg("-f")
            .arg(&self.file)
            .output()
            .context("running nft")?;
        ensure!(
            out.status.success(),
            "nft -f failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Adds `count` consecutive addresses from `first` to the set.
    pub fn ban_range(&self, first: Ipv4Addr, count: u32) -> anyhow::Result<()> {
        use std::fmt::Write;
        let mut text = String::with_capacity(count as usize * 18);
        let first = u32::from(first);
        for chunk in (0..count).collect::<Vec<_>>().chunks(50_000) {
            let _ = write!(text, "add element netdev {NFT_TABLE} banned {{ ");
            for i in chunk {
                let _ = write!(text, "{}, ", Ipv4Addr::from(first + i));
            }
            text.push_str("}\n");
        }
        self.load(&text)
    }

    /// Frames that reached the receiver since the table was made. While no XDP program is
    /// attached every one of them meets the chain, and every generated source is in the set, so
    /// this is the drop rate; it is read instead of the rule's counter because `nft list`
    /// fetches the whole set (about 20 s with 1M elements). [`Nft::verify`] checks afterwards
    /// that the counter agrees.
    pub fn received(&self) -> anyhow::Result<u64> {
        Ok(rx_packets(self.ns, self.dev)? - self.rx_start)
    }

    /// Empties the set (so that listing is fast) and checks that the rule dropped at least
    /// (nearly) all of the `counted` frames that [`Nft::received`] attributed to it.
    pub fn verify(&self, counted: u64) -> anyhow::Result<()> {
        self.load(&format!("flush set netdev {NFT_TABLE} banned\n"))?;
        let dropped = self.dropped()?;
        ensure!(
            dropped as f64 >= 0.99 * counted as f64,
            "nftables dropped {dropped} frames of the {counted} counted as its drops: the set does not match the \
             generated sources"
        );
        Ok(())
    }

    fn dropped(&self) -> anyhow::Result<u64> {
        let out = self
            .ns
            .command("nft")
            .args(["-j", "list", "counter", "netdev", NFT_TABLE, "dropped"])
            .output()
            .context("running nft")?;
        ensure!(
            out.status.success(),
            "nft list counter: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|e| e["counter"]["packets"].as_u64()))
            .context("no packet count in nft output")
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        let _ = self
            .ns
            .command("nft")
            .args(["delete", "table", "netdev", NFT_TABLE])
            .output();
        let _ = std::fs::remove_file(&self.file);
    }
}
