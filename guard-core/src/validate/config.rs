//! The `[validator]` section of guard's configuration: thresholds, bounds, switches, exceptions.

use serde::{Deserialize, Serialize};

use super::Category;

/// Configuration of the request validator (`[validator]` in guard's TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidatorConfig {
    /// How suspicious the validator is, 1 to 4 (like the paranoia levels of the OWASP CRS):
    /// each level adds checks that catch more evasive attacks and also match more unusual but
    /// legitimate traffic.
    pub paranoia: u8,
    /// Score at or above which a request is blocked.
    pub block_threshold: u32,
    /// Score at or above which (and below `block_threshold`) a request goes to AI triage.
    pub triage_threshold: u32,
    /// Bytes of the body inspected; the rest is ignored (bounds the work per request).
    pub max_body_bytes: usize,
    /// Bytes of any one value (parameter, header, JSON string) inspected.
    pub max_value_bytes: usize,
    /// Values inspected per request at most (parameters, JSON strings, headers…).
    pub max_values: usize,
    /// Rounds of URL/HTML decoding before the value is taken as it is.
    pub max_decode_passes: u32,
    /// Characters of a matched fragment kept in a finding.
    pub max_fragment_chars: usize,
    /// Methods that are not a protocol finding; anything else scores.
    pub allowed_methods: Vec<String>,
    /// Request body media types that are not a protocol finding (parameters ignored; any
    /// `+json`/`+xml` structured suffix is accepted too).
    pub allowed_content_types: Vec<String>,
    /// Detection categories, each on or off.
    pub categories: CategorySwitches,
    /// Per-path exceptions, first matching prefix wins.
    pub exceptions: Vec<PathException>,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            // Level 1: the checks that ordinary web traffic (browsers, API clients) does not trip.
            paranoia: 1,
            // One strong signature (weight 5) or several weaker ones block.
            block_threshold: 5,
            // One medium finding (weight 3–4) asks the AI, as the seed did for 1–2 pattern hits.
            triage_threshold: 3,
            // 64 KiB of body: attacks sit near the start; a 1 MB upload costs no more than this.
            max_body_bytes: 64 * 1024,
            // 8 KiB per value.
            max_value_bytes: 8 * 1024,
            // 256 values per request (a JSON body with more strings is inspected partly).
            max_values: 256,
            // Four decoding rounds undo triple encoding and then some.
            max_decode_passes: 4,
            // 80 characters of matched text in each finding.
            max_fragment_chars: 80,
            // The methods of ordinary web applications and REST APIs.
            allowed_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            // Forms, multipart, JSON and XML: what web applications and APIs accept.
            allowed_content_types: [
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "multipart/related",
                "application/json",
                "application/xml",
                "text/xml",
                "application/soap+xml",
            ]
            .map(String::from)
            .to_vec(),
            // Every category on.
            categories: CategorySwitches::default(),
            // No exceptions.
            exceptions: Vec::new(),
        }
    }
}

/// One switch per detection category (`[validator.categories]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one switch per category is the point"
)]
pub struct CategorySwitches {
    /// SQL injection.
    pub sqli: bool,
    /// Cross-site scripting.
    pub xss: bool,
    /// Path traversal and local file inclusion.
    pub path_traversal: bool,
    /// Remote file inclusion and server-side request forgery.
    pub rfi_ssrf: bool,
    /// Shell command injection.
    pub command_injection: bool,
    /// Code injection: PHP, templates, JNDI/log4shell, Java, Node, Python.
    pub code_injection: bool,
    /// Prompt injection aimed at LLM back ends.
    pub prompt_injection: bool,
    /// Protocol and encoding tricks (null bytes, CRLF, odd methods, smuggling headers).
    pub protocol: bool,
    /// Known attack tools announcing themselves.
    pub scanner: bool,
}

impl Default for CategorySwitches {
    fn default() -> Self {
        // Every category is on by default.
        Self {
            sqli: true,
            xss: true,
            path_traversal: true,
            rfi_ssrf: true,
            command_injection: true,
            code_injection: true,
            prompt_injection: true,
            protocol: true,
            scanner: true,
        }
    }
}

impl CategorySwitches {
    /// Whether `category` is switched on.
    #[must_use]
    pub fn enabled(&self, category: Category) -> bool {
        match category {
            Category::Sqli => self.sqli,
            Category::Xss => self.xss,
            Category::PathTraversal => self.path_traversal,
            Category::RfiSsrf => self.rfi_ssrf,
            Category::CommandInjection => self.command_injection,
            Category::CodeInjection => self.code_injection,
            Category::PromptInjection => self.prompt_injection,
            Category::Protocol => self.protocol,
            Category::Scanner => self.scanner,
        }
    }
}

/// Relaxed inspection under a path prefix (e.g. no body inspection under `/upload`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathException {
    /// Path prefix this exception applies to (`/upload` covers `/upload/x`).
    pub path_prefix: String,
    /// Do not inspect the body.
    #[serde(default)]
    pub skip_body: bool,
    /// Do not inspect the query string.
    #[serde(default)]
    pub skip_query: bool,
    /// Categories not scored under this prefix.
    #[serde(default)]
    pub disabled_categories: Vec<Category>,
}
