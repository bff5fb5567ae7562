//! Where ddm's log goes: the systemd journal, with fields, when ddm runs
//! under systemd; standard error, in env_logger's format, everywhere else.
//!
//! **Which.** `--log-target auto` (the default) logs to the journal when
//! standard error *is* the journal: systemd sets `JOURNAL_STREAM` to the
//! device and inode of the stream it gave the service, and ddm compares
//! them with its own standard error (`systemd_journal_logger::connected_to_journal`).
//! `journal` and `stderr` force one. If the journal's socket
//! (`/run/systemd/journal/socket`) cannot be reached, ddm says so on
//! standard error and logs there.
//!
//! **What is logged.** The filter is env_logger's syntax (`info`,
//! `info,ddm_fs::plug=debug`): `--log-level` if given, else `RUST_LOG`, else
//! `info,fuser=warn`. The same filter serves both targets.
//!
//! **Journal fields.** Each line is sent with its priority (error 3, warn 4,
//! info 5, debug 6, trace 7), `SYSLOG_IDENTIFIER=ddm`, and the fields
//! `DRIVER=`, `DEVICE=` and `REQUEST=` where the line is about one, so that
//! `journalctl -u ddm DRIVER=keyboard` works. A log call may give them as
//! key-values (`info!(driver = name; "...")`); otherwise they are read off
//! the line, whose wording follows one convention throughout ddm (a line
//! names the driver, device path and request it is about, see
//! [`fields_of`]): `driver NAME`, a device path at the start (`/vbus/v0: ...`)
//! or in the list after the driver's name (`driver null (/null /zero) died`)
//! or after `device`, `serving` or `of`, and a request as `#N` or
//! `request N`. A line about several devices has several `DEVICE=` values.

use std::io::IsTerminal;

use log::kv::{self, Key, Value, VisitSource};
use log::{Log, Metadata, Record};

/// The filter when neither `--log-level` nor `RUST_LOG` says.
pub const DEFAULT_FILTER: &str = "info,fuser=warn";

/// Where the log goes (`ddm --log-target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The journal when standard error is connected to it, else standard error.
    Auto,
    /// The systemd journal, with fields.
    Journal,
    /// Standard error, as text.
    Stderr,
}

/// Where the log went, and why not to the journal if it was asked for.
#[derive(Debug)]
pub enum Chosen {
    /// The journal.
    Journal,
    /// Standard error.
    Stderr,
    /// Standard error, because the journal could not be reached.
    StderrNoJournal(std::io::Error),
}

/// Checks a filter given with `--log-level`: comma-separated directives,
/// each `LEVEL` or `TARGET=LEVEL` (levels: off, error, warn, info, debug,
/// trace; a target is a module path such as `ddm_fs::plug`). For clap's
/// `value_parser`.
pub fn parse_filter(spec: &str) -> Result<String, String> {
    if spec.trim().is_empty() {
        return Err("give a level (error, warn, info, debug, trace, off) or TARGET=LEVEL directives".into());
    }
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = d.rsplit_once('=').map_or((None, d), |(t, l)| (Some(t), l));
        if level.parse::<log::LevelFilter>().is_err() {
            return Err(format!("{level:?} in {d:?} is not a level: use off, error, warn, info, debug or trace"));
        }
        if let Some(t) = target {
            if t.is_empty() || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                return Err(format!("{t:?} in {d:?} is not a module path (like ddm_fs::plug)"));
            }
        }
    }
    Ok(spec.to_owned())
}

/// Sets up the log: `filter` (else `RUST_LOG`, else [`DEFAULT_FILTER`]) to
/// `target`.
pub fn init(filter: Option<&str>, target: Target) -> Chosen {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if let Some(f) = filter {
        builder.parse_filters(f);
    }
    let journal = match target {
        Target::Stderr => false,
        Target::Journal => true,
        Target::Auto => systemd_journal_logger::connected_to_journal(),
    };
    if !journal {
        builder.init();
        return Chosen::Stderr;
    }
    match systemd_journal_logger::JournalLog::new() {
        Ok(j) => {
            let filter = builder.build();
            log::set_max_level(filter.filter());
            let logger = JournalFields { journal: j.with_syslog_identifier("ddm".into()), filter };
            match log::set_boxed_logger(Box::new(logger)) {
                Ok(()) => Chosen::Journal,
                Err(_) => Chosen::Stderr,
            }
        }
        Err(e) => {
            builder.init();
            Chosen::StderrNoJournal(e)
        }
    }
}

/// Whether standard error is a terminal (for messages meant for a person).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The journal logger, with env_logger's filter, adding `DRIVER=`,
/// `DEVICE=` and `REQUEST=` to each line that is about one.
struct JournalFields {
    journal: systemd_journal_logger::JournalLog,
    filter: env_logger::Logger,
}

impl Log for JournalFields {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let text = record.args().to_string();
        let mut given = Given::default();
        let _ = record.key_values().visit(&mut given);
        let inferred: Vec<(&'static str, String)> =
            fields_of(&text).into_iter().filter(|(k, _)| !given.has(k)).map(|(k, v)| (k.journal_name(), v)).collect();
        let both = Both { given: record.key_values(), inferred: &inferred };
        let rebuilt = Record::builder()
            .args(*record.args())
            .level(record.level())
            .target(record.target())
            .module_path(record.module_path())
            .file(record.file())
            .line(record.line())
            .key_values(&both)
            .build();
        self.journal.log(&rebuilt);
    }

    fn flush(&self) {
        self.journal.flush();
    }
}

/// The record's own key-values, then the inferred ones.
struct Both<'a, 'k> {
    given: &'a dyn kv::Source,
    inferred: &'a [(&'k str, String)],
}

impl kv::Source for Both<'_, '_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        self.given.visit(visitor)?;
        for (k, v) in self.inferred {
            visitor.visit_pair(Key::from_str(k), Value::from(v.as_str()))?;
        }
        Ok(())
    }
}

/// Which of the three fields a record gives itself.
#[derive(Default)]
struct Given {
    driver: bool,
    device: bool,
    request: bool,
}

impl Given {
    fn has(&self, f: &Field) -> bool {
        match f {
            Field::Driver => self.driver,
            Field::Device => self.device,
            Field::Request => self.request,
        }
    }
}

impl<'kvs> VisitSource<'kvs> for Given {
    fn visit_pair(&mut self, key: Key<'kvs>, _: Value<'kvs>) -> Result<(), kv::Error> {
        match key.as_str().to_ascii_lowercase().as_str() {
            "driver" => self.driver = true,
            "device" => self.device = true,
            "request" => self.request = true,
            _ => {}
        }
        Ok(())
    }
}

/// A journal field ddm adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `DRIVER=`: the driver instance's name.
    Driver,
    /// `DEVICE=`: a node's path below the mount, with a leading `/`.
    Device,
    /// `REQUEST=`: a request id.
    Request,
}

impl Field {
    /// The field's name in the journal.
    pub fn journal_name(self) -> &'static str {
        match self {
            Field::Driver => "DRIVER",
            Field::Device => "DEVICE",
            Field::Request => "REQUEST",
        }
    }
}

/// A driver name: what manifests allow, and `name-2` for a second instance.
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A device path's characters (`/pci/0000:00:03.0`, `/vbus/v0`), up to a
/// separator.
fn path_of(s: &str) -> Option<String> {
    let p: String = s.chars().take_while(|c| !c.is_whitespace() && !matches!(c, ')' | ',' | ';' | '(')).collect();
    let p = p.trim_end_matches([':', '.']);
    (p.len() > 1 && p.starts_with('/') && !p.contains("//")).then(|| p.to_owned())
}

/// The fields a log line is about, read off its words (see the module
/// documentation): `driver NAME`; a device path that opens the line, in the
/// parenthesised list after the driver's name, or after `device `,
/// `serving ` or ` of `; a request as `#N` or `request N`.
pub fn fields_of(text: &str) -> Vec<(Field, String)> {
    let mut out = Vec::new();
    let mut driver_end = None;
    if let Some(at) = word_at(text, "driver ") {
        let rest = &text[at + "driver ".len()..];
        let name: String = rest.chars().take_while(|c| name_char(*c)).collect();
        if !name.is_empty() {
            driver_end = Some(at + "driver ".len() + name.len());
            out.push((Field::Driver, name));
        }
    }
    let mut devices: Vec<String> = Vec::new();
    if let Some(p) = path_of(text) {
        devices.push(p);
    }
    if let Some(end) = driver_end {
        if let Some(list) = text[end..].strip_prefix(" (") {
            let list = list.split(')').next().unwrap_or("");
            devices.extend(list.split_whitespace().filter_map(path_of));
        }
    }
    for lead in ["device ", "serving ", " of "] {
        let mut from = 0;
        while let Some(i) = text[from..].find(lead) {
            let start = from + i + lead.len();
            if let Some(p) = path_of(&text[start..]) {
                devices.push(p);
            }
            from = start;
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for d in devices {
        if seen.insert(d.clone()) {
            out.push((Field::Device, d));
        }
    }
    if let Some(id) = request_of(text) {
        out.push((Field::Request, id));
    }
    out
}

/// Where `word` starts in `text` at a word boundary.
fn word_at(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find(word) {
        let at = from + i;
        if at == 0 || !text[..at].ends_with(|c: char| c.is_ascii_alphanumeric()) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// A request id: `#N`, or the number after `request `.
fn request_of(text: &str) -> Option<String> {
    let digits = |s: &str| -> Option<String> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        (!d.is_empty()).then_some(d)
    };
    let mut from = 0;
    while let Some(i) = text[from..].find('#') {
        if let Some(d) = digits(&text[from + i + 1..]) {
            return Some(d);
        }
        from += i + 1;
    }
    let at = word_at(text, "request ")?;
    digits(&text[at + "request ".len()..])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f(text: &str) -> Vec<(&'static str, String)> {
        fields_of(text).into_iter().map(|(k, v)| (k.journal_name(), v)).collect()
    }

    fn kv(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn the_lines_ddm_writes_give_their_fields() {
        // supervise.rs, on a death.
        assert_eq!(
            f("driver null (/null /zero) died: killed by signal 11 (SIGSEGV); nothing in flight; restarting in 0 ms"),
            kv(&[("DRIVER", "null"), ("DEVICE", "/null"), ("DEVICE", "/zero")])
        );
        // A hang: the request that was not answered.
        assert_eq!(
            f("driver stall: open #17 unanswered after 3001 ms; killing it"),
            kv(&[("DRIVER", "stall"), ("REQUEST", "17")])
        );
        // interrupt.rs.
        assert_eq!(
            f("driver keyboard: caller 4242 of request 9 was signalled; answering EINTR"),
            kv(&[("DRIVER", "keyboard"), ("REQUEST", "9")])
        );
        // perms.rs and plug.rs: the device opens the line.
        assert_eq!(f("/zero: now 0600 0:0"), kv(&[("DEVICE", "/zero")]));
        assert_eq!(
            f("/vbus/v0: vbus 1234:0001 matches driver vdrv"),
            kv(&[("DRIVER", "vdrv"), ("DEVICE", "/vbus/v0")])
        );
        assert_eq!(f("chmod/chown of /pci/0000:00:03.0 not saved"), kv(&[("DEVICE", "/pci/0000:00:03.0")]));
        // register.rs.
        assert_eq!(f("driver vbus: serving /vbus/ctl"), kv(&[("DRIVER", "vbus"), ("DEVICE", "/vbus/ctl")]));
        assert_eq!(f("driver ramdisk-2: device /ram1 is inode 7"), kv(&[("DRIVER", "ramdisk-2"), ("DEVICE", "/ram1")]));
    }

    #[test]
    fn lines_about_nothing_in_particular_have_no_fields() {
        assert!(f("this kernel's FUSE has no passthrough: block devices are served through their drivers").is_empty());
        assert!(f("SIGTERM: stopping drivers and unmounting").is_empty());
        // "drivers" is not "driver NAME"; a '#' without digits is no request.
        assert!(f("stopping drivers # now").is_empty());
    }

    #[test]
    fn level_filters_are_checked() {
        for ok in ["debug", "info,fuser=warn", "ddm_fs::plug=trace", "off"] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "loud", "ddm_fs", "ddm_fs=loud", "a b=info", "=info"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
