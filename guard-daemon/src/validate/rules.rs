//! The detection rules: one table, each rule a category, a weight, the literals that must occur
//! for it to be worth running (the prefilter), and a `regex` pattern (linear time, no
//! backtracking) over the normalised, lower-cased text.
//!
//! Weights: 5 = a signature strong enough to block alone; 3–4 = suspicious enough for AI triage;
//! 1–2 = weak evidence that only counts together with more. Rules aim at the intent of the seed's
//! 25 patterns without their false positives (a trailing `;`, jQuery `$(…)`, "select" in prose).

use super::Category::{
    self, CodeInjection, CommandInjection, PathTraversal, PromptInjection, Protocol, RfiSsrf,
    Scanner, Sqli, Xss,
};

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every value.
    Any,
    /// Only the URL path.
    Path,
    /// Every value but the path (parameters, headers, body).
    Values,
    /// Only headers (User-Agent and the like).
    Headers,
}

/// One detection rule.
#[derive(Debug)]
pub struct Rule {
    /// Stable id, shown in findings.
    pub id: &'static str,
    pub category: Category,
    pub weight: u32,
    pub scope: Scope,
    /// Lower-case literals; the rule runs only if one occurs. Empty: always runs.
    pub triggers: &'static [&'static str],
    /// The pattern, over lower-cased normalised text.
    pub pattern: &'static str,
}

const fn r(
    id: &'static str,
    category: Category,
    weight: u32,
    triggers: &'static [&'static str],
    pattern: &'static str,
) -> Rule {
    Rule {
        id,
        category,
        weight,
        scope: Scope::Any,
        triggers,
        pattern,
    }
}

const fn scoped(rule: Rule, scope: Scope) -> Rule {
    Rule { scope, ..rule }
}

/// Shell commands attackers run first (reconnaissance, download, reverse shells).
macro_rules! cmds {
    () => {
        "(?:(?:/usr)?(?:/local)?/s?bin/)?(?:cat|tac|nl|ls|dir|id|whoami|uname|wget|curl|fetch|nc|ncat|netcat|socat|telnet|ssh|scp|ftp|tftp|bash|sh|zsh|ksh|csh|tcsh|dash|ash|busybox|python[23]?|perl|ruby|php|node|lua|irb|nmap|ping|nslookup|dig|traceroute|chmod|chown|rm|mv|cp|echo|printf|kill|killall|pkill|ps|sleep|base64|xxd|od|awk|gawk|sed|grep|egrep|find|head|tail|more|less|env|printenv|export|eval|exec|sudo|su|crontab|ifconfig|ipconfig|netstat|ss|systeminfo|powershell|pwsh|cmd|certutil|bitsadmin|wmic|tasklist|taskkill|mkfifo|xterm|tar|gzip|gunzip|zip|unzip|dd|xargs|tee|touch|mknod|ln|vi|vim|nano|pwd|hostname|useradd|passwd|shutdown|reboot|halt|systemctl|service|apt|apt-get|yum|dnf|pip|npm|gcc|cc|make|chattr|setfacl|openssl|rev|expr|time|nohup|timeout|strings|file|stat|diff|cut|sort|uniq|wc|top|w|who|last|lsof|pgrep|mount|umount|fdisk|iptables|alias|source|history|jobs|bg|fg|at|batch|net|reg|type|start|call|set|del|copy|move|ren|attrib|icacls|schtasks|sc|route|arp|getent|groups|locate|whereis|which|man|ldd|strace|gdb|docker|kubectl|mysql|psql|sqlite3|redis-cli|mongo|cd|comm|base32|visudo|tr|ll|gcc\\d*|ansible[\\w-]*|chef-[\\w-]*|knife|puppet|salt)"
    };
}

/// The rule table. Order only matters for which finding of a value is listed first.
pub static RULES: &[Rule] = &[
    // ---- SQL injection -------------------------------------------------------------------------
    r("sqli-union-select", Sqli, 5, &["union"], r"\bunion\b[\s(]*(?:all\b|distinct\b)?[\s(]*select\b"),
    r("sqli-tautology", Sqli, 5, &["or", "and", "xor", "||", "&&", "not"],
        r#"(?:^|[\s'"`)(])(?:or|and|xor|not|\|\||&&)[\s(]*(?:\d+|'[^']{0,40}'|"[^"]{0,40}"|true|false|null)\s*(?:=|<=>|!=|<>|<=?|>=?|\blike\b|\bis\b|\brlike\b|\bregexp\b|\bsounds\s+like\b)\s*[\s(]*(?:\d|'|"|true\b|false\b|null\b)"#),
    r("sqli-boolean-compare", Sqli, 2, &["or", "and", "xor", "||", "&&"],
        r#"(?:^|[\s'"`)(])(?:or|and|xor|\|\||&&)[\s(]*[a-z_]\w*\s*(?:=|<=>|!=|<>|<=?|>=?|\blike\b|\brlike\b|\bregexp\b)\s*[\s(]*(?:\d|'|"|true\b|false\b|null\b)"#),
    r("sqli-quote-boolean", Sqli, 4, &["or", "and", "xor", "||", "&&", "div", "like", "regexp", "having"],
        r#"(?:^|[\w)])['"`]\s*\)*\s*(?:\b(?:or|and|xor|div|like|rlike|regexp|having)\b|\|\||&&)\s*(?:['"`(\d@-]|not\b|\w+\s*\(|\w+\s*(?:[=<>~]|like\b|ilike\b|is\b|in\b|regexp\b|between\b))|(?:^|[\w)])['"`]\s*(?:collate|union|order\s+by|group\s+by|procedure|into)\b"#),
    r("sqli-quote-comment", Sqli, 4, &["--", "#", "/*", ";"],
        r#"(?:^|[\w)])'\s*\)*\s*(?:--(?:\s|-|$)|#|/\*|;\s*(?:--|#))|["`]\s*\)*\s*(?:--\s*$|#|/\*|;\s*(?:--|#))"#),
    r("sqli-stacked-ddl", Sqli, 5, &["drop", "truncate", "alter", "create"],
        r"(?:;|['`)])\s*(?:drop|truncate|alter|create)\s+(?:table|database|schema|user|procedure|function|view|index|trigger)\b"),
    r("sqli-stacked-query", Sqli, 5, &[";"],
        r";\s*(?:select\b.{0,200}\bfrom\b|select\s*\(|insert\s+into\b|delete\s+from\b|update\s+\S+\s+set\b|exec(?:ute)?\s+[\w@(]|declare\s+@|shutdown\b|waitfor\s+(?:delay|time)\b|grant\s|revoke\s|load\s+data\b|handler\s)"),
    r("sqli-time-based", Sqli, 5, &["sleep", "benchmark", "waitfor", "pg_sleep", "dbms_pipe", "dbms_lock"],
        r"\b(?:sleep|benchmark|pg_sleep|dbms_lock\.sleep|dbms_pipe\.receive_message)\s*\(|\bwaitfor\s+(?:delay|time)\s+'"),
    r("sqli-dangerous-function", Sqli, 5,
        &["load_file", "extractvalue", "updatexml", "group_concat", "name_const", "utl_", "xp_", "sp_", "outfile", "dumpfile", "information_schema", "sysobjects", "syscolumns", "mysql.", "pg_", "sqlite_", "@@", "concat", "dbms_", "msysaccessobjects", "sys.", "all_tables", "user_tables"],
        r"\b(?:load_file|extractvalue|updatexml|group_concat|name_const|concat_ws|utl_inaddr\.\w+|utl_http\.\w+|dbms_\w+\.\w+|xp_cmdshell|xp_regread|xp_dirtree|sp_executesql|sp_oacreate|sp_password|pg_read_file|pg_ls_dir|json_keys)\s*\(|\binto\s+(?:out|dump)file\b|\b(?:information_schema|sysobjects|syscolumns|mysql\.user|pg_catalog|pg_shadow|sqlite_master|sqlite_schema|msysaccessobjects|all_tables|user_tables|sys\.tables|sys\.objects)\b|@@(?:version|datadir|hostname|basedir|servername|user|tmpdir)\b"),
    r("sqli-select-from", Sqli, 3, &["select"],
        r"\bselect\b\s*(?:\*|(?:distinct\s+|top\s+\d+\s+)?(?:[\w.`\x22\[\]@]+|\w+\s*\([^)]{0,60}\))(?:\s*,\s*(?:[\w.`\x22\[\]@']+|\w+\s*\([^)]{0,60}\)))*)\s*\bfrom\s+[\w.`\x22\[(]+(?:\s+(?:where|limit|order|group|union|having)\b|\s*(?:--|#|;|\)|$))"),
    r("sqli-select-function", Sqli, 4, &["select"],
        r"\bselect\s*\(?\s*(?:\d+\s*,|null\b|char\s*\(|chr\s*\(|concat\s*\(|count\s*\(|version\s*\(|user\s*\(|database\s*\(|current_user\b|@@|0x[0-9a-f]+|case\s+when\b|if\s*\(|substr\w*\s*\(|ascii\s*\(|pg_sleep|sleep\s*\()"),
    r("sqli-dml", Sqli, 4, &["insert", "delete", "update", "replace"],
        r"\b(?:insert|replace)\s+(?:ignore\s+)?into\s+[\w.`\x22\[\]]+\s*(?:\(|values\b|select\b)|\bdelete\s+from\s+[\w.`\x22\[\]]+\s*(?:where\b|;|--|#|$)|\bupdate\s+[\w.`\x22\[\]]+\s+set\s+[\w.`\x22\[\]]+\s*="),
    r("sqli-order-by-probe", Sqli, 3, &["order", "group"],
        r#"(?:['"`)]|\d)\s*\b(?:order|group)\s+by\s+\d+\s*(?:--|#|/\*|;|,|$|asc|desc)|\b(?:order|group)\s+by\s+\d+\s*(?:--|#|/\*)"#),
    r("sqli-function-probe", Sqli, 2,
        &["char", "chr", "ascii", "substr", "mid", "version", "database", "user", "schema", "concat", "hex", "cast", "convert", "if", "case", "elt", "json", "row"],
        r#"(?:^|['"`\s(,=|&])(?:char|chr|ascii|ord|substr|substring|mid|version|database|current_user|session_user|system_user|user|schema|concat|unhex|hex|cast|convert|ifnull|nullif|elt|make_set|json_extract|row_count|found_rows|row)\s*\((?:[^)]{0,60})\)"#),
    r("sqli-case-when", Sqli, 3, &["when", "then"], r"\b(?:case\s+when|when\s+\S+\s+then)\b"),
    r("sqli-hex-literal-compare", Sqli, 2, &["0x"], r"(?:=|\bin\s*\(|,)\s*0x[0-9a-f]{6,}\b"),
    r("sqli-quote-operator", Sqli, 3, &["'", "\"", "`"],
        r#"['"`]\s*\)*\s*(?:[=<>!^|&*/%+-]{1,3}|\bis\b|\bin\b|\bbetween\b|\bsounds\b)\s*['"`(\d]|^\s*['"`]\s*(?:;|--|#|/\*|\)|,)|['"`]\s*::\s*\w+"#),
    r("sqli-mssql-exec", Sqli, 4, &["exec", "openrowset", "opendatasource", "openquery"],
        r"\b(?:exec(?:ute)?\s+(?:master\.|xp_|sp_)|openrowset\s*\(|opendatasource\s*\(|openquery\s*\()"),
    r("sqli-nosql-operator", Sqli, 3, &["$"],
        r#"\[\s*\$(?:ne|gt|gte|lt|lte|regex|where|exists|nin|in|or|and|not|expr|function)\s*\]|\{\s*['"]?\$(?:ne|gt|gte|lt|lte|regex|where|exists|nin|or|and|not|expr|function)\b"#),
    r("sqli-quote-terminator", Sqli, 2, &["'"], r"(?:^|\w)'\s*(?:;\s*$|\)+\s*;|\)+\s*(?:--|#))"),
    r("sqli-declare-execute", Sqli, 4, &["declare", "execute", "exec"], r"\bdeclare\s+@\w+|\bexecute\s+immediate\b|\bexec\s*\(\s*@"),
    r("sqli-function-specific", Sqli, 3,
        &["sysdate", "strcmp", "lo_", "pg_", "sqlite_", "xmltype", "sys_context", "nvl", "to_char", "db_name", "suser", "srvrole", "current_", "inet_server", "connection_id", "last_insert", "row_count", "found_rows", "get_lock", "master_pos", "geometrycollection", "multipoint", "polygon", "linestring", "randomblob", "zeroblob", "substring_index", "find_in_set", "make_set", "export_set", "aes_", "from_base64", "datalength", "has_dbaccess", "object_id", "col_name", "soundex", "char_length", "octet_length", "bit_length", "coercibility", "collation", "curdate", "curtime", "utc_", "st_", "session_user", "system_user", "unhex", "mid", "ord", "elt", "ascii", "char", "chr", "concat", "substr", "hex", "database", "version", "user", "schema"],
        r"\b(?:sysdate|strcmp|lo_get|lo_import|lo_export|pg_\w+|sqlite_\w+|xmltype|sys_context|nvl2?|to_char|to_number|db_name|suser_s?name|is_srvrolemember|current_(?:database|schema|setting|user)|inet_server_addr|connection_id|last_insert_(?:id|rowid)|row_count|found_rows|get_lock|master_pos_wait|geometrycollection|multipoint|polygon|linestring|randomblob|zeroblob|substring_index|find_in_set|make_set|export_set|aes_(?:en|de)crypt|from_base64|datalength|has_dbaccess|object_id|col_name|soundex|char_length|octet_length|bit_length|coercibility|collation|curdate|curtime|utc_(?:date|time)|st_\w+|session_user|system_user|unhex|ord|elt)\s*\("),
    r("sqli-schema-names", Sqli, 3, &["schema_name", "table_name", "column_name", "northwind", "msdb", "tempdb", "sysusers", "syslogins", "sysdatabases", "pg_tables", "pg_user", "dual"],
        r"\b(?:schema_name|table_name|column_name|northwind|msdb|tempdb|sysusers|syslogins|sysdatabases|pg_tables|pg_user|from\s+dual)\b"),
    r("sqli-function-fragment", Sqli, 3, &["("], r"^[\s'\x22`)]*[a-z_][a-z0-9_]*\s*\(\s*$"),
    r("sqli-nosql-key", Sqli, 4, &["$"], r"^\$(?:ne|eq|gt|gte|lt|lte|in|nin|regex|where|exists|not|or|and|nor|expr|function|elemmatch|size|type|mod|all|text|jsonschema|accumulator)$"),
    r("sqli-orm-lookup", Sqli, 3, &["__"], r"[a-z0-9]__(?:startswith|istartswith|endswith|iendswith|contains|icontains|contained_by|has_key|has_keys|has_any_keys|regex|iregex|isnull|range|exact|iexact|search|overlap)\b"),
    r("ldap-injection", CodeInjection, 4, &[")(", "(", "*)"],
        r"\)\s*\(\s*[|&!]|\*\)\s*\(|\(\s*[|&!]?\s*\(?\s*(?:objectclass|cn|uid|mail|sn|ou|dc|userpassword|samaccountname)\s*[=~<>]|\)\s*\(\s*(?:objectclass|cn|uid|mail)\b"),
    // ---- XSS -----------------------------------------------------------------------------------
    r("xss-script-tag", Xss, 5, &["<script", "script>"], r"<\s*/?\s*script\b|script\s*>"),
    r("xss-event-handler-tag", Xss, 5, &["on"], r"<[a-z!][^>]{0,200}?[\s/\x22'](?:on[a-z]{3,30})\s*="),
    r("xss-event-handler", Xss, 4, &["on"],
        r"(?:^|[\s\x22'/;>])on(?:error|load|click|dblclick|mouse\w{2,8}|focus\w{0,3}|blur|key(?:up|down|press)|submit|change|input|toggle|animation\w{3,9}|transition\w{3,9}|pointer\w{2,8}|begin|drag\w{0,5}|drop|paste|copy|cut|scroll|resize|wheel|contextmenu|message|hashchange|popstate|pageshow|beforeunload|unload|auxclick|touch\w{3,6}|play|ended|loadstart|progress|readystatechange|beforeprint|afterprint|search|select|show|invalid|reset|abort|canplay|durationchange|volumechange|waiting|seeked|timeupdate|storage|online|offline)\s*="),
    r("xss-js-uri", Xss, 5, &["script", "data:"],
        r"\b(?:java|vb|live|j|ecma|moz-)script\s*:|\bdata\s*:\s*(?:text/html|text/xml|image/svg|application/(?:x-)?(?:javascript|ecmascript|xhtml))"),
    r("xss-dangerous-tag", Xss, 4,
        &["<iframe", "<object", "<embed", "<applet", "<frame", "<meta", "<base", "<isindex", "<xss", "<import", "<svg", "<math", "<form", "<link", "<style", "<img", "<body", "<video", "<audio", "<details", "<marquee", "<input", "<button", "<textarea", "<keygen", "<template", "<image", "<a ", "<x ", "<html", "<set", "<animate", "<portal", "<xml"],
        r"<\s*(?:iframe|object|embed|applet|frameset|frame|meta|base|isindex|xss|import|portal|set|animate)\b|<\s*(?:svg|math|form|link|style|img|body|video|audio|details|marquee|input|button|textarea|keygen|template|image|a|x|html|xml)\b[^>]{0,200}?\b(?:src|href|action|formaction|data|xlink:href|style|background|dynsrc|lowsrc|srcdoc|poster|open|autofocus)\s*="),
    r("xss-js-sink", Xss, 4,
        &["document", "window", "innerhtml", "outerhtml", "eval", "settimeout", "setinterval", "fromcharcode", "alert", "prompt", "confirm", "atob", "location", "constructor", "import("],
        r#"\bdocument\s*\)?\s*(?:\.|\[\s*['"`])\s*(?:cookie|domain|write|writeln|location|body|forms|url)\b|\b(?:window|self|top|parent|frames|globalthis)\s*\)?\s*(?:\.|\[\s*['"`])\s*(?:location|eval|name|open|document|alert|atob)\b|\.\s*(?:inner|outer)html\s*=|\b(?:alert|prompt|confirm|eval|settimeout|setinterval|atob|execscript|msgbox)\s*(?:\(|`|&#)|string\s*\.\s*fromcharcode\s*\(|\blocation\s*(?:\.\s*(?:href|hash|search)\s*)?=|\.constructor\s*\(|\bimport\s*\(\s*['"`]"#),
    r("xss-event-handler-generic", Xss, 3, &["on"], r"(?:^|[\s\x22'/;<>`])on[a-z]{3,40}\s*="),
    r("xss-call-gadget", Xss, 4, &[".call", ".apply", ".bind", "`"], r"\.(?:call|apply|bind)\s*(?:`|\(\s*(?:window|self|top|this|null|parent)\b)|\w\s*`[^`]{0,100}\$\{"),
    r("xss-namespaced-tag", Xss, 4, &["<"], r"<\s*[a-z]+:[a-z]+\b[^>]{0,200}\b(?:src|href|style|on\w+)\s*=|<\?import\b|<\s*v:(?:vmlframe|image|rect|shape|fill)\b"),
    r("xss-jsfuck", Xss, 4, &["[]", "!+", "+!"], r"[!+\[\]()]{10,}"),
    r("xss-html-comment-markup", Xss, 2, &["<!--", "-->", "<![cdata["], r"<!--|-->|<!\[cdata\["),
    r("xss-css-expression", Xss, 4, &["expression", "behavior", "-moz-binding", "@import"],
        r"\bexpression\s*\(|\bbehavior\s*:\s*url|-moz-binding\s*:|@import\s+(?:url|['\x22])"),
    r("xss-tag-open", Xss, 2, &["<"], r"<\s*[a-z]+[\s/][^>]{0,200}?>|<\s*/?\s*[a-z]+\s*>"),
    // ---- Path traversal / LFI ------------------------------------------------------------------
    r("lfi-dot-dot", PathTraversal, 3, &[".."], r"(?:^|[/\\])\.{2,}[/\\;]|[/\\]\.{2,}(?:[/\\;]|$)|^\.{2,}$"),
    r("lfi-dot-dot-repeated", PathTraversal, 5, &[".."], r"(?:\.{2,}[/\\;]+\s*){2,}|(?:[/\\]\.{2,}){2,}"),
    r("lfi-sensitive-file", PathTraversal, 5,
        &["etc/", "proc/", "boot.ini", "win.ini", "system.ini", "system32", "windows", "inetpub", ".htaccess", ".htpasswd", "web.config", "wp-config", "id_rsa", "id_dsa", "authorized_keys", "/var/log", "/dev/", ".bash_history", "known_hosts", ".ssh", ".aws", "shadow", "passwd", "/root", "/home/", "c:"],
        r"(?:^|[^\w.-])/?etc/+(?:passwd|shadow|group|hosts|issue|motd|crontab|sudoers|hostname|resolv\.conf|fstab|mtab|profile|bashrc|environment|ssh/|nginx/|apache2?/|httpd/|mysql/|php\w*/)|/proc/+(?:self|\d+|thread-self)/|\bproc/+self/|\b(?:boot|win|system)\.ini\b|\\windows\\|/windows/(?:system32|win\.ini)|\bsystem32\b|\binetpub\b|\.ht(?:access|passwd)\b|\bweb\.config\b|\bwp-config\.php\b|\bid_[rd]sa\b|\bauthorized_keys\b|/var/log/|\.bash_history\b|\bknown_hosts\b|/root/\.|/\.ssh/|/\.aws/|\bc:[/\\]+(?:windows|boot|inetpub|users|winnt)|/dev/(?:tcp|udp|fd|stdin|stdout|null|zero|random)/?"),
    scoped(r("lfi-hidden-path", PathTraversal, 4, &["/."],
        r"(?:^|/)\.(?:git|svn|hg|bzr|cvs|env|aws|ssh|docker|dockerenv|kube|config|npmrc|yarnrc|pypirc|netrc|pgpass|my\.cnf|bash_history|zsh_history|history|htaccess|htpasswd|ds_store|idea|vscode|claude|cursor|n8n|fabric|aiignore|gemini|codex|vault|terraform|gnupg|composer|circleci|github|gitlab-ci|travis|env\.\w+|[\w-]*rc)\b|(?:^|/)\.[\w-]+\.(?:env|ya?ml|json|ini|conf|cfg|toml|key|pem)$"), Scope::Path),
    scoped(r("lfi-dotfile", PathTraversal, 3, &["/."], r"(?:^|/)\.(?:[a-v]|w(?:[a-d]|[f-z]|e[a-k]|e[m-z]|el[a-k]|el[m-z])|[x-z])[\w.-]*(?:/|$)"), Scope::Path),
    r("lfi-php-wrapper", PathTraversal, 5, &["php://", "zip://", "phar://", "expect://", "glob://", "compress.", "zlib:", "data://"],
        r"\b(?:php|zip|phar|expect|glob|data|ogg|rar|ssh2(?:\.\w+)?)://|\bcompress\.(?:zlib|bzip2)://"),
    r("lfi-file-uri", PathTraversal, 5, &["file:", "local_file:", "jar:"], r"\b(?:local_)?file:/|\bjar:(?:file|https?):"),
    r("lfi-traversal-encoded-remains", PathTraversal, 4, &["%2e", "%2f", "%5c", "..%", "%c0", "%uff"], r"(?:%2e){2}|\.\.%(?:2f|5c|c0|c1|e0|25)|%c0%af|%c1%9c"),
    // ---- RFI / SSRF ----------------------------------------------------------------------------
    r("ssrf-internal-host", RfiSsrf, 4, &["://"],
        r"\b(?:https?|ftp|gopher|dict|ldaps?|rmi|tftp|sftp|ws|wss|jdbc:\w+)://(?:[^/@\s]*@)?(?:\[[0-9a-f:.%\w-]*\]|(?:\d{1,3}\.){3}\d{1,3}|localhost\b|0x[0-9a-f]+\b|0+\b|\d{8,10}\b|[\w.-]*\.(?:internal|local|localdomain|localtest\.me|nip\.io|xip\.io|burpcollaborator\.net|oast\.\w+|interact\.sh)\b|metadata\b)"),
    r("ssrf-metadata", RfiSsrf, 5, &["169.254", "metadata", "100.100.100.200", "fd00:ec2"],
        r"\b169\.254\.169\.254\b|\bmetadata\.google\.internal\b|\b100\.100\.100\.200\b|\bfd00:ec2::254\b|/latest/meta-data\b|/computemetadata/"),
    r("ssrf-scheme", RfiSsrf, 5, &["gopher:", "dict:", "ldap:", "ldaps:", "rmi:", "tftp:", "netdoc:", "jar:", "iiop:", "corba:", "nds:", "nis:", "dns:"],
        r"\b(?:gopher|dict|ldaps?|rmi|tftp|netdoc|iiop|corba|nds|nis|dns)://"),
    scoped(r("rfi-url-with-query-end", RfiSsrf, 4, &["://"], r"^\s*(?:https?|ftps?)://[^\s]+\?+$|^\s*(?:https?|ftps?)://[^\s?]+\.(?:php\d?|txt|phtml|jsp|asp|aspx|pl|cgi|sh|gif|jpg)\?"), Scope::Values),
    r("rfi-include-url", RfiSsrf, 4, &["include", "require", "://"], r"\b(?:include|require)(?:_once)?\s*\(?\s*['\x22]?\s*(?:https?|ftp)://"),
    r("ssrf-obfuscated-ip", RfiSsrf, 4, &["://"],
        r"\b[a-z][\w+.-]{1,15}://(?:[^/@\s]*@)?(?:(?:0x[0-9a-f]+|0[0-7]+|\d{8,10})(?:\.(?:0x[0-9a-f]+|\d+)){0,3}|\d+(?:\.(?:0x[0-9a-f]+|0[0-7]+)){1,3})(?:[:/?#]|$)"),
    scoped(r("ssrf-bare-internal", RfiSsrf, 3, &["local", "127.", "0.0.0.0", "[::"],
        r"^(?:localhost\d*(?:\.localdomain\d*)?|localtest\.me|127\.\d+\.\d+\.\d+|0\.0\.0\.0|\[::1?\])(?:[:/]|$)"), Scope::Values),
    // ---- Shell command injection ---------------------------------------------------------------
    r("cmd-separator-command", CommandInjection, 5, &[";", "|", "&", "`", "$(", "\n", "\r", "<", ">"],
        concat!(r"(?:[;|`\n\r]|\$\(|\|\||&&|<\(|>\()\s*(?:\{\s*)?", cmds!(), r"(?:\s+(?:-{1,2}\w|/|\$|\.\.?/|~|\w+\.\w|\w+\s*[|;>])|\s*$|\s*[;|&`)>]|\s*<|\$\{?ifs)")),
    r("cmd-separator-command-bare", CommandInjection, 2, &[";", "|", "&", "`", "$(", "\n"],
        concat!(r"(?:[;|\n&]|\$\()\s*", cmds!(), r"(?:\s|$|[;|&])")),
    r("cmd-substitution", CommandInjection, 5, &["$(", "`", "${"],
        concat!(r"\$\(\s*", cmds!(), r"\b|`\s*", cmds!(), r"\b[^`]{0,200}?(?:/|\||;|\$|&|<|>)[^`]{0,200}`|\$\{\s*", cmds!(), r"\s*[;}]")),
    r("cmd-backtick", CommandInjection, 2, &["`"], concat!(r"`\s*", cmds!(), r"\b[^`]{0,200}`")),
    r("cmd-ifs-evasion", CommandInjection, 5, &["ifs", "$@", "$*", "${", "$'"], r"\$\{?ifs\b|\$[@*]|\$\{[^}]{0,20}:-?[^}]{0,5}\}|\$'\\x[0-9a-f]{2}"),
    r("cmd-brace-expansion", CommandInjection, 5, &["{"], concat!(r"\{\s*", cmds!(), r"\s*,[^}]*\}")),
    r("cmd-reverse-shell", CommandInjection, 5, &["/dev/", "nc", "bash", "sh", "mkfifo", "socket", "exec"],
        r"/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)\b.{0,40}\s-[a-z]*[elc]\b|\bbash\s+-i\b|\bsh\s+-i\b|\bmkfifo\b|\bsocket\.socket\b|\bexec\s+\d+<>"),
    r("cmd-download-exec", CommandInjection, 5, &["wget", "curl", "fetch", "certutil", "bitsadmin", "powershell", "invoke-"],
        r"\b(?:wget|curl|fetch)\b[^|;]{0,100}\bhttps?://[^|;]{0,200}(?:\||;|&&|-o\s)|\bcertutil\b.{0,40}-urlcache|\bbitsadmin\b.{0,40}/transfer|\bpowershell(?:\.exe)?\b.{0,80}\s-(?:e|enc|encodedcommand|c|command|nop|noprofile|w|windowstyle|exec|executionpolicy)\b|\binvoke-(?:expression|webrequest|restmethod|shellcode)\b|\biex\s*\("),
    r("cmd-binary-path", CommandInjection, 4, &["bin/"], r"(?:^|[\s;|&`'\x22(=<>{,])/(?:usr/)?(?:local/)?s?bin/[a-z0-9_.-]+"),
    r("cmd-windows", CommandInjection, 4, &["cmd", "%", "for ", "if ", "reg ", "net ", "wmic", "rundll32", "regsvr32", "mshta", "cscript", "wscript", "type "],
        r"\bcmd(?:\.exe)?\s*/[ckr]\b|%(?:systemroot|comspec|windir|userprofile|temp|appdata|programfiles|path|username|computername|os)%|\bfor\s+/[fldr]\b|\bfor\s+(?:/[fldr]\s+)?%{1,2}\S+\s+in\s*\(|\bif\s+(?:/i\s+)?(?:not\s+)?(?:defined|exist|errorlevel)\b|\bif\s+\S.{0,60}==.{0,60}\b(?:echo|do|goto|call|set)\b|\)\s*do\s+(?:cmd|echo|call|set|start)\b|\b(?:rundll32|regsvr32|mshta|cscript|wscript)(?:\.exe)?\b|\bwmic\s+(?:process|os|useraccount|shadowcopy)\b|\breg\s+(?:add|query|delete)\s+hk|\bnet\s+(?:user|localgroup|share|use|view)\b|\btype\s+[a-z]:\\"),
    r("cmd-shellshock", CommandInjection, 5, &["()"], r"^\s*\(\s*\)\s*\{|\(\s*\)\s*\{\s*:\s*;?\s*\}\s*;"),
    r("cmd-here-string", CommandInjection, 4, &["<<<", "<<"], r"<<<|<<\s*-?\s*['\x22]?eof\b"),
    r("cmd-bare-command", CommandInjection, 2, &[],
        concat!(r"^\s*", cmds!(), r"(?:\s+-{1,2}[a-z]+\b|\s+/|\s*<<|\s*[|;]|\$\{?ifs)")),
    r("cmd-interpreter-inline", CommandInjection, 4, &["sh", "python", "perl", "ruby", "php", "node", "lua"],
        r"\b(?:ba|k|z|c|tc|da|a)?sh\s+-c\b|\bpython[23]?\s+-c\b|\bperl\s+-e\b|\bruby\s+-e\b|\bphp\s+-r\b|\bnode\s+-e\b|\blua\s+-e\b"),
    r("cmd-recon", CommandInjection, 3, &["whoami", "uname", "ifconfig", "ipconfig", "/bin/"],
        r"\bwhoami\b|\buname\s+-[a-z]+|\bifconfig\b|\bipconfig\b|/bin/(?:ba|z|k|c|da)?sh\b"),
    r("cmd-fork-bomb", CommandInjection, 5, &[":"], r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:"),
    r("cmd-alias", CommandInjection, 3, &["alias"], r"\balias\s+[\w.-]+\s*=\s*['\x22]?\s*\w"),
    r("cmd-mail-injection", CommandInjection, 4, &["\n", "\r"], r"[\n\r]\s*(?:auth\s+\w+|mail\s+from\s*:|rcpt\s+to\s*:|ehlo\s|helo\s|\.\s*[\n\r]|quit\s*$|a\d+\s+(?:login|select|fetch|capability|list|append|examine|logout|noop|store|copy|search|status|authenticate)\b|(?:user|pass)\s+\S+\s*$)"),
    // ---- Code injection ------------------------------------------------------------------------
    r("code-php-tag", CodeInjection, 5, &["<?"], r"<\?(?:php\b|=|\s)|<\?$"),
    r("code-php-function", CodeInjection, 4,
        &["eval", "assert", "system", "strrev", "hex2bin", "uudecode", "curl_exec", "parse_str", "extract", "define", "get_defined_vars", "scandir", "opendir", "readdir", "unlink", "sockopen", "socket", "register_", "array_", "uasort", "uksort", "iterator_apply", "forward_static_call", "gzdecode", "gzuncompress", "ini_set", "putenv", "dl", "symlink", "chmod", "mail", "posix_", "exec", "passthru", "popen", "proc_open", "pcntl", "create_function", "call_user_func", "preg_replace", "file_get_contents", "file_put_contents", "fopen", "readfile", "base64_decode", "gzinflate", "str_rot13", "phpinfo", "unserialize", "move_uploaded_file", "highlight_file", "show_source", "fwrite", "fputs", "include", "require", "array_map", "usort", "ob_start", "var_dump", "print_r", "chr(", "getenv"],
        r"\b(?:eval|assert|system|exec|shell_exec|passthru|popen|proc_open|pcntl_exec|create_function|call_user_func(?:_array)?|preg_replace|file_get_contents|file_put_contents|fopen|readfile|base64_decode|gzinflate|gzuncompress|str_rot13|phpinfo|unserialize|move_uploaded_file|highlight_file|show_source|fwrite|fputs|array_map|usort|ob_start|var_dump|print_r|getenv|posix_\w+|ini_set|putenv|dl|symlink|chmod|mail|strrev|hex2bin|convert_uudecode|assert_options|curl_exec|parse_str|extract|define|get_defined_vars|scandir|opendir|readdir|unlink|fsockopen|pfsockopen|stream_socket_client|socket_create|register_shutdown_function|register_tick_function|array_filter|array_walk|uasort|uksort|iterator_apply|forward_static_call|gzdecode|gzuncompress)['\x22]?\s*\)?\s*\(|\b(?:include|require)(?:_once)?\s*\(?\s*['\x22$]"),
    r("code-php-variable-function", CodeInjection, 3, &["$"],
        r"\$\w+(?:\s*\[[^\]]{0,40}\])*\s*\(|\$\{\s*@?\w+\s*\}\s*\(|::\s*\$\w+\s*\("),
    r("code-php-function-string", CodeInjection, 3, &["system", "exec", "passthru", "assert", "eval", "shell", "popen"],
        r"['\x22\[(]\s*(?:system|exec|passthru|shell_exec|assert|eval|popen|proc_open)\s*['\x22\])]"),
    r("code-php-config", CodeInjection, 4, &["opcache", "allow_url", "auto_prepend", "auto_append", "disable_functions", "open_basedir", "safe_mode", "{php}", "{/php}"],
        r"\bopcache\.\w+|\ballow_url_(?:include|fopen)\b|\bauto_(?:prepend|append)_file\b|\bdisable_functions\b|\bopen_basedir\b|\bsafe_mode\b|\{/?php\}"),
    r("code-php-session-file", CodeInjection, 4, &["sess_"], r"(?:^|/)sess_[\w-]{10,}"),
    r("code-php-superglobal", CodeInjection, 4, &["$_", "$globals", "$http_"], r"\$_(?:get|post|request|cookie|server|files|env|session)\b|\$globals\b|\$http_\w+_vars"),
    r("code-php-object", CodeInjection, 5, &["o:", "c:"], r"\b[oc]:\d+:\x22[\w\\]+\x22:\d+:\{"),
    r("code-php-variable-call", CodeInjection, 3, &["$"], r"\$\w+\s*\(\s*\$?\w*\s*\)\s*;|\$\{\s*\w+\s*\}\s*\(|\(\s*['\x22][a-z_]+['\x22]\s*\.\s*['\x22]"),
    r("code-template", CodeInjection, 5, &["{{", "${", "<%", "#{", "*{", "{%", "@{"],
        r"\{\{\s*\d+\s*[*+/-]\s*\d+\s*\}\}|\$\{\s*\d+\s*[*+/-]\s*\d+\s*\}|<%=?\s*\d+\s*[*+/-]\s*\d+\s*%>|#\{\s*\d+\s*[*+/-]\s*\d+\s*\}|\*\{\s*\d+\s*[*+/-]\s*\d+\s*\}|@\{\s*\d+\s*[*+/-]\s*\d+\s*\}|\{\{[^}]{0,200}(?:__class__|__globals__|__builtins__|__subclasses__|__mro__|__init__|__import__|config\.|self\.|request\.|lipsum|cycler|joiner|namespace|constructor|\|attr\()|\{%[^%]{0,200}(?:import|include|exec|system|popen|for\s+\w+\s+in\b)[^%]{0,200}%\}|<%[^%]{0,200}(?:runtime|exec|system|request|response|process|eval|include|import)"),
    r("code-template-weak", CodeInjection, 2, &["{{", "<%", "${"], r"\{\{[^}]{1,200}\}\}|<%.{0,200}%>|\$\{[^}]{1,100}\}"),
    r("code-python-dunder", CodeInjection, 5, &["__"], r"__(?:class|globals|builtins|subclasses|mro|init|import|base|bases|dict|code|reduce|getattribute)__"),
    r("code-python-call", CodeInjection, 4, &["import", "os.", "subprocess", "pickle", "compile", "getattr"],
        r"\b__import__\s*\(|\bos\s*\.\s*(?:system|popen|exec\w*|spawn\w*|remove|unlink)\s*\(|\bsubprocess\s*\.\s*\w+|\bpickle\s*\.\s*loads?\b|\bcompile\s*\(.{0,80},\s*['\x22]\w*['\x22]\s*,\s*['\x22]exec|\bgetattr\s*\(\s*__"),
    r("code-jndi", CodeInjection, 5, &["${", "jndi", "%{"],
        r"\$\{[^}]{0,40}(?:jndi|j\}|:-j|lower:|upper:|::-|env:|sys:|java:|ctx:|main:|date:|base64:|spring:|k8s:|docker:|web:|bundle:|log4j:|marker:|sd:|event:|map:)|\bjndi\s*:\s*(?:ldaps?|rmi|dns|iiop|corba|nds|nis|http)"),
    r("code-java-class", CodeInjection, 5, &["java", "jdk.", "sun.", "org.", "com.", "groovy", "bsh.", "ognl", "processbuilder"],
        r"\bjava\.(?:lang|io|net|nio|util|beans|rmi|security|sql|awt|applet)\.[a-z_]\w*|\bjavax\.\w+|\bjdk\.(?:jshell|internal|nashorn)\b|\bsun\.(?:misc|reflect|rmi)\b|\bcom\.sun\.\w+|\borg\.apache\.(?:commons\.collections|xalan|bcel|tomcat|catalina|struts2?)\b|\borg\.springframework\.\w+|\bgroovy\.(?:lang|util)\b|\bbsh\.\w+|\bognl\.\w+|\bcom\.opensymphony\.xwork2\b|\borg\.omg\.corba\b|\borg\.apache\.commons\b|\bjava\b.{0,40}\b(?:runtime|processbuilder)\b|\bprocessbuilder\b.{0,40}\b(?:\w+transformer|\w+factory|\w+closure)\b"),
    r("code-java-gadget", CodeInjection, 5,
        &["runtime", "processbuilder", "transformer", "clonefactory", "serializationfactory", "closure", "classloader", "xmldecoder", "objectinputstream", "readobject", "xstream", "scriptengine", "beanshell", "templatesimpl", "_memberaccess", "forname", "getclass", "invoke", "newinstance", "reflect", "defineclass", "nashorn", "jshell", "rhino"],
        r"\bruntime\s*\.\s*(?:getruntime|exec|halt|load|loadlibrary|\w+transformer|\w+factory|\w+closure)\b|\.getruntime\s*\(|\bprocessbuilder\b|\b(?:invoker|instantiate|clone|closure|chained|constant|instantiatefactory|map)transformer\b|\bprototype(?:clone|serialization)factory\b|\b(?:while|for|if|switch|not|and|or|transformer|chained)closure\b|\bclassloader\b|\bxmldecoder\b|\bobjectinputstream\b|\breadobject\s*\(|\bxstream\b|\bscriptengine(?:manager)?\b|\bbeanshell\b|\btemplatesimpl\b|#_memberaccess|\bclass\s*\.\s*forname\s*\(|\.getclass\s*\(\s*\)\s*\.|\.getmethod\s*\(|\.invoke\s*\(|\.newinstance\s*\(|\.defineclass\s*\(|\bjava\s*\.\s*lang\s*\.\s*reflect\b|\bnashorn\b|\bjshell\b|\bmozilla\.javascript\b"),
    r("code-ognl-spel", CodeInjection, 5, &["%{", "#{", "@java", "#context", "#request", "#_", "#attr", "t("],
        r"%\{[^}]{0,100}[#@(]|#\{[^}]{0,100}(?:\(|@|\.)|@java\.lang|#context\[|#(?:request|attr|parameters|session|application)\b|\bt\s*\(\s*java\.\w+"),
    r("code-node", CodeInjection, 5, &["child_process", "process", "require", "__js_function", "nd_func", "constructor", "__proto__", "prototype", "function", "module"],
        r"\bchild_process\b|\bprocess\s*\[\s*['\x22`]|__js_function|_\$\$nd_func\$\$_|\bprocess\s*\.\s*(?:mainmodule|binding|env|exit|kill|dlopen)\b|\brequire\s*\(\s*['\x22`](?:child_process|fs|net|http|vm|os)['\x22`]\s*\)|\.constructor\s*\.\s*constructor\b|\bconstructor\s*\[\s*['\x22]|__proto__|\bprototype\s*(?:\.|\[)\s*['\x22]?\w+['\x22]?\s*\]?\s*=|\bnew\s+function\s*\(|\bmodule\s*\.\s*(?:constructor|children|require|prototype)\b|\$\d+:\w*:?(?:prototype|constructor|__proto__)"),
    r("code-js-loop", CodeInjection, 4, &["while", "for"], r"\bwhile\s*\(\s*!*\s*(?:true|1|false|0|\{\}|\[\])\s*\)|\bfor\s*\(\s*;\s*;\s*\)"),
    r("code-ruby-perl", CodeInjection, 4, &["kernel", "io.", "open(", "%x", "@{[", "syscall", "instance_eval", "class_eval", "send(", "perl", "exec", "system", "spawn"],
        r"\bkernel\s*\.\s*(?:exec|system|open|spawn|eval|`)|\bio\s*\.\s*(?:popen|readlines|read)\b|\bopen\s*\(\s*['\x22]\|\|?|%x[({\[]|@\{\[.{0,200}\]\}|\bsyscall\s*\(|\b(?:instance|class|module)_eval\b|\.send\s*\(\s*:(?:system|exec|eval|spawn)|\bperl\s+-e\b|\bspawn\s*\("),
    r("code-upload-script", CodeInjection, 4, &[".php", ".phtml", ".phar", ".jsp", ".asp", ".cgi", ".pl", ".py", ".sh", ".exe", ".shtml", ".htaccess"],
        r"\.(?:php[0-9s]?\d*|phtml|phar|pht|jspx?|aspx?|ashx|asmx|cer|cgi|pl|py|sh|exe|bat|shtml|htaccess)(?:\s*\.\s*\w+)?[\s.]*$|\.\s+(?:php|jsp|asp)\b"),
    // ---- Prompt injection ----------------------------------------------------------------------
    r("prompt-ignore-instructions", PromptInjection, 4, &["ignore", "disregard", "forget", "override"],
        r"\b(?:ignore|disregard|forget|override|bypass)\s+(?:all\s+|any\s+|the\s+|your\s+|my\s+|every\s+)*(?:previous|prior|above|earlier|preceding|original|initial|system|safety)?\s*(?:instructions?|prompts?|rules|directions|guidelines|messages|context|restrictions|programming)\b"),
    r("prompt-role-override", PromptInjection, 3, &["you are now", "pretend", "act as", "behave as", "roleplay", "from now on"],
        r"\byou\s+are\s+now\s+(?:a|an|in|the|my|dan|free|unrestricted|unfiltered|no\s+longer|jailbroken|evil)\b|\b(?:pretend|act|behave)\s+(?:to\s+be|as\s+if|as\s+though|like)\s+(?:you|an?\s+(?:ai|assistant|model|chatbot))\b|\bfrom\s+now\s+on\s+(?:you|ignore|respond|answer)\b"),
    r("prompt-system-prompt", PromptInjection, 3, &["system prompt", "system message", "initial prompt", "instructions"],
        r"\b(?:reveal|print|show|repeat|output|leak|display|tell\s+me|what\s+(?:is|are))\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|hidden\s+|secret\s+|original\s+)?(?:system\s*(?:prompt|message)|initial\s+prompt|instructions|hidden\s+prompt)\b"),
    r("prompt-jailbreak", PromptInjection, 3, &["jailbreak", "dan", "do anything now", "developer mode", "no restrictions"],
        r"\bjailbreak(?:ing|ed)?\b|\bdan\s+mode\b|\bdo\s+anything\s+now\b|\bdeveloper\s+mode\s+(?:enabled|on)\b|\bwithout\s+(?:any\s+)?(?:restrictions|filters|censorship)\b"),
    r("prompt-chat-markup", PromptInjection, 4, &["<|", "[inst]", "[/inst]", "<<sys>>", "### system", "### instruction"],
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|eot_id|start_header_id)\|>|\[/?inst\]|<<sys>>|###\s*(?:system|instruction)\s*:"),
    // ---- Protocol and encoding tricks ----------------------------------------------------------
    r("proto-crlf-header", Protocol, 5, &["\n", "\r"],
        r"[\n\r]\s*(?:content-(?:type|length|disposition)|set-cookie|location|host|transfer-encoding|refresh|x-[\w-]+)\s*:|[\n\r]\s*http/\d|[\n\r]\s*(?:get|post|put|head|delete|options|connect|trace|patch)\s+\S+(?:\s+http/\d)?"),
    r("proto-request-line", Protocol, 5, &["http/"], r"\b(?:get|post|put|head|delete|options|connect|trace|patch|propfind)\s+(?:[a-z]+://\S+|/\S*|\*)\s+http/\d"),
    r("proto-html-entity-obfuscation", Protocol, 1, &["&#"], r"&#x?[0-9a-f]+;?"),
    // ---- Scanners (User-Agent and friends) -----------------------------------------------------
    scoped(r("scanner-tool", Scanner, 5,
        &["nikto", "sqlmap", "nessus", "nmap", "masscan", "zgrab", "acunetix", "w3af", "dirbuster", "gobuster", "wpscan", "nuclei", "openvas", "arachni", "havij", "jaeles", "feroxbuster", "ffuf", "whatweb", "zmeu", "morfeus", "netsparker", "appscan", "webinspect", "skipfish", "paros", "burp", "wfuzz", "commix", "xsstrike", "dirsearch", "bbot", "cgichk", "brutus", "hydra", "fimap", "metasploit", "zap/", "owasp zap", "blackwidow", "grabber", "webshag", "wapiti", "vega", "censys", "zmap", "nuclei", "httpx", "interactsh", "qualys", "detectify"],
        r"\b(?:nikto|sqlmap|nessus|nmap|masscan|zgrab|acunetix|w3af|dirbuster|gobuster|wpscan|nuclei|openvas|arachni|havij|jaeles|feroxbuster|ffuf|whatweb|zmeu|morfeus|netsparker|appscan|webinspect|skipfish|paros|burp(?:suite|collaborator)?|wfuzz|commix|xsstrike|dirsearch|bbot|cgichk|brutus|hydra|fimap|metasploit|owasp\s+zap|zap/\d|blackwidow|grabber|webshag|wapiti|interactsh|detectify)\b"), Scope::Headers),
    r("proto-cookie-set", Protocol, 5, &["cookie"], r"\bdocument\s*\.\s*cookie\s*=|http-equiv\s*=\s*['\x22]?set-cookie|\bset-cookie\s*:"),
];
