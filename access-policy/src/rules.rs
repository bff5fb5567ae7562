//! Rules: the default owner, group and mode of every node in the tree.
//!
//! A rules file has one rule per line, in the spirit of FreeBSD's
//! `devfs.rules` and udev rules (the full description is `ddf.rules(5)`):
//!
//! ```text
//! # [KIND] PATTERN        OWNER:GROUP   MODE
//! keyboard*               root:input    0640
//! device pci/**           root:root     0600
//! block  ram*             root:disk     0660
//! bus    pci              root:wheel    -
//! ```
//!
//! - `KIND` is optional: `bus`, `device` (a character or block device),
//!   `char` or `block`. Without it the rule applies to every kind of node. A
//!   line with four fields has a kind; a line with three does not.
//! - `PATTERN` is a [`Pattern`] on the path below the mount root.
//! - `OWNER:GROUP`: each side is a name (looked up in the system user or group
//!   database when the file is read), a number, or `-` (leave as decided by
//!   earlier rules). A lone `-` is `-:-`.
//! - `MODE`: octal permission bits, at most `07777`, or `-`.
//! - `#` at the start of a field begins a comment up to the end of the line.
//!
//! **Later rules win**, field by field: the owner of a node is the owner of
//! the last matching rule that sets one, and likewise for group and mode.
//! File rules come after the built-in rules ([`Policy::builtin`]), so they
//! override them.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use log::warn;
use nix::unistd::{Group, User};
use thiserror::Error;

use crate::pattern::{split_path, Pattern};
use crate::{NodeKind, Perm};

/// What went wrong while reading rules.
#[derive(Debug, Error)]
pub enum RulesError {
    /// The rules file could not be read.
    #[error("cannot read rules file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A line does not follow the syntax.
    #[error("{}:{line}: expected {expected}, found {found}", file.display())]
    Syntax {
        /// The file (or the name given to [`Policy::add_str`]).
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What the parser expected, in words.
        expected: String,
        /// What it found instead.
        found: Found,
    },
    /// An owner name is not in the user database.
    #[error("{}:{line}: no user named {name:?} (use a known name or a number)", file.display())]
    UnknownUser {
        /// The file.
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The name as written.
        name: String,
    },
    /// A group name is not in the group database.
    #[error("{}:{line}: no group named {name:?} (use a known name or a number)", file.display())]
    UnknownGroup {
        /// The file.
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The name as written.
        name: String,
    },
    /// Looking a user name up failed (not: the name is unknown).
    #[error("{}:{line}: cannot look up user {name:?}", file.display())]
    LookupUser {
        /// The file.
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The name as written.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Looking a group name up failed (not: the name is unknown).
    #[error("{}:{line}: cannot look up group {name:?}", file.display())]
    LookupGroup {
        /// The file.
        file: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// The name as written.
        name: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// What the rules parser found where it expected something else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// This text (a field, or part of one).
    Text(String),
    /// Nothing: the line ended.
    EndOfLine,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Text(t) => write!(f, "{t:?}"),
            Found::EndOfLine => f.write_str("end of line"),
            Found::InvalidUtf8 => f.write_str("bytes that are not UTF-8"),
        }
    }
}

/// Which kinds of node a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindFilter {
    /// Every node (no keyword).
    Any,
    /// Buses (`bus`).
    Bus,
    /// Character and block devices (`device`).
    Device,
    /// Character devices (`char`).
    Char,
    /// Block devices (`block`).
    Block,
}

impl KindFilter {
    /// Whether a node of `kind` is subject to the rule.
    pub fn admits(self, kind: NodeKind) -> bool {
        match (self, kind) {
            (KindFilter::Any, _) => true,
            (KindFilter::Bus, NodeKind::Bus) => true,
            (KindFilter::Bus, NodeKind::CharDevice | NodeKind::BlockDevice) => false,
            (KindFilter::Device, NodeKind::Bus) => false,
            (KindFilter::Device, NodeKind::CharDevice | NodeKind::BlockDevice) => true,
            (KindFilter::Char, NodeKind::CharDevice) => true,
            (KindFilter::Char, NodeKind::Bus | NodeKind::BlockDevice) => false,
            (KindFilter::Block, NodeKind::BlockDevice) => true,
            (KindFilter::Block, NodeKind::Bus | NodeKind::CharDevice) => false,
        }
    }

    fn from_keyword(word: &str) -> Option<KindFilter> {
        match word {
            "bus" => Some(KindFilter::Bus),
            "device" => Some(KindFilter::Device),
            "char" => Some(KindFilter::Char),
            "block" => Some(KindFilter::Block),
            _ => None,
        }
    }

    /// The keyword, or `None` for [`KindFilter::Any`].
    pub fn keyword(self) -> Option<&'static str> {
        match self {
            KindFilter::Any => None,
            KindFilter::Bus => Some("bus"),
            KindFilter::Device => Some("device"),
            KindFilter::Char => Some("char"),
            KindFilter::Block => Some("block"),
        }
    }
}

/// Where a rule comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in rules.
    Builtin,
    /// A rules file (or text given to [`Policy::add_str`]).
    File {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Builtin => f.write_str("built-in"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// One rule: which nodes, and what it sets. `None` fields (`-`) leave the
/// value to earlier rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Kinds of node the rule applies to.
    pub kind: KindFilter,
    /// The path pattern.
    pub pattern: Pattern,
    /// Owner uid, if the rule sets it.
    pub uid: Option<u32>,
    /// Group gid, if the rule sets it.
    pub gid: Option<u32>,
    /// Permission bits (at most `0o7777`), if the rule sets them.
    pub mode: Option<u32>,
    /// Where the rule was written.
    pub origin: Origin,
}

impl Rule {
    /// Whether the rule applies to a node of `kind` at `path` (split into
    /// segments).
    fn applies(&self, segments: &[&str], kind: NodeKind) -> bool {
        self.kind.admits(kind) && self.pattern.matches_segments(segments)
    }
}

/// Prints the rule in rules-file syntax, with numeric ids.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn id(v: Option<u32>) -> String {
            v.map_or_else(|| "-".to_owned(), |v| v.to_string())
        }
        let mode = self.mode.map_or_else(|| "-".to_owned(), |m| format!("{m:04o}"));
        let pattern = escape_comment(self.pattern.as_str());
        if let Some(k) = self.kind.keyword() {
            write!(f, "{k:<6} ")?;
        }
        write!(f, "{pattern:<16} {}:{} {mode}", id(self.uid), id(self.gid))
    }
}

/// A pattern that starts with `#` must be written `\#` in a file.
fn escape_comment(pattern: &str) -> String {
    if pattern.starts_with('#') {
        format!("\\{pattern}")
    } else {
        pattern.to_owned()
    }
}

/// An ordered list of rules: the built-in ones, then those of each file added.
///
/// `Display` prints the whole policy in rules-file syntax, each rule
/// followed by a comment saying where it comes from.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// The built-in rules, in order; see [`Policy::builtin`].
const BUILTIN: &[(KindFilter, &str, &str, u32)] = &[
    (KindFilter::Bus, "/", "root", 0o755),
    (KindFilter::Bus, "**", "root", 0o755),
    (KindFilter::Device, "**", "root", 0o600),
    (KindFilter::Block, "**", "disk", 0o660),
    (KindFilter::Device, "null", "root", 0o666),
    (KindFilter::Device, "zero", "root", 0o666),
    (KindFilter::Device, "**/keyboard*", "input", 0o640),
    (KindFilter::Device, "**/input*/event*", "input", 0o640),
];

impl Policy {
    /// The built-in rules, so that `ddm` needs no file. In order (later wins):
    ///
    /// ```text
    /// bus     /              root:root   0755   # the mount root
    /// bus     **             root:root   0755
    /// device  **             root:root   0600
    /// block   **             root:disk   0660
    /// device  null           root:root   0666
    /// device  zero           root:root   0666
    /// device  **/keyboard*   root:input  0640
    /// device  **/input*/event*  root:input  0640   # evdev nodes, as the kernel's
    /// ```
    ///
    /// If the group `disk` or `input` does not exist on this machine (or the
    /// lookup fails), gid 0 is used instead and a warning is logged: the
    /// built-in rules never fail.
    pub fn builtin() -> Policy {
        Policy::builtin_with(|name| Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())))
    }

    /// [`builtin`](Self::builtin) with a given group lookup (for tests).
    pub(crate) fn builtin_with(lookup_group: impl Fn(&str) -> nix::Result<Option<u32>>) -> Policy {
        let gid_of = |name: &str| -> u32 {
            if name == "root" {
                return 0;
            }
            match lookup_group(name) {
                Ok(Some(gid)) => gid,
                Ok(None) => {
                    warn!("built-in rules: no group named {name:?} on this system; using gid 0 instead");
                    0
                }
                Err(e) => {
                    warn!("built-in rules: cannot look up group {name:?} ({e}); using gid 0 instead");
                    0
                }
            }
        };
        let mut rules = Vec::with_capacity(BUILTIN.len());
        for &(kind, pattern, group, mode) in BUILTIN {
            match Pattern::parse(pattern) {
                Ok(pattern) => rules.push(Rule {
                    kind,
                    pattern,
                    uid: Some(0),
                    gid: Some(gid_of(group)),
                    mode: Some(mode),
                    origin: Origin::Builtin,
                }),
                // Cannot happen (a unit test parses every built-in pattern);
                // never worth stopping ddm for.
                Err(e) => warn!("built-in rules: {e}; rule skipped"),
            }
        }
        Policy { rules }
    }

    /// The built-in rules followed by those of the file at `path`.
    pub fn with_file(path: impl AsRef<Path>) -> Result<Policy, RulesError> {
        let mut policy = Policy::builtin();
        policy.add_file(path)?;
        Ok(policy)
    }

    /// Appends the rules of the file at `path`, after all rules so far (so
    /// they win over them). On error the policy is unchanged.
    pub fn add_file(&mut self, path: impl AsRef<Path>) -> Result<(), RulesError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| RulesError::Read { path: path.to_owned(), source })?;
        self.add_bytes(path, &bytes)
    }

    /// Appends rules given as text; `name` stands for the file name in
    /// errors and in [`Origin`]. On error the policy is unchanged.
    pub fn add_str(&mut self, name: &str, text: &str) -> Result<(), RulesError> {
        self.add_bytes(Path::new(name), text.as_bytes())
    }

    fn add_bytes(&mut self, file: &Path, bytes: &[u8]) -> Result<(), RulesError> {
        let mut parsed = Vec::new();
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let syntax = |expected: &str, found: Found| RulesError::Syntax {
                file: file.to_owned(),
                line,
                expected: expected.to_owned(),
                found,
            };
            let text = std::str::from_utf8(raw).map_err(|_| syntax("UTF-8 text", Found::InvalidUtf8))?;
            if let Some(rule) = parse_line(text, file, line)? {
                parsed.push(rule);
            }
        }
        self.rules.extend(parsed);
        Ok(())
    }

    /// All rules in order (built-in first); the last matching one wins.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Owner, group and mode for the node of `kind` at `path` (below the
    /// mount root, `/`-separated; `""` is the root). Each field comes from the
    /// last matching rule that sets it; a field no rule sets (possible only
    /// when built-in rules were not used) is `0` for ids, and `0755` for
    /// buses or `0600` for devices.
    pub fn perm_for(&self, path: &str, kind: NodeKind) -> Perm {
        let segments: Vec<&str> = split_path(path).collect();
        let (mut uid, mut gid, mut mode) = (None, None, None);
        for rule in self.rules.iter().rev() {
            let useful = (uid.is_none() && rule.uid.is_some())
                || (gid.is_none() && rule.gid.is_some())
                || (mode.is_none() && rule.mode.is_some());
            if !useful || !rule.applies(&segments, kind) {
                continue;
            }
            uid = uid.or(rule.uid);
            gid = gid.or(rule.gid);
            mode = mode.or(rule.mode);
            if uid.is_some() && gid.is_some() && mode.is_some() {
                break;
            }
        }
        let fallback_mode = match kind {
            NodeKind::Bus => 0o755,
            NodeKind::CharDevice | NodeKind::BlockDevice => 0o600,
        };
        Perm { uid: uid.unwrap_or(0), gid: gid.unwrap_or(0), mode: mode.unwrap_or(fallback_mode) }
    }

    /// A policy with no rules at all (every node gets the fallback of
    /// [`perm_for`](Self::perm_for)); for tests and for callers that want to
    /// replace the built-in rules entirely.
    pub fn empty() -> Policy {
        Policy { rules: Vec::new() }
    }
}

impl Default for Policy {
    /// [`Policy::builtin`].
    fn default() -> Policy {
        Policy::builtin()
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rule in &self.rules {
            writeln!(f, "{rule}  # {}", rule.origin)?;
        }
        Ok(())
    }
}

const EXPECT_KIND: &str = "bus, device, char or block before the pattern";
const EXPECT_PATTERN: &str = "a path pattern like keyboard* or pci/**";
const EXPECT_OWNER: &str = "OWNER:GROUP like root:input after the pattern";
const EXPECT_MODE: &str = "an octal mode like 0640 after OWNER:GROUP";
const EXPECT_END: &str = "end of line after the mode (comments start with '#')";

/// Parses one line; `Ok(None)` for blank and comment lines.
fn parse_line(text: &str, file: &Path, line: usize) -> Result<Option<Rule>, RulesError> {
    let syntax = |expected: &str, found: Found| RulesError::Syntax {
        file: file.to_owned(),
        line,
        expected: expected.to_owned(),
        found,
    };
    let fields: Vec<&str> = text.split_ascii_whitespace().take_while(|f| !f.starts_with('#')).collect();
    let Some(&first) = fields.first() else {
        return Ok(None);
    };
    let keyword = KindFilter::from_keyword(first);
    // Four fields or more: the first is a keyword. Three: it is not, unless
    // it reads as one and the second field cannot be OWNER:GROUP (`bus pci
    // 0:0` lacks a mode). Fewer: a keyword if it reads as one. This only
    // decides which field an error message names.
    let second_is_owner = fields.get(1).is_some_and(|f| *f == "-" || f.contains(':'));
    let has_keyword = match fields.len() {
        0..=2 => keyword.is_some(),
        3 => keyword.is_some() && !second_is_owner,
        _ => true,
    };
    let (kind, rest) = if has_keyword {
        match keyword {
            Some(k) => (k, fields.get(1..).unwrap_or_default()),
            None => {
                // `null root:root 0666 junk` is more likely than a misspelt
                // keyword when the second field looks like OWNER:GROUP.
                if second_is_owner {
                    let extra = fields.get(3).copied().unwrap_or_default();
                    return Err(syntax(EXPECT_END, Found::Text(extra.to_owned())));
                }
                return Err(syntax(EXPECT_KIND, Found::Text(first.to_owned())));
            }
        }
    } else {
        (KindFilter::Any, fields.as_slice())
    };
    let field = |i: usize| rest.get(i).copied();

    let pattern_text = field(0).ok_or_else(|| syntax(EXPECT_PATTERN, Found::EndOfLine))?;
    let pattern = Pattern::parse(pattern_text)
        .map_err(|e| syntax(&format!("{} in the pattern", e.expected), Found::Text(e.found)))?;

    let owner_text = field(1).ok_or_else(|| syntax(EXPECT_OWNER, Found::EndOfLine))?;
    let (user, group) = if owner_text == "-" {
        ("-", "-")
    } else {
        match owner_text.split_once(':') {
            Some((u, g)) if !u.is_empty() && !g.is_empty() => (u, g),
            _ => return Err(syntax(EXPECT_OWNER, Found::Text(owner_text.to_owned()))),
        }
    };
    let uid = match parse_id(user) {
        IdField::Keep => None,
        IdField::Number(n) => Some(n),
        IdField::BadNumber => return Err(syntax("a user id below 4294967295", Found::Text(user.to_owned()))),
        IdField::Name(name) => Some(resolve_user(name, file, line)?),
    };
    let gid = match parse_id(group) {
        IdField::Keep => None,
        IdField::Number(n) => Some(n),
        IdField::BadNumber => return Err(syntax("a group id below 4294967295", Found::Text(group.to_owned()))),
        IdField::Name(name) => Some(resolve_group(name, file, line)?),
    };

    let mode_text = field(2).ok_or_else(|| syntax(EXPECT_MODE, Found::EndOfLine))?;
    let mode = parse_mode(mode_text).map_err(|e| syntax(e, Found::Text(mode_text.to_owned())))?;

    if let Some(extra) = field(3) {
        return Err(syntax(EXPECT_END, Found::Text(extra.to_owned())));
    }
    Ok(Some(Rule { kind, pattern, uid, gid, mode, origin: Origin::File { path: file.to_owned(), line } }))
}

enum IdField<'a> {
    Keep,
    Number(u32),
    BadNumber,
    Name(&'a str),
}

fn parse_id(text: &str) -> IdField<'_> {
    if text == "-" {
        return IdField::Keep;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // u32::MAX is the "no change" id of chown(2): never a real id.
        return match text.parse::<u32>() {
            Ok(n) if n != u32::MAX => IdField::Number(n),
            Ok(_) | Err(_) => IdField::BadNumber,
        };
    }
    IdField::Name(text)
}

fn resolve_user(name: &str, file: &Path, line: usize) -> Result<u32, RulesError> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(RulesError::UnknownUser { file: file.to_owned(), line, name: name.to_owned() }),
        Err(source) => Err(RulesError::LookupUser { file: file.to_owned(), line, name: name.to_owned(), source }),
    }
}

fn resolve_group(name: &str, file: &Path, line: usize) -> Result<u32, RulesError> {
    match Group::from_name(name) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(RulesError::UnknownGroup { file: file.to_owned(), line, name: name.to_owned() }),
        Err(source) => Err(RulesError::LookupGroup { file: file.to_owned(), line, name: name.to_owned(), source }),
    }
}

/// `-` or octal permission bits up to `07777`.
fn parse_mode(text: &str) -> Result<Option<u32>, &'static str> {
    if text == "-" {
        return Ok(None);
    }
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err("an octal mode like 0640");
    }
    match u32::from_str_radix(text, 8) {
        Ok(m) if m <= 0o7777 => Ok(Some(m)),
        Ok(_) | Err(_) => Err("a mode of at most 07777 (permission bits only, no file type)"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        let mut p = Policy::builtin_with(|name| {
            Ok(match name {
                "input" => Some(104),
                "disk" => Some(6),
                _ => None,
            })
        });
        p.add_str("rules.conf", text).unwrap();
        p
    }

    fn perm(uid: u32, gid: u32, mode: u32) -> Perm {
        Perm { uid, gid, mode }
    }

    fn syntax_error(text: &str) -> (usize, String, Found, String) {
        match Policy::empty().add_str("rules.conf", text) {
            Err(e @ RulesError::Syntax { .. }) => {
                let message = e.to_string();
                let RulesError::Syntax { line, expected, found, .. } = e else { unreachable!() };
                (line, expected, found, message)
            }
            other => panic!("{text:?}: expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn builtins() {
        let p = policy("");
        assert_eq!(p.rules().len(), BUILTIN.len(), "every built-in pattern parses");
        assert_eq!(p.perm_for("", NodeKind::Bus), perm(0, 0, 0o755));
        assert_eq!(p.perm_for("pci", NodeKind::Bus), perm(0, 0, 0o755));
        assert_eq!(p.perm_for("pci/sub", NodeKind::Bus), perm(0, 0, 0o755));
        assert_eq!(p.perm_for("null", NodeKind::CharDevice), perm(0, 0, 0o666));
        assert_eq!(p.perm_for("zero", NodeKind::CharDevice), perm(0, 0, 0o666));
        assert_eq!(p.perm_for("vbus/null", NodeKind::CharDevice), perm(0, 0, 0o600));
        assert_eq!(p.perm_for("keyboard0", NodeKind::CharDevice), perm(0, 104, 0o640));
        assert_eq!(p.perm_for("usb/keyboard1", NodeKind::CharDevice), perm(0, 104, 0o640));
        assert_eq!(p.perm_for("input/event0", NodeKind::CharDevice), perm(0, 104, 0o640));
        assert_eq!(p.perm_for("input-slowkbd/event3", NodeKind::CharDevice), perm(0, 104, 0o640));
        assert_eq!(p.perm_for("event0", NodeKind::CharDevice), perm(0, 0, 0o600));
        assert_eq!(p.perm_for("ram0", NodeKind::BlockDevice), perm(0, 6, 0o660));
        assert_eq!(p.perm_for("pci/x/disk0", NodeKind::BlockDevice), perm(0, 6, 0o660));
        assert_eq!(p.perm_for("pci/0000:00:03.0", NodeKind::CharDevice), perm(0, 0, 0o600));
        assert_eq!(p.perm_for("mouse0", NodeKind::CharDevice), perm(0, 0, 0o600));
    }

    #[test]
    fn builtin_groups_fall_back_to_root() {
        let p = Policy::builtin_with(|_| Ok(None));
        assert_eq!(p.perm_for("keyboard0", NodeKind::CharDevice), perm(0, 0, 0o640));
        assert_eq!(p.perm_for("ram0", NodeKind::BlockDevice), perm(0, 0, 0o660));
        let p = Policy::builtin_with(|_| Err(nix::Error::EIO));
        assert_eq!(p.perm_for("keyboard0", NodeKind::CharDevice), perm(0, 0, 0o640));
        // The real database must not break either.
        let real = Policy::builtin();
        assert_eq!(real.perm_for("null", NodeKind::CharDevice), perm(0, 0, 0o666));
    }

    #[test]
    fn later_rules_win_field_by_field() {
        let p = policy(
            "keyboard*  1000:1000  0600\n\
             keyboard0  -:2000     -\n\
             keyboard0  -          0604\n",
        );
        assert_eq!(p.perm_for("keyboard0", NodeKind::CharDevice), perm(1000, 2000, 0o604));
        assert_eq!(p.perm_for("keyboard1", NodeKind::CharDevice), perm(1000, 1000, 0o600));
        // File rules override built-ins; an earlier file rule loses to a later one.
        let p = policy("null 0:0 0600\nnull 0:0 0644\n");
        assert_eq!(p.perm_for("null", NodeKind::CharDevice), perm(0, 0, 0o644));
        // `-` everywhere leaves the built-in result.
        let p = policy("ram* -:- -\n");
        assert_eq!(p.perm_for("ram0", NodeKind::BlockDevice), perm(0, 6, 0o660));
    }

    #[test]
    fn kind_keywords() {
        let p = policy(
            "bus    **      0:0   0700\n\
             device pci/**  0:0   0640\n\
             char   ram*    7:7   0606\n\
             block  tty*    8:8   0660\n\
             pci    0:0  0750\n",
        );
        assert_eq!(p.perm_for("pci", NodeKind::Bus), perm(0, 0, 0o750));
        assert_eq!(p.perm_for("pci/sub", NodeKind::Bus), perm(0, 0, 0o700));
        assert_eq!(p.perm_for("pci/a", NodeKind::CharDevice), perm(0, 0, 0o640));
        assert_eq!(p.perm_for("ram0", NodeKind::BlockDevice), perm(0, 6, 0o660));
        assert_eq!(p.perm_for("ram0", NodeKind::CharDevice), perm(7, 7, 0o606));
        assert_eq!(p.perm_for("tty0", NodeKind::CharDevice), perm(0, 0, 0o600));
        assert_eq!(p.perm_for("", NodeKind::Bus), perm(0, 0, 0o755), "** is not the root");
        let p = policy("bus / 0:0 0711\n");
        assert_eq!(p.perm_for("", NodeKind::Bus), perm(0, 0, 0o711));
        // A pattern named like a keyword, with a keyword in front.
        let p = policy("bus 4:4 0604\n");
        assert_eq!(p.rules().last().map(|r| r.kind), Some(KindFilter::Any));
        assert_eq!(p.perm_for("bus", NodeKind::CharDevice), perm(4, 4, 0o604));
        let p = policy("device bus 5:5 0640\n");
        assert_eq!(p.perm_for("bus", NodeKind::CharDevice), perm(5, 5, 0o640));
    }

    #[test]
    fn comments_blank_lines_crlf_and_names() {
        let mut p = Policy::empty();
        p.add_str("r", "# c\n\n null root:root 0644 # c\r\n\\#odd 0:0 0640\n").unwrap();
        assert_eq!(p.rules().len(), 2);
        assert_eq!(p.perm_for("null", NodeKind::CharDevice), perm(0, 0, 0o644));
        assert_eq!(p.perm_for("#odd", NodeKind::CharDevice), perm(0, 0, 0o640));
        assert_eq!(
            p.rules().get(1).map(|r| r.origin.clone()),
            Some(Origin::File { path: PathBuf::from("r"), line: 4 })
        );
        // '#' starts a comment only at the start of a field.
        let (line, expected, _, _) = syntax_error("zero 0:0 0640#x\n");
        assert_eq!((line, expected.as_str()), (1, "an octal mode like 0640"));
    }

    #[test]
    fn syntax_errors_name_the_line_and_what_was_expected() {
        let (line, _, found, message) = syntax_error("null 0:0 0666\n\n# x\nkbd 0:0 rw-r--r--\n");
        assert_eq!(line, 4);
        assert_eq!(found, Found::Text("rw-r--r--".into()));
        assert_eq!(message, "rules.conf:4: expected an octal mode like 0640, found \"rw-r--r--\"");

        let cases: &[(&str, &str, Found)] = &[
            ("null", EXPECT_OWNER, Found::EndOfLine),
            ("null 0:0", EXPECT_MODE, Found::EndOfLine),
            ("bus", EXPECT_PATTERN, Found::EndOfLine),
            ("bus pci", EXPECT_OWNER, Found::EndOfLine),
            ("bus pci 0:0", EXPECT_MODE, Found::EndOfLine),
            ("null root 0666", EXPECT_OWNER, Found::Text("root".into())),
            ("null :0 0666", EXPECT_OWNER, Found::Text(":0".into())),
            ("null 0: 0666", EXPECT_OWNER, Found::Text("0:".into())),
            ("null 0:0 0666 extra", EXPECT_END, Found::Text("extra".into())),
            ("bus pci 0:0 0755 extra", EXPECT_END, Found::Text("extra".into())),
            ("dev null 0:0 0666", EXPECT_KIND, Found::Text("dev".into())),
            ("null 0:0 0o666", "an octal mode like 0640", Found::Text("0o666".into())),
            ("null 0:0 0668", "an octal mode like 0640", Found::Text("0668".into())),
            ("null 0:0 +x", "an octal mode like 0640", Found::Text("+x".into())),
            (
                "null 0:0 0100644",
                "a mode of at most 07777 (permission bits only, no file type)",
                Found::Text("0100644".into()),
            ),
            (
                "null 0:0 777777777777777",
                "a mode of at most 07777 (permission bits only, no file type)",
                Found::Text("777777777777777".into()),
            ),
            ("null 4294967295:0 0600", "a user id below 4294967295", Found::Text("4294967295".into())),
            ("null 0:99999999999 0600", "a group id below 4294967295", Found::Text("99999999999".into())),
            ("tty[0-3 0:0 0600", "']' to close the character class in the pattern", Found::Text("tty[0-3".into())),
            ("pci//x 0:0 0600", "a path segment between '/' characters in the pattern", Found::Text("pci//x".into())),
        ];
        for (text, expected, found) in cases {
            let input = format!("# header\n\n{text}\nnull 0:0 0666\n");
            let (line, e, f, _) = syntax_error(&input);
            assert_eq!(line, 3, "{text:?}");
            assert_eq!(e, *expected, "{text:?}");
            assert_eq!(f, *found, "{text:?}");
        }

        // Not UTF-8, on line 2.
        let mut p = Policy::empty();
        let e = p.add_bytes(Path::new("r"), b"null 0:0 0666\n\xff\xfe 0:0 0600\n").unwrap_err();
        assert!(matches!(e, RulesError::Syntax { line: 2, found: Found::InvalidUtf8, .. }), "{e:?}");
        assert!(p.rules().is_empty(), "a failed file adds no rule");
    }

    #[test]
    fn names_resolve_and_unknown_names_are_errors() {
        let mut p = Policy::empty();
        p.add_str("r", "null root:root 0600\n").unwrap();
        assert_eq!(p.perm_for("null", NodeKind::CharDevice), perm(0, 0, 0o600));

        let e = Policy::empty().add_str("r", "\nnull ddf-no-such-user-x:0 0600\n").unwrap_err();
        assert!(matches!(&e, RulesError::UnknownUser { line: 2, name, .. } if name == "ddf-no-such-user-x"), "{e:?}");
        assert_eq!(e.to_string(), "r:2: no user named \"ddf-no-such-user-x\" (use a known name or a number)");

        let e = Policy::empty().add_str("r", "\n\nnull 0:ddf-no-such-group-x 0600\n").unwrap_err();
        assert!(matches!(&e, RulesError::UnknownGroup { line: 3, name, .. } if name == "ddf-no-such-group-x"), "{e:?}");
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rules.conf");
        std::fs::write(&path, "null 0:0 0640\n").unwrap();
        let p = Policy::with_file(&path).unwrap();
        assert_eq!(p.perm_for("null", NodeKind::CharDevice).mode, 0o640);
        assert!(matches!(p.rules().last().map(|r| &r.origin), Some(Origin::File { line: 1, .. })));
        std::fs::write(&path, "null 0:0 0640\nnull 0:0\n").unwrap();
        let e = Policy::with_file(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}:2: expected an octal mode like 0640 after OWNER:GROUP, found end of line", path.display())
        );
        let e = Policy::with_file(dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, RulesError::Read { .. }));
    }

    #[test]
    fn display_round_trips() {
        let p = policy("device pci/** 0:0 0640\n\\#x -:5 -\nbus / 0:0 0711\n");
        let text = p.to_string();
        let mut again = Policy::empty();
        again.add_str("printed", &text).unwrap();
        assert_eq!(again.rules().len(), p.rules().len());
        for (a, b) in again.rules().iter().zip(p.rules()) {
            assert_eq!((a.kind, &a.pattern, a.uid, a.gid, a.mode), (b.kind, &b.pattern, b.uid, b.gid, b.mode));
        }
    }

    #[test]
    fn a_thousand_nodes_times_a_hundred_rules_is_quick() {
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!("device **/dev{i}* {i}:{i} 0640\nbus pci/**/b{i} 0:{i} -\n"));
        }
        let p = policy(&text);
        let start = std::time::Instant::now();
        for n in 0..1000 {
            let _ = p.perm_for(&format!("pci/b{}/sub/dev{n}", n % 7), NodeKind::CharDevice);
            let _ = p.perm_for(&format!("pci/b{n}"), NodeKind::Bus);
        }
        // About a millisecond in a release build; generous for debug builds
        // on a busy machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(3), "{:?}", start.elapsed());
    }
}
