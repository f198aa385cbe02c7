//! A TOML error as one sentence for a person: the line, the key with its table
//! (`bans.default_ttl`) and what is wrong, without the parser's source excerpt.

/// `e` (from parsing `text`) as `line N, key `table.key`: message`.
pub(super) fn describe(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_owned();
    };
    let at = span.start.min(text.len());
    if !text.is_char_boundary(at) {
        return message.to_owned();
    }
    let line_no = text[..at].matches('\n').count() + 1;
    match key_at(text, at) {
        Some(key) => format!("line {line_no}, key `{key}`: {message}"),
        None => format!("line {line_no}: {message}"),
    }
}

/// The dotted key of the `key = value` line holding byte `at`, with the table it is in.
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    if key.is_empty() || key.starts_with('[') || key.starts_with('#') {
        return None;
    }
    let table = text[..start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[').then(|| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
    });
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::key_at;

    #[test]
    fn keys_are_named_with_their_table() {
        let text = "# c\n[bans]\ndefault_ttl = -600\n\n[[quotas.plans]]\nname = 1\ntop = 2\n";
        let at = |needle: &str| text.find(needle).unwrap();
        assert_eq!(
            key_at(text, at("-600")).as_deref(),
            Some("bans.default_ttl")
        );
        assert_eq!(
            key_at(text, at("name")).as_deref(),
            Some("quotas.plans.name")
        );
        assert_eq!(key_at("top = 2\n", 6).as_deref(), Some("top"));
        assert_eq!(key_at(text, at("[bans]")), None);
    }
}
