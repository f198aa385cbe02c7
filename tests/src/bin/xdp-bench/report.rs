//! The results table and the goal verdicts, as text or JSON.
use serde_json::json;

/// The median of `v` (sorted in place); NaN for no values.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub struct Row {
    pub part: &'static str,
    pub case: String,
    pub value: f64,
    pub unit: &'static str,
    /// Name of the baseline row this one is compared with, and the ratio value / baseline.
    pub vs: Option<(String, f64)>,
    pub note: String,
}

/// "measured = case / baseline >= target".
pub struct Goal {
    pub what: String,
    pub measured: f64,
    pub target: f64,
    pub met: bool,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub goals: Vec<Goal>,
    pub setup: Vec<String>,
}

impl Report {
    pub fn row(
        &mut self,
        part: &'static str,
        case: &str,
        value: f64,
        unit: &'static str,
        note: &str,
    ) {
        self.rows.push(Row {
            part,
            case: case.to_owned(),
            value,
            unit,
            vs: None,
            note: note.to_owned(),
        });
    }

    pub fn value(&self, case: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.case == case).map(|r| r.value)
    }

    /// Adds a row compared with the earlier row `baseline`.
    pub fn row_vs(
        &mut self,
        part: &'static str,
        case: &str,
        value: f64,
        unit: &'static str,
        baseline: &str,
        note: &str,
    ) {
        let vs = self
            .value(baseline)
            .map(|b| (baseline.to_owned(), value / b));
        self.rows.push(Row {
            part,
            case: case.to_owned(),
            value,
            unit,
            vs,
            note: note.to_owned(),
        });
    }

    /// Adds a row with a ratio computed by the caller.
    #[expect(clippy::too_many_arguments, reason = "one call per table row")]
    pub fn row_ratio(
        &mut self,
        part: &'static str,
        case: &str,
        value: f64,
        unit: &'static str,
        baseline: &str,
        ratio: f64,
        note: &str,
    ) {
        let vs = Some((baseline.to_owned(), ratio));
        self.rows.push(Row {
            part,
            case: case.to_owned(),
            value,
            unit,
            vs,
            note: note.to_owned(),
        });
    }

    /// A goal "`measured` ≥ `target`" with a ratio computed by the caller.
    pub fn goal_ratio(&mut self, what: &str, measured: f64, target: f64) {
        self.goals.push(Goal {
            what: what.to_owned(),
            measured,
            target,
            met: measured >= target,
        });
    }

    /// A goal "`case` / `baseline` ≥ `target`".
    pub fn goal(&mut self, what: &str, case: &str, baseline: &str, target: f64) {
        if let (Some(c), Some(b)) = (self.value(case), self.value(baseline)) {
            let measured = c / b;
            self.goals.push(Goal {
                what: what.to_owned(),
                measured,
                target,
                met: measured >= target,
            });
        }
    }

    pub fn print(&self) {
        for line in &self.setup {
            println!("# {line}");
        }
        let mut part = "";
        for r in &self.rows {
            if r.part != part {
                part = r.part;
                println!();
                match part {
                    "micro" => println!(
                        "Part 1: BPF_PROG_TEST_RUN, 64-byte IPv4/UDP frame (median of the runs)"
                    ),
                    "live-threaded" => println!(
                        "Part 2, threaded: live frames on a veth pair, the receiver's NAPI in a thread on CPU 1 and \
                         the generator on CPU 0 (median of slices; ratio = median of per-cycle ratios)"
                    ),
                    _ => println!(
                        "Part 2, softirq: live frames on a veth pair, the receiver's NAPI in softirq on the \
                         generator's CPU (median of slices; ratio = median of per-cycle ratios)"
                    ),
                }
                println!(
                    "  {:<58} {:>10} {:<7} {:>9}  vs / note",
                    "case", "value", "unit", "ratio"
                );
            }
            let (ratio, vs) = match &r.vs {
                Some((b, x)) => (format!("{x:.2}x"), format!("vs {b}")),
                None => (String::new(), String::new()),
            };
            let tail = [vs.as_str(), r.note.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("; ");
            println!(
                "  {:<58} {:>10.3} {:<7} {:>9}  {}",
                r.case, r.value, r.unit, ratio, tail
            );
        }
        if !self.goals.is_empty() {
            println!();
            println!("Goals");
            for g in &self.goals {
                let verdict = if g.met { "met" } else { "NOT MET" };
                println!(
                    "  {:<66} {:>7.2}x (target >= {:.2}x)  {verdict}",
                    g.what, g.measured, g.target
                );
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "setup": self.setup,
            "rows": self.rows.iter().map(|r| json!({
                "part": r.part,
                "case": r.case,
                "value": r.value,
                "unit": r.unit,
                "baseline": r.vs.as_ref().map(|v| &v.0),
                "ratio": r.vs.as_ref().map(|v| v.1),
                "note": r.note,
            })).collect::<Vec<_>>(),
            "goals": self.goals.iter().map(|g| json!({
                "goal": g.what, "measured": g.measured, "target": g.target, "met": g.met,
            })).collect::<Vec<_>>(),
        })
    }
}
