//! `guard ai …`: `guard ai probe` checks an AI set-up with one small triage request and prints
//! the parsed answer, or `unsure` with the reason. Exit status 0 only for a parsed answer.
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context as _;

use super::{AiClient, AiConfig, ApiKey, ScoreOutcome, TriageRequest, load_api_key};

#[derive(Debug, clap::Subcommand)]
pub enum AiCommand {
    /// Send one small triage request with the configured (or given) settings and print the
    /// parsed answer, or `unsure` with the reason.
    Probe(ProbeArgs),
}

#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// TOML configuration file whose `[ai]` table to use (defaults otherwise).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base URL of the OpenAI-compatible API, e.g. `http://127.0.0.1:8080/v1`.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Model name.
    #[arg(long)]
    pub model: Option<String>,
}

/// Runs one `guard ai` command.
pub fn run(command: AiCommand) -> anyhow::Result<()> {
    match command {
        AiCommand::Probe(args) => {
            let (config, note) = probe_config(&args)?;
            if let Some(note) = note {
                eprintln!("{note}");
            }
            let key = load_api_key(&config, |name| std::env::var(name).ok())
                .context("loading the api key")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let (line, parsed) = runtime.block_on(probe(config, key))?;
            println!("{line}");
            anyhow::ensure!(parsed, "the ai set-up gave no parsed answer");
            Ok(())
        }
    }
}

/// The settings a probe uses: the file's `[ai]` table or defaults, then the flags; always
/// enabled, no cache, no retries beyond the configured ones. With a file whose AI is off, also
/// a note saying so: the probe checks the settings, but the daemon will not use them.
pub fn probe_config(args: &ProbeArgs) -> anyhow::Result<(AiConfig, Option<String>)> {
    let mut note = None;
    let mut config = match &args.config {
        Some(path) => {
            let config = super::load_config_file(path)?;
            if !config.enabled {
                note = Some(format!(
                    "note: the AI is off in {} (ai.enabled = false): this probe checks its \
                     settings, but the daemon does not ask the AI until ai.enabled = true",
                    path.display()
                ));
            }
            config
        }
        None => AiConfig::default(),
    };
    if let Some(url) = &args.base_url {
        config.base_url.clone_from(url);
    }
    if let Some(model) = &args.model {
        config.model.clone_from(model);
    }
    config.enabled = true;
    config.cache_ttl_secs = 0;
    config.validate()?;
    Ok((config, note))
}

/// Sends the probe request; returns the line to print and whether the answer parsed.
pub async fn probe(config: AiConfig, key: Option<ApiKey>) -> anyhow::Result<(String, bool)> {
    let endpoint = config.endpoint();
    let model = config.model.clone();
    let client = AiClient::new(config, key)?;
    let request = TriageRequest {
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        method: "POST".to_owned(),
        path: "/api/orders".to_owned(),
        query: String::new(),
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        user_agent: "guard-probe".to_owned(),
        body: br#"{"item": "book", "quantity": -3}"#.to_vec(),
        matched_rules: vec!["probe".to_owned()],
    };
    Ok(match client.score_request(&request).await {
        ScoreOutcome::Score(score) => (
            format!("score {} (model {model} at {endpoint})", score.value()),
            true,
        ),
        ScoreOutcome::Unsure(unsure) => (format!("unsure: {}", unsure.0), false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `guard ai probe --config FILE` with the AI off in FILE says so, and still probes.
    #[test]
    fn a_probe_of_an_ai_that_is_off_says_so() {
        let dir = std::env::temp_dir().join(format!("guard-ai-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let args = |text: &str| {
            let path = dir.join("guard.toml");
            std::fs::write(&path, text).unwrap();
            ProbeArgs {
                config: Some(path),
                base_url: None,
                model: None,
            }
        };
        let (config, note) = probe_config(&args("[ai]\nenabled = false\n")).unwrap();
        assert!(config.enabled, "the probe itself runs");
        assert_eq!(
            note.as_deref(),
            Some(
                format!(
                    "note: the AI is off in {} (ai.enabled = false): this probe checks its \
                     settings, but the daemon does not ask the AI until ai.enabled = true",
                    dir.join("guard.toml").display()
                )
                .as_str()
            )
        );
        // No [ai] table: off by default, said the same way.
        assert!(probe_config(&args("")).unwrap().1.is_some());
        let (_, note) = probe_config(&args("[ai]\nenabled = true\n")).unwrap();
        assert_eq!(note, None);
        // Without a file: only the flags, nothing to note.
        let (_, note) = probe_config(&ProbeArgs {
            config: None,
            base_url: None,
            model: None,
        })
        .unwrap();
        assert_eq!(note, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
