//! Unit tests of normalisation, step by step.

use super::normalise;

#[test]
fn normalisation_steps() {
    assert_eq!(normalise("%2527", false, 4).text, "'");
    assert!(normalise("%2527", false, 4).tricks.multi_encoded);
    assert_eq!(normalise("%c0%af", false, 4).text, "/");
    assert_eq!(normalise("&lt;ScRiPt&gt;", false, 4).text, "<script>");
    assert_eq!(normalise("&#x3c;&#60", false, 4).text, "<<");
    assert_eq!(normalise("ＳＥＬＥＣＴ", false, 4).text, "select");
    assert_eq!(normalise("a \t\x0b b", false, 4).text, "a b");
    assert_eq!(
        normalise("SEL/**/ECT", false, 4).joined.as_deref(),
        Some("select")
    );
    assert_eq!(normalise("UNION/**/SELECT", false, 4).text, "union select");
    assert_eq!(normalise("a+b", true, 4).text, "a b");
    assert_eq!(normalise("a+b", false, 4).text, "a+b");
    assert_eq!(normalise("\\x3cscript\\u003e", false, 4).text, "<script>");
    assert_eq!(normalise("+ADw-script+AD4-", false, 4).text, "<script>");
    assert!(normalise("a%00b", false, 4).tricks.null_byte);
    assert_eq!(
        normalise("c'a't$IFS/e\"t\"c", false, 4).shell.as_deref(),
        Some("cat /etc")
    );
    // Bounded: ten levels of encoding are not all undone with four passes.
    let mut deep = "'".to_owned();
    for _ in 0..10 {
        deep = deep.replace('%', "%25").replace('\'', "%27");
    }
    assert_ne!(normalise(&deep, false, 4).text, "'");
}
