//! Part 2's rows and goals for one NAPI mode, from its slices.
use crate::live::{DROP1, DROPM, DROPS, G1, GM1, GMM, GSS, NFT1, NFTM, Napi, Samples};
use crate::report::{Report, median};

/// The range of the middle half of `v` (divided by `scale`): how much slices or cycles scattered.
fn middle_half(mut v: Vec<f64>, scale: f64, digits: usize) -> String {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return String::new();
    }
    let q = (v.len() - 1) / 4;
    format!(
        "{:.digits$}-{:.digits$}",
        v[q] / scale,
        v[v.len() - 1 - q] / scale
    )
}

#[expect(clippy::too_many_lines, reason = "the table reads best in one place")]
pub fn report_mode(report: &mut Report, napi: Napi, s: &Samples) {
    let part = match napi {
        Napi::Softirq => "live-softirq",
        Napi::Threaded => "live-threaded",
    };
    let tag = format!("[{}]", napi.label());
    let rates = |case: &str| s.series(case, |x| Some(x.pps));
    let mpps = |case: &str| median(&mut rates(case)) / 1e6;
    // Per-cycle ratios: a case and its baseline were measured within one cycle.
    let ratios = |case: &str, base: &str| -> Vec<f64> {
        rates(case)
            .iter()
            .zip(rates(base))
            .map(|(c, b)| c / b)
            .collect()
    };
    let ratio = |case: &str, base: &str| median(&mut ratios(case, base));
    for (case, what) in [
        (DROP1, "drop-everything XDP program"),
        (NFT1, "netdev ingress, set of 1"),
        (DROPM, "generator cycling 1M sources"),
        (NFTM, "netdev ingress, set of 1M"),
        (DROPS, "generator cycling 1M scattered sources"),
    ] {
        let note = format!(
            "{what}; middle half of slices {} Mpps",
            middle_half(rates(case), 1e6, 2)
        );
        report.row(part, case, mpps(case), "Mpps", &note);
    }
    let rows = [
        (G1, G1, DROP1),
        (GM1, GM1, DROP1),
        (GMM, GMM, DROPM),
        (GSS, GSS, DROPS),
        ("guard, 1 ban, 1 banned source (vs nft)", G1, NFT1),
        ("guard, 1M bans, 1M banned sources (vs nft)", GMM, NFTM),
        ("ceiling: xdp_drop_all vs nft, 1 source", DROP1, NFT1),
        ("ceiling: xdp_drop_all vs nft, 1M sources", DROPM, NFTM),
    ];
    for (label, case, base) in rows {
        let note = format!(
            "middle half of per-cycle ratios {}",
            middle_half(ratios(case, base), 1.0, 2)
        );
        report.row_ratio(
            part,
            label,
            mpps(case),
            "Mpps",
            base,
            ratio(case, base),
            &note,
        );
    }
    if napi == Napi::Threaded {
        // The receiver thread's CPU time per frame: its cost whatever the generator does
        // (while it is busy below 100 %, the generator is the slower side).
        let cpu = |case: &str| s.series(case, |x| x.receiver_ns);
        for (case, base) in [
            (DROP1, None),
            (G1, Some(DROP1)),
            (NFT1, Some(DROP1)),
            (DROPM, None),
            (GMM, Some(DROPM)),
            (NFTM, Some(DROPM)),
        ] {
            let mut busy = s.series(case, |x| Some(x.receiver_ns? * x.pps / 1e7));
            let label = format!("receiver CPU/frame: {case}");
            let note = format!(
                "receiver thread busy {:.0} % of the slice",
                median(&mut busy)
            );
            let ns = median(&mut cpu(case));
            match base {
                // Ratio: frames per CPU-second against the baseline's, per cycle.
                Some(base) => {
                    let mut r: Vec<f64> = cpu(base)
                        .iter()
                        .zip(cpu(case))
                        .map(|(b, c)| b / c)
                        .collect();
                    let base_label = format!("receiver CPU/frame: {base}");
                    report.row_ratio(part, &label, ns, "ns", &base_label, median(&mut r), &note);
                }
                None => report.row(part, &label, ns, "ns", &note),
            }
        }
    }
    // Each frame costs the generator, the veth and the receiver; a ratio of rates therefore
    // mixes the generator's share in. The time a receiver adds to each frame over the
    // drop-everything program isolates it (median of per-cycle differences).
    let extra_ns = |case: &str, base: &str| {
        let mut d: Vec<f64> = rates(case)
            .iter()
            .zip(rates(base))
            .map(|(c, b)| 1e9 / c - 1e9 / b)
            .collect();
        median(&mut d)
    };
    for (guard_case, nft_case, base, what) in [
        (G1, NFT1, DROP1, "1 banned source"),
        (GMM, NFTM, DROPM, "1,000,000 banned sources"),
    ] {
        let (g, n) = (extra_ns(guard_case, base), extra_ns(nft_case, base));
        let guard_label = format!("ns/frame over drop-all: guard, {what}");
        report.row(part, &guard_label, g, "ns", "");
        report.row_ratio(
            part,
            &format!("ns/frame over drop-all: nftables, {what}"),
            n,
            "ns",
            &guard_label,
            n / g,
            "",
        );
    }
    let ceiling1 = ratio(DROP1, NFT1);
    let ceiling_m = ratio(DROPM, NFTM);
    let goals = [
        (
            "ban drop >= 85 % of drop-all, 1 source (1 ban)".to_owned(),
            G1,
            DROP1,
            0.85,
        ),
        (
            "ban drop >= 85 % of drop-all, 1 source (1M bans)".to_owned(),
            GM1,
            DROP1,
            0.85,
        ),
        (
            "(stricter) ban drop >= 85 % of drop-all, 1M distinct sources".to_owned(),
            GMM,
            DROPM,
            0.85,
        ),
        (
            format!(">= 5x nftables, 1 banned source (drop-all: {ceiling1:.2}x)"),
            G1,
            NFT1,
            5.0,
        ),
        (
            format!(">= 3x nftables, 1M distinct banned sources (drop-all: {ceiling_m:.2}x)"),
            GMM,
            NFTM,
            3.0,
        ),
        (
            "no slowdown 1 -> 1M bans (1 source; 1M/1 rate, within 10 %)".to_owned(),
            GM1,
            G1,
            0.9,
        ),
    ];
    for (what, case, base, target) in goals {
        report.goal_ratio(&format!("{tag} {what}"), ratio(case, base), target);
    }
}
