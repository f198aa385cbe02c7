//! `guard inspect`: run the validator on one request given on the command line, or on a file of
//! cases in the corpus schema (one JSON object a line: `id`, `method`, `uri`, `headers`, `body`).
//! No daemon needed. `--bench` measures throughput and the slowest request instead.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::validate::{Action, Request, Validator, ValidatorConfig, Verdict};

/// Arguments of `guard inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Protocol version of the request line.
    #[arg(long, default_value = "HTTP/1.1")]
    pub version: String,
    /// Paranoia level (1–4); the default is the configuration's default.
    #[arg(long)]
    pub paranoia: Option<u8>,
    /// Request target: path and optional query (`/search?q=x`).
    #[arg(long, default_value = "/")]
    pub uri: String,
    /// A header, `Name: value`; repeat for more.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body as text.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the request body from this file.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
    /// Inspect every request of this JSONL file (corpus schema); one JSON verdict per line.
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// With `--cases`: measure requests per second and the slowest request instead.
    #[arg(long, requires = "cases", hide = true)]
    pub bench: bool,
}

/// One case of a `--cases` file, owned.
struct Case {
    id: String,
    method: String,
    /// `None` when the case does not say.
    version: Option<String>,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Case {
    fn from_json(v: &serde_json::Value) -> Self {
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        let id = match v.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        let uri = s("uri");
        let (path, query) = uri.split_once('?').unwrap_or((&uri, ""));
        let headers = v
            .get("headers")
            .and_then(|h| h.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id,
            method: s("method"),
            version: v.get("version").and_then(|x| x.as_str()).map(str::to_owned),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            body: s("body").into_bytes(),
        }
    }

    fn inspect(&self, v: &Validator) -> Verdict {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let content_type = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| *v);
        v.inspect(&Request {
            method: &self.method,
            version: self.version.as_deref(),
            path: &self.path,
            query: &self.query,
            headers: &headers,
            body: &self.body,
            content_type,
        })
    }
}

#[derive(Serialize)]
struct CaseVerdict<'a> {
    id: &'a str,
    #[serde(flatten)]
    verdict: &'a Verdict,
}

/// Runs `guard inspect`.
pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let mut config = ValidatorConfig::default();
    if let Some(level) = args.paranoia {
        config.paranoia = level;
    }
    let validator = Validator::new(&config).context("building the validator")?;
    if let Some(path) = &args.cases {
        let cases = read_cases(path)?;
        return if args.bench {
            bench(&validator, &cases)
        } else {
            let mut out = BufWriter::new(std::io::stdout().lock());
            for case in &cases {
                let verdict = case.inspect(&validator);
                serde_json::to_writer(
                    &mut out,
                    &CaseVerdict {
                        id: &case.id,
                        verdict: &verdict,
                    },
                )?;
                out.write_all(b"\n")?;
            }
            out.flush().context("writing verdicts")
        };
    }
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => b.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => Vec::new(),
    };
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("header {h:?} is not `Name: value`"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let (path, query) = args.uri.split_once('?').unwrap_or((&args.uri, ""));
    let case = Case {
        id: String::new(),
        method: args.method.clone(),
        version: Some(args.version.clone()),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body,
    };
    let verdict = case.inspect(&validator);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        let action = match verdict.action {
            Action::Allow => "allow",
            Action::Triage => "triage",
            Action::Block => "block",
        };
        println!("{action} (score {})", verdict.score);
        for f in &verdict.findings {
            let cat = serde_json::to_value(f.category)?;
            println!(
                "  +{} {} {} in {}: {}",
                f.weight,
                cat.as_str().unwrap_or("?"),
                f.rule,
                f.field,
                f.fragment
            );
        }
    }
    Ok(())
}

fn read_cases(path: &PathBuf) -> anyhow::Result<Vec<Case>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut cases = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        cases.push(Case::from_json(&v));
    }
    Ok(cases)
}

/// CPU time consumed by the calling thread so far (Linux: `/proc/thread-self/schedstat`).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Throughput over all cases (repeated for at least two seconds, one thread), the slowest single
/// case (best of three timings each), and a 1 MB body. Prints one JSON object.
fn bench(validator: &Validator, cases: &[Case]) -> anyhow::Result<()> {
    anyhow::ensure!(!cases.is_empty(), "no cases to measure");
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut requests = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for case in cases {
            std::hint::black_box(case.inspect(validator));
        }
        requests += cases.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Per core: CPU time of this thread when the kernel reports it (the machine may be busy with
    // other work), wall time otherwise.
    let cpu = match (cpu_start, thread_cpu_time()) {
        (Some(a), Some(b)) if b > a => b.saturating_sub(a).as_secs_f64(),
        _ => elapsed,
    };
    let mut worst = (Duration::ZERO, "");
    for case in cases {
        let best = (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(case.inspect(validator));
                t.elapsed()
            })
            .min()
            .unwrap_or_default();
        if best > worst.0 {
            worst = (best, &case.id);
        }
    }
    let mut big = Vec::with_capacity(1 << 20);
    while big.len() < 1 << 20 {
        big.extend_from_slice(b"comment=x' or 1=1 -- <script>alert(1)</script> ../../etc/passwd &");
    }
    let big_case = Case {
        id: "1MB".to_owned(),
        method: "POST".to_owned(),
        version: Some("HTTP/1.1".to_owned()),
        path: "/post".to_owned(),
        query: String::new(),
        headers: vec![(
            "Content-Type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
        body: big,
    };
    let t = Instant::now();
    let big_verdict = big_case.inspect(validator);
    let big_time = t.elapsed();
    let stats = serde_json::json!({
        "requests": requests,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "req_per_sec_per_core": requests as f64 / cpu,
        "req_per_sec_wall": requests as f64 / elapsed,
        "worst_request_us": worst.0.as_secs_f64() * 1e6,
        "worst_request_id": worst.1,
        "one_mb_body_us": big_time.as_secs_f64() * 1e6,
        "one_mb_body_action": big_verdict.action,
        "max_body_bytes": validator.config().max_body_bytes,
    });
    println!("{stats}");
    Ok(())
}
