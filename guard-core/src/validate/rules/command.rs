//! Shell command injection: separators followed by commands, substitutions, `$IFS` and brace
//! tricks, reverse shells, download-and-run, Windows `cmd`, mail protocol injection.

use super::{Rule, Scope, paranoid, r, scoped};
use crate::validate::Category::CommandInjection;

/// The rules of this family.
pub static RULES: &[Rule] = &[
    // ---- Shell command injection ---------------------------------------------------------------
    r(
        "cmd-separator-command",
        CommandInjection,
        5,
        &[";", "|", "&", "`", "$(", "\n", "\r", "<", ">"],
        concat!(
            // A lone `&` only when glued to the command (`&bcdboot`): `Ben & Jerry` is prose.
            r"(?:(?:[;|`\n\r]|&&|\$\(|<\(|>\()\s*|&)(?:\{\s*)?",
            cmds!(),
            r"(?:\s+(?:-{1,2}\w|/|\$|\.\.?/|~|\w+\.\w|\w+://|\w+\s*[|;>])|\s*$|\s*[;|&`)>]|\s*<|\$\{?ifs)"
        ),
    ),
    r(
        "cmd-separator-command-bare",
        CommandInjection,
        2,
        &[";", "|", "&", "`", "$(", "\n"],
        concat!(r"(?:[;|\n&]|\$\()\s*", cmds!(), r"(?:\s|$|[;|&])"),
    ),
    r(
        "cmd-substitution",
        CommandInjection,
        5,
        &["$(", "`", "${"],
        concat!(
            r"\$\(\s*",
            cmds!(),
            r"\b|`\s*",
            cmds!(),
            r"\b[^`]{0,200}?(?:/|\||;|\$|&|<|>)[^`]{0,200}`|\$\{\s*",
            cmds!(),
            r"\s*[;}]"
        ),
    ),
    r(
        "cmd-backtick",
        CommandInjection,
        2,
        &["`"],
        concat!(r"`\s*", cmds!(), r"\b[^`]{0,200}`"),
    ),
    r(
        "cmd-ifs-evasion",
        CommandInjection,
        5,
        &["ifs", "$@", "$*", "${", "$'"],
        r"\$\{?ifs\b|\$[@*]|\$\{[^}]{0,20}:-?[^}]{0,5}\}|\$'\\x[0-9a-f]{2}",
    ),
    r(
        "cmd-brace-expansion",
        CommandInjection,
        5,
        &["{"],
        concat!(r"\{\s*", cmds!(), r"\s*,[^}]*\}"),
    ),
    r(
        "cmd-reverse-shell",
        CommandInjection,
        5,
        &["/dev/", "nc", "bash", "sh", "mkfifo", "socket", "exec"],
        r"/dev/(?:tcp|udp)/|\b(?:nc|ncat|netcat)\b.{0,40}\s-[a-z]*[elc]\b|\bbash\s+-i\b|\bsh\s+-i\b|\bmkfifo\b|\bsocket\.socket\b|\bexec\s+\d+<>",
    ),
    r(
        "cmd-download-exec",
        CommandInjection,
        5,
        &[
            "wget",
            "curl",
            "fetch",
            "certutil",
            "bitsadmin",
            "powershell",
            "invoke-",
        ],
        r"\b(?:wget|curl|fetch)\b[^|;]{0,100}\bhttps?://[^|;]{0,200}(?:\||;|&&|-o\s)|\bcertutil\b.{0,40}-urlcache|\bbitsadmin\b.{0,40}/transfer|\bpowershell(?:\.exe)?\b.{0,80}\s-(?:e|enc|encodedcommand|c|command|nop|noprofile|w|windowstyle|exec|executionpolicy)\b|\binvoke-(?:expression|webrequest|restmethod|shellcode)\b|\biex\s*\(",
    ),
    r(
        "cmd-binary-path",
        CommandInjection,
        4,
        &["bin/"],
        r"(?:^|[\s;|&`'\x22(=<>{,])/(?:usr/)?(?:local/)?s?bin/[a-z0-9_.-]+|^(?:usr/)?s?bin/[a-z][\w.-]+",
    ),
    r(
        "cmd-windows",
        CommandInjection,
        4,
        &[
            "cmd", "%", "for ", "if ", "if/", "regedit", "bcd", "vssadmin", "wevtutil", "diskpart",
            "netsh", "takeown", "sc ", "schtasks", "cipher", "reg ", "net ", "wmic", "rundll32",
            "regsvr32", "mshta", "cscript", "wscript", "type ",
        ],
        r"\bcmd(?:\.exe)?\s*/[ckr]\b|%(?:systemroot|systemdrive|comspec|windir|userprofile|temp|tmp|appdata|localappdata|programdata|programfiles|allusersprofile|homedrive|homepath|public|path|username|computername|os)%|\bfor\s+/[fldr]\b|\bfor\s+(?:/[fldr]\s+)?%{1,2}\S+\s+in\s*\(|\bif\s+(?:/i\s+)?(?:not\s+)?(?:defined|exist|errorlevel|cmdextversion)\b|\bif\s+(?:not\s+)?[^\s=]{1,40}\s*==\s*[^\s=]{1,40}\s+[a-z]|\bif\s+\S.{0,60}==.{0,60}\b(?:echo|do|goto|call|set)\b|\bif\s*/i\b|\bif\s+(?:not\s+)?%\d|\bif\s+(?:/i\s+)?(?:not\s+)?\S+\s+(?:equ|neq|lss|leq|gtr|geq)\s+\S+|\)\s*do\s+(?:cmd|echo|call|set|start)\b|\b(?:rundll32|regsvr32|mshta|cscript|wscript)(?:\.exe)?\b|\bwmic\s+(?:process|os|useraccount|shadowcopy)\b|\breg\s+(?:add|query|delete)\s+hk|\bnet\s+(?:user|localgroup|share|use|view)\b|\btype\s+[a-z]:\\|\b(?:regedit|bcdboot|bcdedit|vssadmin|wevtutil|diskpart|netsh|takeown)\b(?:\.exe)?\s+/?\w|\bsc\s+(?:create|config|start|stop)\s|\bschtasks\s+/|\bcipher\s+/w",
    ),
    r(
        "cmd-shell-expansion",
        CommandInjection,
        4,
        &["$[", "$((", "<(", ">(", "[", "${"],
        r"\$\[|\$\(\(|[<>]\(\s*[a-z]|/[a-z]*\[[a-z0-9]-[a-z0-9]\][a-z]|\$\{[a-z_]+[#%:/^,]",
    ),
    r(
        "cmd-brace-list",
        CommandInjection,
        4,
        &["{"],
        r"\{,[a-z]|[a-z]\{[a-z]*,[a-z]*\}[a-z]",
    ),
    r(
        "cmd-glob-path",
        CommandInjection,
        3,
        &["?", "*"],
        r"(?:/[\w.-]*[?*][\w.?*-]*){2,}",
    ),
    r(
        "cmd-variable-command",
        CommandInjection,
        4,
        &["$", "-exec"],
        r"(?:[;&|]|^)\s*\$\{?[a-z_]\w*\}?\s+(?:\$\{?[a-z_]|-{1,2}[a-z])|\bfind\s+\S+.{0,60}\s-exec\b|\(\s*(?:ba|z|k|c|da)?sh\s*\)|\b[a-z_]\w*=[^\s;]*;\s*\$\{?[a-z_]\w*\}?(?:\s|$)",
    ),
    scoped(
        r(
            "cmd-in-header",
            CommandInjection,
            3,
            &[],
            concat!(r"^\s*['\x22]?", cmds!(), r"['\x22]?(?:\s+\S|\s*$)"),
        ),
        Scope::Headers,
    ),
    r(
        "cmd-wrapper-command",
        CommandInjection,
        3,
        &[
            "time", "nohup", "timeout", "nice", "sudo", "env", "xargs", "exec",
        ],
        concat!(
            r"(?:^|[;|&\n])\s*(?:time|nohup|timeout\s+\d+|nice|sudo|env|xargs|exec)\s+",
            cmds!(),
            r"\b"
        ),
    ),
    r(
        "cmd-glob-system-path",
        CommandInjection,
        4,
        &["?", "*"],
        r"/(?:e[?*]c|e\*|[?*]tc|et[?*]|e[?*]{2}|[?*]{3})/|(?:pa[?*]{2}wd|[?*]asswd|p[?*]sswd|/\*wd|passw[?*]|sha[?*]ow)",
    ),
    r(
        "cmd-shellshock",
        CommandInjection,
        5,
        &["()"],
        r"^\s*\(\s*\)\s*\{|\(\s*\)\s*\{\s*:\s*;?\s*\}\s*;",
    ),
    r(
        "cmd-here-string",
        CommandInjection,
        4,
        &["<<<", "<<"],
        r"<<<|<<\s*-?\s*['\x22]?eof\b",
    ),
    r(
        "cmd-bare-command",
        CommandInjection,
        2,
        &[],
        concat!(
            r"^\s*",
            cmds!(),
            r"(?:\s+-{1,2}[a-z]+\b|\s+/|\s*<<|\s*[|;]|\$\{?ifs)"
        ),
    ),
    r(
        "cmd-interpreter-inline",
        CommandInjection,
        4,
        &[
            "sh", "python", "perl", "ruby", "php", "node", "lua", "busybox",
        ],
        r"\b(?:ba|k|z|c|tc|da|a)?sh[\s,]+-c\b|\bpython[23]?\s+-c\b|\bperl\s+-e\b|\bruby\s+-e\b|\bphp\s+-r\b|\bnode\s+-e\b|\blua\s+-e\b|\bbusybox\s+[a-z-]",
    ),
    r(
        "cmd-recon",
        CommandInjection,
        3,
        &["whoami", "uname", "ifconfig", "ipconfig", "/bin/"],
        r"\bwhoami\b|\buname\s+-[a-z]+|\bifconfig\b|\bipconfig\b|/bin/(?:ba|z|k|c|da)?sh\b",
    ),
    r(
        "cmd-fork-bomb",
        CommandInjection,
        5,
        &[":", "(){", "() {"],
        r":\s*\(\s*\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:|\b\w+\s*\(\s*\)\s*\{\s*\w+\s*(?:\(\s*\))?\s*\|\s*\w+|(?:^|[\s;&|])[\w.:]+\s*\(\s*\)\s*\{[^}]*[|&][^}]*\}\s*;\s*[\w.:]+\s*(?:\(\s*\)\s*)?$",
    ),
    r(
        "cmd-alias",
        CommandInjection,
        3,
        &["alias"],
        r"\balias\s+(?:[-+]\w+\s+)*[\w.-]+\s*=\s*['\x22]?\s*\w",
    ),
    r(
        "cmd-bare-risky",
        CommandInjection,
        3,
        &[],
        r"^\s*(?:(?:/usr)?/s?bin/)?(?:wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|dash|python[23]?(?:\.\d+)?|perl|ruby|php|powershell|pwsh|certutil|busybox|socat|telnet|nmap|chmod|chown|sudo|su|crontab|useradd|env|time|nohup|ansible[\w-]*|chef-[\w-]*|cscli|pipx|perf|vi|vim|ex)\s+(?:-{1,2}[a-z]|/|https?://|\$)",
    ),
    r(
        "cmd-mail-injection",
        CommandInjection,
        4,
        &["\n", "\r"],
        r"[\n\r]\s*(?:auth\s+\w+|mail\s+from\s*:|rcpt\s+to\s*:|ehlo\s|helo\s|\.\s*[\n\r]|quit\s*$|[a-z]\d+\s+(?:uid\s+)?(?:login|select|fetch|capability|list|append|examine|logout|noop|store|copy|search|status|authenticate|expunge|subscribe|rename|quit)\b|(?:user|pass)\s+\S+\s*$)|^\n\s*(?:data|help|top|noop|rset|vrfy|expn|stat|retr|dele|uidl|apop|capa|quit|list|starttls)\b",
    ),
    r(
        "cmd-split-word",
        CommandInjection,
        3,
        &["''", "\"\"", "``", "$()", "${}", "<()", ">()", "$@"],
        r#"[a-z](?:''|""|``|\$\(\)|\$\{\}|[<>]\(\)|\$@)+[a-z]|[a-z](?:``|\$\(\)|\$\{\}|[<>]\(\))+\s"#,
    ),
    r(
        "cmd-tilde-expansion",
        CommandInjection,
        3,
        &["~+", "~-"],
        r"(?:^|[\s;|&])~[+-]\d*(?:[\s/;|&]|$)",
    ),
    r(
        "cmd-history-expansion",
        CommandInjection,
        3,
        &["!-"],
        r"(?:^|[\s;|&])!-\d+",
    ),
    r(
        "cmd-brace-word",
        CommandInjection,
        4,
        &["{"],
        r"(?:^|[\s;|&])\{[\w-]*,[\w-]*\}[a-z]",
    ),
    r(
        "cmd-variable-concat",
        CommandInjection,
        4,
        &["$"],
        r"(?:\$\{?[a-z_]\w*\}?){3,}",
    ),
    r(
        "cmd-pipe-to-shell",
        CommandInjection,
        5,
        &["|"],
        r"\|\s*(?:/usr)?(?:/bin/)?(?:ba|z|k|c|da|tc)?sh(?:\s|$|;|\|)|\|\s*(?:python[23]?|perl|ruby|php|node)\s*(?:-\s*)?$",
    ),
    r(
        "cmd-bracket-glob",
        CommandInjection,
        3,
        &["["],
        r"/[\w.-]*\[[\w/!?*^-]{1,16}\][\w.-]*(?:/|\s|$)",
    ),
    r(
        "cmd-sqlite-dot-command",
        CommandInjection,
        4,
        &[
            ".databases",
            ".tables",
            ".dump",
            ".schema",
            ".shell",
            ".system",
            ".import",
            ".output",
            ".once",
            ".read",
            ".load",
        ],
        r"(?:^|[;\n])\s*\.(?:databases|tables|dump|schema|shell|system|import|output|once|read|load)\b",
    ),
    scoped(
        r(
            "cmd-bare-tool",
            CommandInjection,
            3,
            &[],
            r#"^\s*['"]?(?:ansible(?:-[a-z]+)?|chef-[a-z]+|knife|cscli|visudo|pip[23x]|ssh-[a-z-]+|strace|ltrace|bsdtar|aptitude|apt-get|nmap|netcat|ncat|socat|crontab|useradd|usermod|userdel|iptables|systemctl|journalctl|kubectl|powershell|pwsh|certutil|bitsadmin|wmic|whoami|uname|ifconfig|ipconfig|netstat|nslookup|tcpdump|busybox|sudo|wget|tftp|lastlog|mkfs|fdisk|modprobe|insmod|rmmod|python[23]\.\d+)['"]?(?:\s*$|\s+(?:[^\n]{0,60}\s)?(?:-{1,2}[a-z]|/|~/|\.{1,2}/|[\w-]+\.[a-z]{1,4}\b))"#,
        ),
        Scope::Params,
    ),
    // Paranoia 2: a command at the start of a value with any argument; search boxes of sites
    // about system administration see these too.
    paranoid(
        scoped(
            r(
                "cmd-bare-command-argument",
                CommandInjection,
                3,
                &[],
                concat!(
                    r#"^\s*['"]?(?:ansible(?:-[a-z]+)?|chef(?:-[a-z]+)?|knife|cscli|pip[23x]?|ssh-[a-z-]+|strace|aptitude|shutdown|reboot|visudo|python[23](?:\.\d+)?)['"]?\s+[\w-]|^\s*['"]?"#,
                    cmds!(),
                    r#"['"]?\s+(?:/|~/)[\w.-]"#
                ),
            ),
            Scope::Params,
        ),
        2,
    ),
    // Paranoia 3: a single quoted letter glued to the rest of a word (`'c'url`).
    paranoid(
        r(
            "cmd-quoted-letter",
            CommandInjection,
            3,
            &["'", "\""],
            r#"(?:^|[\s;|&])(?:'[a-z]'|"[a-z]")[a-z]{2,}"#,
        ),
        3,
    ),
];
