//! Endpoints grouped by normalised path: a segment that is a number, a UUID or a hash (hex of
//! 16 characters or more) stands for an id, so `/users/123` and `/users/456` are one endpoint,
//! `/users/{id}`.

/// What an id segment becomes.
pub const ID: &str = "{id}";

/// Whether `seg` is an id: all digits, a UUID (8-4-4-4-12 hex), or 16+ hex characters with a
/// digit among them (so that a long word of the letters a–f stays a word).
#[must_use]
pub fn is_id(seg: &str) -> bool {
    let b = seg.as_bytes();
    // Most segments are words: one look at the first byte settles them.
    if !b.first().is_some_and(u8::is_ascii_hexdigit) {
        return false;
    }
    if b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    if b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
    {
        return true;
    }
    b.len() >= 16 && b.iter().all(u8::is_ascii_hexdigit) && b.iter().any(u8::is_ascii_digit)
}

/// The endpoint `path` belongs to (the query is not part of a path here).
#[must_use]
pub fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    normalise_into(path, &mut out);
    out
}

/// [`normalise`] into `out` (cleared first), so that a caller reading millions of paths
/// allocates once.
pub fn normalise_into(path: &str, out: &mut String) {
    out.clear();
    // Segments found byte by byte: paths are short, and a search call per segment cost more
    // than the walk.
    let b = path.as_bytes();
    let mut start = 0;
    for i in 0..=b.len() {
        if i == b.len() || b[i] == b'/' {
            // Both ends are at a '/' or an end of the string: char boundaries.
            let seg = &path[start..i];
            out.push_str(if is_id(seg) { ID } else { seg });
            if i < b.len() {
                out.push('/');
            }
            start = i + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_uuids_and_hashes_are_ids() {
        assert_eq!(normalise("/users/123"), "/users/{id}");
        assert_eq!(normalise("/users/456/posts/7"), "/users/{id}/posts/{id}");
        assert_eq!(
            normalise("/orders/3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
            "/orders/{id}"
        );
        assert_eq!(
            normalise("/blobs/d41d8cd98f00b204e9800998ecf8427e"),
            "/blobs/{id}"
        );
        assert_eq!(
            normalise("/git/da39a3ee5e6b4b0d3255bfef95601890afd80709/tree"),
            "/git/{id}/tree"
        );
        // Words stay words, short hex stays, the root and trailing slashes are kept.
        assert_eq!(normalise("/api/v2/users"), "/api/v2/users");
        assert_eq!(normalise("/beef/cafe"), "/beef/cafe");
        assert_eq!(
            normalise("/deadbeefdeadbeefdeadbeef"),
            "/deadbeefdeadbeefdeadbeef"
        );
        assert_eq!(normalise("/"), "/");
        assert_eq!(normalise("/users/12/"), "/users/{id}/");
    }
}
