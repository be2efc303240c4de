//! Parsers of one instruction's value, each as BuildKit reads it: `--chmod` and `--chown`, remote
//! sources, `EXPOSE` ports, `STOPSIGNAL`, `HEALTHCHECK` options, and the Go formats BuildKit writes into
//! the history (durations, `%q`).

use serde_json::{Map, Value as Json};

use crate::assemble::Owner;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum BadChmod {
    Invalid,
    /// `u+x`: BuildKit takes it, `CopyStep` has no room for it.
    Symbolic,
}

pub(super) fn parse_chmod(chmod: &str) -> Result<Option<u32>, BadChmod> {
    if chmod.is_empty() {
        return Ok(None);
    }
    if chmod.starts_with(|c: char| c.is_ascii_digit()) {
        return match u32::from_str_radix(chmod, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(Some(mode)),
            _ => Err(BadChmod::Invalid),
        };
    }
    let symbolic = chmod.chars().all(|c| "ugoarwxXst+-=,".contains(c)) && chmod.contains(['+', '-', '=']);
    Err(if symbolic { BadChmod::Symbolic } else { BadChmod::Invalid })
}

/// `UID[:GID]`, numeric or `root` (BuildKit reads `root` as 0 without the base image's files).
pub(in crate::assemble) fn parse_owner(chown: &str) -> Option<Owner> {
    let id = |id: &str| match id {
        "root" => Some(0),
        _ if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => {
            id.parse::<i32>().ok().and_then(|id| u32::try_from(id).ok())
        }
        _ => None,
    };
    let (user, group) = match chown.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (chown, None),
    };
    let uid = id(user)?;
    let gid = match group {
        Some(group) => id(group)?,
        None => uid,
    };
    Some(Owner { uid, gid })
}

pub(super) enum Remote {
    Url,
    Git,
}

/// Whether a COPY/ADD source is remote, as BuildKit tells (`ParseGitRef`, `isHTTPSource`).
pub(super) fn remote(source: &str) -> Option<Remote> {
    let scheme = source.split_once("://").map(|(scheme, _)| scheme);
    if let Some(scheme) = scheme.filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())) {
        let path = source.split(['?', '#']).next().unwrap_or(source);
        return match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" if !path.ends_with(".git") => Some(Remote::Url),
            "http" | "https" | "git" | "ssh" => Some(Remote::Git),
            _ => None,
        };
    }
    // scp-like: `git@github.com:org/repo.git`.
    let (user, rest) = source.split_once('@')?;
    let (host, _) = rest.split_once(':')?;
    let word =
        |s: &str, extra: char| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == extra);
    (word(user, '_') && word(host, '.')).then_some(Remote::Git)
}

/// One `EXPOSE` word as `port/proto` entries (BuildKit's `parsePort`): `80`, `80/udp`, `8000-8002`, and
/// the `[ip:]hostPort:port` form it still accepts (the host part is checked, then dropped).
pub(super) fn parse_port(written: &str) -> Result<Vec<String>, String> {
    let (rest, container) = written.rsplit_once(':').unwrap_or(("", written));
    let (ip, host) = rest.rsplit_once(':').unwrap_or(("", rest));
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("invalid port: {written:?}: no port specified"));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_string(),
        lower @ ("tcp" | "udp" | "sctp") => lower.to_string(),
        _ => return Err(format!("invalid port: {written:?}: invalid proto: {proto}")),
    };
    let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let (start, end) = port_range(port).ok_or_else(|| format!("invalid containerPort: {port}"))?;
    if !host.is_empty() {
        let (host_start, host_end) = port_range(host).ok_or_else(|| format!("invalid hostPort: {host}"))?;
        if end - start != host_end - host_start && end != start {
            return Err(format!("invalid ranges specified for container and host Ports: {port} and {host}"));
        }
    }
    Ok((start..=end).map(|port| format!("{port}/{proto}")).collect())
}

fn port_range(range: &str) -> Option<(u32, u32)> {
    let number = |n: &str| n.parse::<i64>().ok().and_then(|n| u32::try_from(n).ok()).filter(|n| *n <= 65535);
    match range.split_once('-') {
        Some((start, end)) if start != end => Some((number(start)?, number(end)?)).filter(|(s, e)| s <= e),
        Some((start, _)) => number(start).map(|s| (s, s)),
        None => number(range).map(|s| (s, s)),
    }
}

/// A STOPSIGNAL BuildKit takes (`signal.ParseSignal` on Linux): a non-zero number or a signal's name.
pub(super) fn is_signal(signal: &str) -> bool {
    if let Ok(number) = signal.parse::<i64>() {
        return number != 0;
    }
    const NAMES: [&str; 36] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
    ];
    let upper = signal.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |prefix: &str, most: u32| {
        name.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (1..=most).contains(&n))
    };
    NAMES.contains(&name) || realtime("RTMIN+", 15) || realtime("RTMAX-", 14)
}

#[derive(Default)]
pub(super) struct Healthcheck {
    pub(super) test: Vec<String>,
    pub(super) interval: u64,
    pub(super) timeout: u64,
    pub(super) start_period: u64,
    pub(super) start_interval: u64,
    pub(super) retries: u32,
}

impl Healthcheck {
    /// The config's `Healthcheck` object; Docker omits the zero fields ("inherit").
    pub(super) fn json(&self) -> Json {
        let mut object = Map::new();
        object.insert("Test".into(), Json::from(self.test.clone()));
        let durations = [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ];
        for (key, nanoseconds) in durations.into_iter().filter(|(_, n)| *n != 0) {
            object.insert(key.into(), Json::from(nanoseconds));
        }
        if self.retries != 0 {
            object.insert("Retries".into(), Json::from(self.retries));
        }
        Json::Object(object)
    }

    /// As BuildKit writes it into the history: Go's `%+v` of its struct.
    pub(super) fn go_format(&self) -> String {
        format!(
            "{{Test:[{}] Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
            self.test.join(" "),
            go_duration(self.interval),
            go_duration(self.timeout),
            go_duration(self.start_period),
            go_duration(self.start_interval),
            self.retries
        )
    }
}

/// A HEALTHCHECK duration flag in nanoseconds (BuildKit's `parseOptInterval`): 0 when empty or zero,
/// else at least 1ms.
pub(super) fn interval(name: &str, value: &str) -> Result<u64, String> {
    if value.is_empty() {
        return Ok(0);
    }
    match go_parse_duration(value)? {
        0 => Ok(0),
        nanoseconds if nanoseconds < 1_000_000 => Err(format!("Interval {name:?} cannot be less than 1ms")),
        nanoseconds => Ok(nanoseconds.unsigned_abs()),
    }
}

pub(super) fn retries(value: &str) -> Result<u32, String> {
    let retries = value.parse::<i32>().map_err(|_| format!("--retries: {value:?} is not a number"))?;
    u32::try_from(retries).map_err(|_| format!("--retries cannot be negative ({retries})"))
}

/// Go's `time.ParseDuration`, in nanoseconds: `1h2m3.5s`, `300ms`, `-1.5h`.
fn go_parse_duration(text: &str) -> Result<i64, String> {
    let bad = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    fn split_digits(s: &str) -> (&str, &str) {
        s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (whole, after) = split_digits(rest);
        let (fraction, after) = after.strip_prefix('.').map_or(("", after), split_digits);
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad());
        }
        let (unit, after) = after.split_at(after.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after.len()));
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
        // Digits past the 20th are below a nanosecond for any unit.
        let fraction = fraction.get(..fraction.len().min(20)).unwrap_or_default();
        let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| bad())? };
        let fraction_ns = fraction_value * scale / 10u128.pow(fraction.len() as u32);
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction_ns))
            .and_then(|v| v.checked_add(total))
            .ok_or_else(bad)?;
        if total > u128::from(i64::MAX.unsigned_abs()) + u128::from(negative) {
            return Err(bad());
        }
        rest = after;
    }
    let total = i128::try_from(total).map_err(|_| bad())?;
    i64::try_from(if negative { -total } else { total }).map_err(|_| bad())
}

/// Go's `time.Duration.String`: `1h0m0s`, `1m30s`, `1.5s`, `500ms`, `0s`.
fn go_duration(nanoseconds: u64) -> String {
    let with_fraction = |value: u64, digits: u32| {
        let scale = 10u64.pow(digits);
        let (whole, fraction) = (value / scale, value % scale);
        if fraction == 0 {
            return whole.to_string();
        }
        let fraction = format!("{fraction:0width$}", width = digits as usize);
        format!("{whole}.{}", fraction.trim_end_matches('0'))
    };
    match nanoseconds {
        0 => "0s".into(),
        ns if ns < 1_000 => format!("{ns}ns"),
        ns if ns < 1_000_000 => format!("{}µs", with_fraction(ns, 3)),
        ns if ns < 1_000_000_000 => format!("{}ms", with_fraction(ns, 6)),
        ns => {
            let seconds = with_fraction(ns % 60_000_000_000, 9);
            let minutes = ns / 60_000_000_000;
            match (minutes / 60, minutes % 60) {
                (0, 0) => format!("{seconds}s"),
                (0, minutes) => format!("{minutes}m{seconds}s"),
                (hours, minutes) => format!("{hours}h{minutes}m{seconds}s"),
            }
        }
    }
}

/// Go's `%q` of a `[]string`, as BuildKit writes CMD and ENTRYPOINT into the history: `["a" "b"]`.
pub(super) fn go_quoted(args: &[String]) -> String {
    let quoted: Vec<String> = args.iter().map(|arg| go_quote(arg)).collect();
    format!("[{}]", quoted.join(" "))
}

fn go_quote(text: &str) -> String {
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => quoted.extend(['\\', c]),
            '\u{7}' => quoted.push_str("\\a"),
            '\u{8}' => quoted.push_str("\\b"),
            '\u{c}' => quoted.push_str("\\f"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{b}' => quoted.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => quoted.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c == ' ' || !(c.is_control() || c.is_whitespace()) => quoted.push(c),
            c if u32::from(c) < 0x10000 => quoted.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => quoted.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats_for_the_history() {
        let durations = [
            (0, "0s"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (500_000_000, "500ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_000_000_001, "1h2m3.000000001s"),
        ];
        for (nanoseconds, text) in durations {
            assert_eq!(go_duration(nanoseconds), text);
        }
        let parsed =
            [("1h2m3.5s", 3_723_500_000_000), ("300ms", 300_000_000), ("1.5us", 1_500), ("-2s", -2_000_000_000)];
        for (text, nanoseconds) in parsed {
            assert_eq!(go_parse_duration(text), Ok(nanoseconds), "{text}");
        }
        for bad in ["", "s", "1", ".s", "1.5.5s", "99999999999999999999h", "1x"] {
            assert!(go_parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(go_quote("a \"b\" \\ \n\t\u{1}\u{a0}é"), "\"a \\\"b\\\" \\\\ \\n\\t\\x01\\u00a0é\"");
    }

    #[test]
    fn remote_sources_signals_and_ports() {
        for (source, is_remote) in [
            ("https://example.com/a", true),
            ("ssh://git@host/r", true),
            ("git@github.com:o/r", true),
            ("github.com/o/r", false),
            ("ftp://example.com/a", false),
            ("a@b", false),
            ("dir/file:1", false),
        ] {
            assert_eq!(remote(source).is_some(), is_remote, "{source}");
        }
        for (signal, valid) in
            [("SIGTERM", true), ("term", true), ("9", true), ("RTMIN+3", true), ("SIGRTMAX-15", false)]
        {
            assert_eq!(is_signal(signal), valid, "{signal}");
        }
        assert_eq!(parse_port("[::1]:80:80"), Ok(vec!["80/tcp".to_string()]));
        assert!(parse_port("300.1.1.1:80:80").is_err());
        assert!(parse_port("8080-8081:80-89").is_err());
    }
}
