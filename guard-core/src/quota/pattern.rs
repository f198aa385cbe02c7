//! Path patterns of quota rules: exact (`/api/v1/login`), prefix (`/api/v1/*`: `/api/v1` and
//! everything below it) and template (`/api/v1/users/{id}`: each `{name}` is exactly one
//! non-empty segment). A template may also end in `/*`. Paths are compared as sent, without the
//! query string, case-sensitively.

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("a path pattern starts with `/`")]
    NoLeadingSlash,
    #[error("`*` is only allowed as the whole last segment, as in `/api/v1/*`")]
    MisplacedStar,
    #[error("a variable is a whole segment with a name, as in `/users/{{id}}`")]
    BadVariable,
    #[error("a path pattern has no `?`, `#`, spaces or control characters")]
    BadCharacter,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Var,
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    /// The literal prefix without its trailing `/`.
    Prefix(String),
    Template {
        segments: Vec<Segment>,
        /// Ends in `/*`: any further segments match.
        open: bool,
    },
}

impl PathPattern {
    /// Parses a pattern.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if !text.starts_with('/') {
            return Err(PatternError::NoLeadingSlash);
        }
        if text
            .chars()
            .any(|c| c == '?' || c == '#' || c.is_whitespace() || c.is_control())
        {
            return Err(PatternError::BadCharacter);
        }
        let (body, open) = match text.strip_suffix("/*") {
            Some(b) => (b, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(PatternError::MisplacedStar);
        }
        let mut segments = Vec::new();
        let mut vars = false;
        for seg in body.split('/').skip(1) {
            if seg.contains(['{', '}']) {
                let name = seg
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .ok_or(PatternError::BadVariable)?;
                if name.is_empty() || name.contains(['{', '}']) {
                    return Err(PatternError::BadVariable);
                }
                vars = true;
                segments.push(Segment::Var);
            } else {
                segments.push(Segment::Literal(seg.to_owned()));
            }
        }
        let kind = match (vars, open) {
            (false, false) => Kind::Exact,
            (false, true) => Kind::Prefix(body.to_owned()),
            (true, _) => Kind::Template { segments, open },
        };
        Ok(Self {
            text: text.to_owned(),
            kind,
        })
    }

    /// The pattern as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `path` (no query string) matches.
    #[must_use]
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Kind::Template { segments, open } => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segments {
                    let Some(part) = parts.next() else {
                        return false;
                    };
                    match seg {
                        Segment::Literal(l) if l != part => return false,
                        Segment::Var if part.is_empty() => return false,
                        _ => {}
                    }
                }
                *open || parts.next().is_none()
            }
        }
    }
}
