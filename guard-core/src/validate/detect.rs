//! Detection: run the rules over the normalised views of one value and collect findings.
//!
//! A single Aho-Corasick automaton over every rule's trigger literals selects the few rules worth
//! running on a value; only those run their regex. Base64-looking tokens are decoded (at the three
//! alignments a keyword can take) and searched for Java deserialisation keywords, and a readable
//! decoding is inspected like any other value.

use aho_corasick::AhoCorasick;
use regex::bytes::Regex;

use super::extract::{Item, Origin};
use super::normalise::{self, Normalised};
use super::rules::{self, Rule, Scope};
use super::{Category, Error, Finding};
use crate::text::base64_decode;

/// Keywords of Java deserialisation gadgets and reflection, searched for in base64 form.
const BASE64_KEYWORDS: &[&str] = &[
    "runtime",
    "Runtime",
    "processbuilder",
    "ProcessBuilder",
    "processimpl",
    "ProcessImpl",
    "clonetransformer",
    "forclosure",
    "instantiatefactory",
    "instantiatetransformer",
    "invokertransformer",
    "InvokerTransformer",
    "prototypeclonefactory",
    "prototypeserializationfactory",
    "whileclosure",
    "chainedtransformer",
    "ChainedTransformer",
    "constanttransformer",
    "classloader",
    "ClassLoader",
    "xmldecoder",
    "XMLDecoder",
    "objectinputstream",
    "ObjectInputStream",
    "getRuntime",
    "java.lang.",
    "TemplatesImpl",
];

/// The base64 text of `keyword` at each of the three byte alignments it can take inside a longer
/// encoded string, keeping only the characters that depend on the keyword alone (the way CRS
/// matches base64-encoded Java gadgets), in the standard and URL-safe alphabets.
fn base64_forms(keyword: &[u8]) -> Vec<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut forms = Vec::new();
    for shift in 0..3usize {
        let mut bytes = vec![0u8; shift];
        bytes.extend_from_slice(keyword);
        let mut chars = Vec::new();
        for chunk in bytes.chunks(3) {
            let mut buf = [0u8; 3];
            buf[..chunk.len()].copy_from_slice(chunk);
            let n = (u32::from(buf[0]) << 16) | (u32::from(buf[1]) << 8) | u32::from(buf[2]);
            for i in 0..4 {
                chars.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]);
            }
        }
        let first = (shift * 8).div_ceil(6);
        let last = (bytes.len() * 8) / 6;
        if let Some(core) = chars.get(first..last) {
            let s = String::from_utf8_lossy(core).into_owned();
            let url_safe = s.replace('+', "-").replace('/', "_");
            if url_safe != s {
                forms.push(url_safe);
            }
            forms.push(s);
        }
    }
    forms
}

/// Upper bound on the number of rules (the per-value selection is a fixed bitset).
const MAX_RULES: usize = 512;

/// The compiled rule set, shared by every request.
#[derive(Debug)]
pub struct Detector {
    /// Every rule, in table order.
    rules: Vec<&'static Rule>,
    prefilter: AhoCorasick,
    /// For each prefilter pattern, the rules it selects.
    selects: Vec<Vec<usize>>,
    /// Rules without triggers: always run.
    always: Vec<usize>,
    regexes: Vec<Regex>,
    base64: AhoCorasick,
    /// SQL comments used to hide keywords, over the decoded, lower-cased text (the normalised
    /// views have the comments rewritten already).
    sql_comment: Regex,
}

/// A block comment glued to an SQL keyword (`DROP/*x*/t`, `*/FROM`), or `MySQL`'s executable
/// comment in front of SQL (`/*!50000SELECT`).
const SQL_COMMENT: &str = r"\b(?:select|union|insert|update|delete|drop|alter|create|truncate|from|where|and|or|order|group|having|exec|declare|sleep|benchmark|table|into|values|limit)/\*|\*/(?:select|union|insert|update|delete|drop|alter|create|truncate|from|where|and|or|order|group|having|exec|into|values|limit)\b|/\*!\d{0,5}\s*(?:select|union|and|or|from|where|insert|update|delete|drop|concat|sleep|benchmark|order|group|having|limit|\d)";

impl Detector {
    /// Compiles the rules that run at `paranoia`.
    pub fn new(paranoia: u8) -> Result<Self, Error> {
        let mut literals: Vec<&'static str> = Vec::new();
        let mut selects: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        let rules: Vec<&'static Rule> = rules::all()
            .filter(|r| r.level <= paranoia)
            .take(MAX_RULES)
            .collect();
        let mut regexes = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            // ASCII classes and word boundaries: the text is already folded, and Unicode word
            // boundaries would force the slow engine on any non-ASCII input.
            let re = regex::bytes::RegexBuilder::new(rule.pattern)
                .unicode(false)
                .size_limit(8 << 20)
                .build()
                .map_err(|source| Error::Rule {
                    rule: rule.id,
                    source,
                })?;
            regexes.push(re);
            if rule.triggers.is_empty() {
                always.push(i);
            }
            for t in rule.triggers {
                if let Some(at) = literals.iter().position(|l| l == t) {
                    selects[at].push(i);
                } else {
                    literals.push(t);
                    selects.push(vec![i]);
                }
            }
        }
        let prefilter =
            AhoCorasick::new(&literals).map_err(|source| Error::Prefilter { source })?;
        let mut forms: Vec<String> = BASE64_KEYWORDS
            .iter()
            .flat_map(|k| base64_forms(k.as_bytes()))
            .collect();
        // A serialised Java object starts with AC ED 00 05.
        forms.extend(base64_forms(&[0xac, 0xed, 0x00, 0x05]));
        let base64 = AhoCorasick::new(&forms).map_err(|source| Error::Prefilter { source })?;
        let sql_comment = regex::bytes::RegexBuilder::new(SQL_COMMENT)
            .unicode(false)
            .build()
            .map_err(|source| Error::Rule {
                rule: "sqli-comment-evasion",
                source,
            })?;
        Ok(Self {
            rules,
            prefilter,
            selects,
            always,
            regexes,
            base64,
            sql_comment,
        })
    }

    /// Inspects one extracted value; findings go to `acc`.
    pub fn scan(&self, item: &Item<'_>, max_passes: u32, acc: &mut Accumulator) {
        let norm = normalise::normalise(&item.value, item.origin == Origin::Param, max_passes);
        tricks(&norm, &item.field, acc);
        if !acc.has("sqli-comment-evasion")
            && (norm.decoded.contains("/*") || norm.decoded.contains("*/"))
        {
            let lower = norm.decoded.to_ascii_lowercase();
            if let Some(m) = self.sql_comment.find(lower.as_bytes()) {
                let fragment = String::from_utf8_lossy(m.as_bytes());
                acc.add(
                    Category::Sqli,
                    "sqli-comment-evasion",
                    4,
                    &item.field,
                    &fragment,
                );
            }
        }
        if opaque(&norm.decoded) {
            // A long token of the base64 alphabet (an image, a key, a signature) cannot hold a
            // textual payload: only its decoding is worth inspecting.
            self.scan_base64(&norm.decoded, item, max_passes, acc);
            return;
        }
        self.scan_text(&norm.text, item, true, acc);
        if let Some(j) = &norm.joined {
            self.scan_text(j, item, true, acc);
        }
        if let Some(s) = &norm.shell {
            self.scan_text(s, item, !norm.shell_keeps_comments, acc);
        }
        self.scan_base64(&norm.decoded, item, max_passes, acc);
    }

    /// Runs the selected rules over one view of a value; `sqli`: whether SQL rules apply to
    /// this view.
    fn scan_text(&self, text: &str, item: &Item<'_>, sqli: bool, acc: &mut Accumulator) {
        if text.is_empty() {
            return;
        }
        if sqli
            && !acc.has("sqli-token-density")
            && let Some(f) = super::sqltok::fragment(text)
        {
            acc.add(Category::Sqli, "sqli-token-density", 3, &item.field, f);
        }
        // One bit per rule, on the stack.
        let mut wanted = [0u64; MAX_RULES / 64];
        for &i in &self.always {
            wanted[i / 64] |= 1 << (i % 64);
        }
        for m in self.prefilter.find_overlapping_iter(text) {
            for &i in &self.selects[m.pattern().as_usize()] {
                wanted[i / 64] |= 1 << (i % 64);
            }
        }
        // Visit only the selected rules, in table order.
        for (word_index, &word) in wanted.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let i = word_index * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let rule = self.rules[i];
                if acc.has(rule.id)
                    || !applies(rule, item.origin)
                    || (!sqli && rule.category == Category::Sqli)
                {
                    continue;
                }
                if let Some(m) = self.regexes[i].find(text.as_bytes()) {
                    let fragment = String::from_utf8_lossy(m.as_bytes());
                    acc.add(rule.category, rule.id, rule.weight, &item.field, &fragment);
                }
            }
        }
    }

    fn scan_base64(&self, decoded: &str, item: &Item<'_>, max_passes: u32, acc: &mut Accumulator) {
        if !acc.has("code-java-base64")
            && let Some(m) = self.base64.find(decoded)
        {
            acc.add(
                Category::CodeInjection,
                "code-java-base64",
                5,
                &item.field,
                &decoded[m.start()..m.end()],
            );
        }
        for token in base64_tokens(decoded).take(8) {
            // Decode a prefix first: most tokens are binary and are dropped there.
            if !readable(&base64_decode(&token[..token.len().min(64)])) {
                continue;
            }
            let bytes = base64_decode(token);
            if readable(&bytes) {
                let text = String::from_utf8_lossy(&bytes);
                let norm = normalise::normalise(&text, false, max_passes);
                let sub = Item {
                    field: format!("{} (base64)", item.field),
                    value: std::borrow::Cow::Borrowed(""),
                    origin: item.origin,
                };
                self.scan_text(&norm.text, &sub, true, acc);
            }
        }
    }
}

/// A long value made only of the base64 alphabet, possibly behind a `data:…;base64,` prefix.
fn opaque(decoded: &str) -> bool {
    let body = decoded
        .strip_prefix("data:")
        .and_then(|d| d.split_once(";base64,"))
        .map_or(decoded, |(_, b)| b);
    body.len() >= 64
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Whether `rule` applies to a value from `origin`.
fn applies(rule: &Rule, origin: Origin) -> bool {
    let scope_ok = match rule.scope {
        Scope::Any => true,
        Scope::Path => origin == Origin::Path,
        Scope::Values => origin != Origin::Path,
        Scope::Headers => matches!(origin, Origin::Header | Origin::UrlHeader),
        Scope::NotMarkup => origin != Origin::Markup,
        Scope::Params => !matches!(origin, Origin::Path | Origin::Header | Origin::UrlHeader),
    };
    // Referer and Origin hold URLs by design: a URL there is not SSRF.
    scope_ok && !(origin == Origin::UrlHeader && rule.category == Category::RfiSsrf)
}

/// Evasion tricks are findings in themselves.
fn tricks(norm: &Normalised, field: &str, acc: &mut Accumulator) {
    if norm.tricks.null_byte {
        acc.add(Category::Protocol, "proto-null-byte", 4, field, "\\0");
    }
    if norm.tricks.overlong {
        acc.add(
            Category::Protocol,
            "proto-overlong-encoding",
            4,
            field,
            "overlong UTF-8 or %u escape",
        );
    }
    if norm.tricks.control {
        acc.add(
            Category::Protocol,
            "proto-control-char",
            3,
            field,
            "control character or invalid UTF-8",
        );
    }
    if norm.tricks.utf7 {
        acc.add(
            Category::Protocol,
            "proto-utf7",
            3,
            field,
            "UTF-7 encoded run",
        );
    }
    if norm.tricks.multi_encoded {
        acc.add(
            Category::Protocol,
            "proto-multiple-encoding",
            3,
            field,
            "percent-encoded more than once",
        );
    }
}

/// Runs of base64 alphabet at least 12 long that mix letters and digits or cases (so plain words
/// are not decoded).
fn base64_tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '=')))
        .map(|t| t.trim_end_matches('='))
        .filter(|t| {
            t.len() >= 12
                && t.len() <= 4096
                && t.bytes().any(|b| b.is_ascii_uppercase())
                && t.bytes()
                    .any(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Mostly printable ASCII text.
fn readable(bytes: &[u8]) -> bool {
    bytes.len() >= 6
        && bytes
            .iter()
            .filter(|b| b.is_ascii_graphic() || **b == b' ')
            .count()
            * 10
            >= bytes.len() * 9
}

/// The findings of one request, one per rule.
#[derive(Debug)]
pub struct Accumulator {
    findings: Vec<Finding>,
    max_fragment_chars: usize,
}

impl Accumulator {
    pub fn new(max_fragment_chars: usize) -> Self {
        Self {
            findings: Vec::new(),
            max_fragment_chars,
        }
    }

    /// Whether `rule` already matched in this request.
    pub fn has(&self, rule: &str) -> bool {
        self.findings.iter().any(|f| f.rule == rule)
    }

    /// Records a finding unless its rule already matched.
    pub fn add(
        &mut self,
        category: Category,
        rule: &'static str,
        weight: u32,
        field: &str,
        fragment: &str,
    ) {
        if self.has(rule) {
            return;
        }
        let truncated = fragment.chars().nth(self.max_fragment_chars).is_some();
        let mut fragment: String = fragment
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(self.max_fragment_chars)
            .collect();
        if truncated {
            fragment.push('…');
        }
        self.findings.push(Finding {
            category,
            rule,
            field: field.to_owned(),
            fragment,
            weight,
        });
    }

    /// Sum of the weights found so far.
    pub fn score(&self) -> u32 {
        self.findings.iter().map(|f| f.weight).sum()
    }

    pub fn into_findings(self) -> Vec<Finding> {
        self.findings
    }
}
