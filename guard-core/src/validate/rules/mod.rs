//! The detection rules: one table per family, each rule a category, a weight, the literals that must occur
//! for it to be worth running (the prefilter), and a `regex` pattern (linear time, no
//! backtracking) over the normalised, lower-cased text.
//!
//! Weights: 5 = a signature strong enough to block alone; 3–4 = suspicious enough for AI triage;
//! 1–2 = weak evidence that only counts together with more. Rules aim at the intent of the seed's
//! 25 patterns without their false positives (a trailing `;`, jQuery `$(…)`, "select" in prose).

use super::Category;

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
    /// Everything but a markup (XML) body, where tags are expected.
    NotMarkup,
    /// Parameters and bodies: not the path, headers or cookies (which have rules of their own).
    Params,
}

/// One detection rule.
#[derive(Debug, Clone, Copy)]
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
    /// The lowest paranoia level (`[validator] paranoia`) at which the rule runs.
    pub level: u8,
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
        level: 1,
    }
}

const fn scoped(rule: Rule, scope: Scope) -> Rule {
    Rule { scope, ..rule }
}

/// A rule that only runs at paranoia `level` and above: it also matches some ordinary traffic.
const fn paranoid(rule: Rule, level: u8) -> Rule {
    Rule { level, ..rule }
}

/// Shell commands attackers run first (reconnaissance, download, reverse shells).
macro_rules! cmds {
    () => {
        "(?:(?:/usr)?(?:/local)?/s?bin/)?(?:cat|tac|nl|ls|dir|id|whoami|uname|wget|curl|fetch|nc|ncat|netcat|socat|telnet|ssh|scp|ftp|tftp|bash|sh|zsh|ksh|csh|tcsh|dash|ash|busybox|python[23]?|perl|ruby|php|node|lua|irb|nmap|ping|nslookup|dig|traceroute|chmod|chown|rm|mv|cp|echo|printf|kill|killall|pkill|ps|sleep|base64|xxd|od|awk|gawk|sed|grep|egrep|find|head|tail|more|less|env|printenv|export|eval|exec|sudo|su|crontab|ifconfig|ipconfig|netstat|ss|systeminfo|powershell|pwsh|cmd|certutil|bitsadmin|wmic|tasklist|taskkill|mkfifo|xterm|tar|gzip|gunzip|zip|unzip|dd|xargs|tee|touch|mknod|ln|vi|vim|nano|pwd|hostname|useradd|passwd|shutdown|reboot|halt|systemctl|service|apt|apt-get|yum|dnf|pip|npm|gcc|cc|make|chattr|setfacl|openssl|rev|expr|time|nohup|timeout|strings|file|stat|diff|cut|sort|uniq|wc|top|w|who|last|lsof|pgrep|mount|umount|fdisk|iptables|alias|source|history|jobs|bg|fg|at|batch|net|reg|type|start|call|set|del|copy|move|ren|attrib|icacls|schtasks|sc|route|arp|getent|groups|locate|whereis|which|man|ldd|strace|gdb|docker|kubectl|mysql|psql|sqlite3|redis-cli|mongo|cd|comm|base32|visudo|iwr|irm|iex|regedit|bcdboot|bcdedit|vssadmin|wevtutil|diskpart|netsh|takeown|tr|ll|gcc\\d*|ansible[\\w-]*|chef-[\\w-]*|knife|puppet|salt|lastlog\\w*|rmt(?:-\\w+)?|uconv|adduser|userdel|usermod|perf|trap|date|aptitude|cscli|pipx|pip\\d|bsdtar|ssh-[a-z-]+|aa-[a-z-]+|ltrace|journalctl|tcpdump|modprobe|insmod|rmmod|mkfs(?:\\.\\w+)?|iwmi|gwmi|icm|saps)"
    };
}

mod code;
mod command;
mod files;
mod other;
mod sqli;
mod xss;

/// Every rule, family by family. Order only matters for which finding of a value is listed first.
pub fn all() -> impl Iterator<Item = &'static Rule> {
    [
        sqli::RULES,
        xss::RULES,
        files::RULES,
        command::RULES,
        code::RULES,
        other::RULES,
    ]
    .into_iter()
    .flatten()
}
