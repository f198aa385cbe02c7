//! A token-level SQL signal, in the spirit of libinjection: short values made mostly of SQL
//! keywords, operators and quotes (`AND 7639=(`, `IN (1, 2)`, `' OR x=`) read as SQL fragments
//! even when no single pattern matches. Prose has too many ordinary words to qualify, and code
//! snippets (braces) are left alone.

/// Keywords and function names that carry SQL structure.
const KEYWORDS: &[&str] = &[
    "select",
    "union",
    "from",
    "where",
    "and",
    "or",
    "xor",
    "not",
    "like",
    "rlike",
    "regexp",
    "in",
    "is",
    "null",
    "between",
    "having",
    "order",
    "group",
    "by",
    "limit",
    "offset",
    "as",
    "case",
    "when",
    "then",
    "else",
    "end",
    "insert",
    "into",
    "values",
    "update",
    "set",
    "delete",
    "drop",
    "table",
    "alter",
    "create",
    "exec",
    "execute",
    "declare",
    "cast",
    "convert",
    "char",
    "concat",
    "substring",
    "ascii",
    "sleep",
    "benchmark",
    "waitfor",
    "delay",
    "all",
    "distinct",
    "top",
    "procedure",
    "information_schema",
    "dual",
    "current_user",
    "database",
    "version",
    "true",
    "false",
    "collate",
    "escape",
    "div",
    "mod",
    "nvarchar",
    "varchar",
    "varchar2",
    "glob",
    "notnull",
    "isnull",
    "exists",
    "any",
    "some",
];

/// Returns the value when it reads as an SQL fragment.
pub fn fragment(text: &str) -> Option<&str> {
    if text.len() > 200 || text.contains(['{', '}']) {
        return None;
    }
    // Cheap first pass: without two operators there is nothing to weigh.
    let operators = text
        .bytes()
        .filter(|b| {
            matches!(
                b,
                b'=' | b'<'
                    | b'>'
                    | b'!'
                    | b'|'
                    | b'&'
                    | b'('
                    | b')'
                    | b';'
                    | b'@'
                    | b'#'
                    | b'~'
                    | b'^'
            )
        })
        .count();
    if operators < 2 {
        return None;
    }
    let (mut keywords, mut ops, mut quotes, mut other) = (0u32, 0u32, 0u32, 0u32);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            if KEYWORDS.contains(&&text[start..i]) {
                keywords += 1;
            } else {
                other += 1;
            }
            continue;
        }
        if b.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            other += 1;
            continue;
        }
        if matches!(b, b'\'' | b'"' | b'`') {
            quotes += 1;
        } else if matches!(
            b,
            b'=' | b'<'
                | b'>'
                | b'!'
                | b'|'
                | b'&'
                | b'('
                | b')'
                | b';'
                | b'@'
                | b'#'
                | b'~'
                | b'^'
        ) {
            ops += 1;
        } else if !b.is_ascii_whitespace() && b != b',' {
            other += 1;
        }
        i += 1;
    }
    // Quotes alone make a quotation, not SQL: at least two operators, and SQL must dominate.
    let sql = keywords + ops + quotes;
    let total = sql + other;
    (keywords >= 1 && ops >= 2 && sql * 10 >= total * 7).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::fragment;

    #[test]
    fn sql_fragments_and_prose() {
        assert!(fragment("and 7639=(").is_some());
        assert!(fragment(") or (").is_some());
        assert!(fragment("' and (x)=(").is_some());
        assert!(fragment("please update me when it's back in stock.").is_none());
        assert!(fragment("\"select\" html element").is_none());
        assert!(fragment("if (x > 0 && y < 10) { return true; }").is_none());
        assert!(fragment("1 + 1 = 2 and 2 * 3 = 6").is_none());
    }
}
