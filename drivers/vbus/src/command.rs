//! The control-file language: parsing one line into a [`Command`], and the
//! canonical text of a device ([`describe`]), which parses back to it.
//!
//! A line is words separated by white space. Every check is here, so that
//! a bad line is refused before anything is applied; the checks that need
//! the bus (duplicates, unknown names) are in [`crate::model`].

use ddf::proto::{DeviceClass, Errno};

/// The most bytes of a device name (a file name).
pub const NAME_MAX: usize = 255;

/// The most bytes of a metadata key.
pub const KEY_MAX: usize = 64;

/// The most bytes of a metadata value or an address.
pub const VALUE_MAX: usize = 255;

/// The most `key=value` words on one line.
pub const PAIRS_MAX: usize = 32;

/// The most bytes of one line: room for the longest line a device can
/// describe itself with (`add`, a name of [`NAME_MAX`] bytes and
/// [`PAIRS_MAX`] words at their limits), so that any line of the listing
/// is taken back after `add `. The limit bounds the work per line; the
/// fields have limits of their own.
pub const LINE_MAX: usize = 16 * 1024;

const _: () = assert!("add ".len() + NAME_MAX + PAIRS_MAX * (" ".len() + KEY_MAX + "=".len() + VALUE_MAX) <= LINE_MAX);

/// The most devices on the bus (besides `ctl`) unless the `max_devices`
/// parameter says otherwise.
pub const DEVICES_MAX: usize = 4096;

/// The most `max_devices` may be, and the most one `add-many` makes.
pub const DEVICES_LIMIT: usize = 1_000_000;

/// The name of the control device, which no other device may take.
pub const CTL_NAME: &str = "ctl";

/// A device, apart from its name: what `add` takes after the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desc {
    /// Its bus address (`address=`), when not its name.
    pub address: Option<String>,
    /// Char (the default) or block (`devclass=block`).
    pub class: DeviceClass,
    /// Size in bytes (`size=`, block devices only).
    pub size: u64,
    /// Every other `key=value`, in the order given.
    pub meta: Vec<(String, String)>,
}

impl Default for Desc {
    fn default() -> Desc {
        Desc { address: None, class: DeviceClass::Char, size: 0, meta: Vec::new() }
    }
}

impl Desc {
    /// The address of a device named `name` with this description.
    pub fn address_of<'a>(&'a self, name: &'a str) -> &'a str {
        self.address.as_deref().unwrap_or(name)
    }
}

/// One line of the control file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `add NAME [key=value ...]`.
    Add {
        /// The device's name.
        name: String,
        /// The rest.
        desc: Desc,
    },
    /// `remove NAME`.
    Remove {
        /// The device's name.
        name: String,
    },
    /// `add-many PREFIX COUNT [key=value ...]`: devices `PREFIX0` to
    /// `PREFIX<COUNT-1>`.
    AddMany {
        /// The names' common start.
        prefix: String,
        /// How many.
        count: usize,
        /// What each is (without `address=`).
        desc: Desc,
    },
    /// `remove-all`.
    RemoveAll,
}

/// Why a line is refused. [`CmdError::errno`] is what the `write` answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    /// The line is longer than [`LINE_MAX`].
    #[error("line longer than {LINE_MAX} bytes")]
    LineTooLong,
    /// The write is not UTF-8.
    #[error("not UTF-8")]
    NotUtf8,
    /// The first word is no command.
    #[error("unknown command {0:?} (add, remove, add-many, remove-all)")]
    UnknownCommand(String),
    /// Words missing or left over.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A name that is no file name.
    #[error("bad name {name:?}: {why}")]
    BadName {
        /// The name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A word after the name that is not `key=value`.
    #[error("{0:?} is not key=value")]
    NotPair(String),
    /// A key with characters other than ASCII letters, digits and `_`, or
    /// too long.
    #[error("bad key {0:?}: ASCII letters, digits and '_', at most {KEY_MAX} bytes")]
    BadKey(String),
    /// A value with control characters, or too long.
    #[error("bad value for {0}: no control characters, at most {VALUE_MAX} bytes")]
    BadValue(String),
    /// The same key twice on one line.
    #[error("key {0} given twice")]
    DuplicateKey(String),
    /// More than [`PAIRS_MAX`] `key=value` words.
    #[error("more than {PAIRS_MAX} key=value words")]
    TooManyPairs,
    /// `devclass=` is neither `char` nor `block`.
    #[error("devclass {0:?}: char or block")]
    BadClass(String),
    /// `size=` is not a size.
    #[error("size {0:?}: bytes, or with a suffix K, M, G or T")]
    BadSize(String),
    /// `size=` on a char device.
    #[error("size= needs devclass=block")]
    SizeNeedsBlock,
    /// The count of `add-many` is not a number from 1 to [`DEVICES_LIMIT`].
    #[error("count {0:?}: a number from 1 to {DEVICES_LIMIT}")]
    BadCount(String),
    /// `address=` with `add-many` (addresses are unique).
    #[error("add-many takes no address= (each device's address is its name)")]
    AddressWithMany,
    /// A device of that name is on the bus.
    #[error("{0:?} exists")]
    Exists(String),
    /// The name of the control file.
    #[error("{CTL_NAME:?} is the control file's name")]
    Reserved,
    /// Another device has that address.
    #[error("address {0:?} is taken")]
    AddressTaken(String),
    /// No device of that name.
    #[error("no device {0:?}")]
    NoSuchDevice(String),
    /// More devices than the bus takes (`max_devices`).
    #[error("more devices than the bus takes (max_devices)")]
    Full,
    /// The device list no longer fits the state store.
    #[error("the device list would take {0} bytes, over the state store's limit")]
    StateTooLarge(usize),
}

impl CmdError {
    /// The errno a `write` of a line with this error answers: `ENOSPC` when
    /// the bus is full, `EINVAL` otherwise.
    pub fn errno(&self) -> Errno {
        match self {
            CmdError::Full | CmdError::StateTooLarge(_) => Errno::ENOSPC,
            CmdError::LineTooLong
            | CmdError::NotUtf8
            | CmdError::UnknownCommand(_)
            | CmdError::Usage(_)
            | CmdError::BadName { .. }
            | CmdError::NotPair(_)
            | CmdError::BadKey(_)
            | CmdError::BadValue(_)
            | CmdError::DuplicateKey(_)
            | CmdError::TooManyPairs
            | CmdError::BadClass(_)
            | CmdError::BadSize(_)
            | CmdError::SizeNeedsBlock
            | CmdError::BadCount(_)
            | CmdError::AddressWithMany
            | CmdError::Exists(_)
            | CmdError::Reserved
            | CmdError::AddressTaken(_)
            | CmdError::NoSuchDevice(_) => Errno::EINVAL,
        }
    }
}

const USAGE_ADD: &str = "add NAME [key=value ...]";
const USAGE_REMOVE: &str = "remove NAME";
const USAGE_ADD_MANY: &str = "add-many PREFIX COUNT [key=value ...]";
const USAGE_REMOVE_ALL: &str = "remove-all";

/// Parses one line; `None` for a blank line or a comment (`#` first).
pub fn parse_line(line: &str) -> Result<Option<Command>, CmdError> {
    if line.len() > LINE_MAX {
        return Err(CmdError::LineTooLong);
    }
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some((&cmd, args)) = words.split_first() else {
        return Ok(None);
    };
    if cmd.starts_with('#') {
        return Ok(None);
    }
    let cmd = match cmd {
        "add" => {
            let (&name, pairs) = args.split_first().ok_or(CmdError::Usage(USAGE_ADD))?;
            Command::Add { name: name.to_owned(), desc: parse_device(name, pairs)? }
        }
        "remove" => match args {
            [name] => {
                check_name(name)?;
                Command::Remove { name: (*name).to_owned() }
            }
            _ => return Err(CmdError::Usage(USAGE_REMOVE)),
        },
        "add-many" => {
            let [prefix, count, pairs @ ..] = args else {
                return Err(CmdError::Usage(USAGE_ADD_MANY));
            };
            let count = parse_count(count)?;
            // The longest name made is the one to check.
            check_name(&format!("{prefix}{}", count - 1))?;
            let desc = parse_desc(pairs)?;
            if desc.address.is_some() {
                return Err(CmdError::AddressWithMany);
            }
            Command::AddMany { prefix: (*prefix).to_owned(), count, desc }
        }
        "remove-all" => {
            if !args.is_empty() {
                return Err(CmdError::Usage(USAGE_REMOVE_ALL));
            }
            Command::RemoveAll
        }
        other => return Err(CmdError::UnknownCommand(other.chars().take(64).collect())),
    };
    Ok(Some(cmd))
}

/// Checks that `name` is a file name that fits on one line of the listing:
/// not empty, at most [`NAME_MAX`] bytes, not `.` or `..`, without `/`,
/// NUL or other control characters, and not [`CTL_NAME`].
pub fn check_name(name: &str) -> Result<(), CmdError> {
    let bad = |why| Err(CmdError::BadName { name: name.chars().take(64).collect(), why });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > NAME_MAX {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not device names");
    }
    if name.contains('/') {
        return bad("contains '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    if name == CTL_NAME {
        return Err(CmdError::Reserved);
    }
    Ok(())
}

/// A device as an `add` line and a line of the saved list give it: `name`
/// checked ([`check_name`]), the words after it parsed ([`parse_desc`]),
/// and an `address=` equal to the name dropped, since that is the default:
/// one device has one description, and [`describe`] of it parses back to it.
pub fn parse_device(name: &str, pairs: &[&str]) -> Result<Desc, CmdError> {
    check_name(name)?;
    let mut desc = parse_desc(pairs)?;
    if desc.address.as_deref() == Some(name) {
        desc.address = None;
    }
    Ok(desc)
}

/// Parses the `key=value` words after a name.
pub fn parse_desc(pairs: &[&str]) -> Result<Desc, CmdError> {
    if pairs.len() > PAIRS_MAX {
        return Err(CmdError::TooManyPairs);
    }
    let mut desc = Desc::default();
    let mut size = None;
    let mut seen: Vec<&str> = Vec::with_capacity(pairs.len());
    for word in pairs {
        let (key, value) = word.split_once('=').ok_or_else(|| CmdError::NotPair(word.chars().take(64).collect()))?;
        check_key(key)?;
        if value.len() > VALUE_MAX || value.chars().any(char::is_control) {
            return Err(CmdError::BadValue(key.to_owned()));
        }
        if seen.contains(&key) {
            return Err(CmdError::DuplicateKey(key.to_owned()));
        }
        seen.push(key);
        match key {
            "address" => {
                if value.is_empty() {
                    return Err(CmdError::BadValue(key.to_owned()));
                }
                desc.address = Some(value.to_owned());
            }
            "devclass" => {
                desc.class = match value {
                    "char" => DeviceClass::Char,
                    "block" => DeviceClass::Block,
                    other => return Err(CmdError::BadClass(other.to_owned())),
                }
            }
            "size" => size = Some(ddf::params::parse_size(value).map_err(|_| CmdError::BadSize(value.to_owned()))?),
            _ => desc.meta.push((key.to_owned(), value.to_owned())),
        }
    }
    match (desc.class, size) {
        (DeviceClass::Char, Some(_)) => return Err(CmdError::SizeNeedsBlock),
        (DeviceClass::Block, Some(n)) => desc.size = n,
        (_, None) => {}
    }
    Ok(desc)
}

/// The canonical line of a device (without the newline): its name, then
/// `address=` if it is not the name, `devclass=block` for a block device
/// and `size=N` if its size is not 0, then its metadata in order. It has no
/// more words than the `add` that made the device, and fits [`LINE_MAX`]:
/// [`parse_line`] of `add` and this gives the device back.
pub fn describe(name: &str, desc: &Desc) -> String {
    let mut s = String::from(name);
    if let Some(a) = &desc.address {
        if a != name {
            s.push_str(" address=");
            s.push_str(a);
        }
    }
    if desc.class == DeviceClass::Block {
        s.push_str(" devclass=block");
        if desc.size != 0 {
            s.push_str(&format!(" size={}", desc.size));
        }
    }
    for (k, v) in &desc.meta {
        s.push(' ');
        s.push_str(k);
        s.push('=');
        s.push_str(v);
    }
    s
}

fn check_key(key: &str) -> Result<(), CmdError> {
    let ok = !key.is_empty() && key.len() <= KEY_MAX && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CmdError::BadKey(key.chars().take(64).collect()))
    }
}

fn parse_count(s: &str) -> Result<usize, CmdError> {
    let bad = || CmdError::BadCount(s.chars().take(32).collect());
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=DEVICES_LIMIT).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn add_with_metadata() {
        let c = parse_line("add vdev0 vendor=1234 device=0001 class=char").unwrap().unwrap();
        assert_eq!(
            c,
            Command::Add {
                name: "vdev0".into(),
                desc: Desc {
                    meta: meta(&[("vendor", "1234"), ("device", "0001"), ("class", "char")]),
                    ..Desc::default()
                }
            }
        );
    }

    #[test]
    fn add_with_address_class_and_size() {
        let c = parse_line("  add\tdisk0  devclass=block size=64K address=slot-3 serial=a=b empty= ").unwrap().unwrap();
        assert_eq!(
            c,
            Command::Add {
                name: "disk0".into(),
                desc: Desc {
                    address: Some("slot-3".into()),
                    class: DeviceClass::Block,
                    size: 64 << 10,
                    meta: meta(&[("serial", "a=b"), ("empty", "")]),
                }
            }
        );
        let Some(Command::Add { desc, .. }) = parse_line("add d devclass=block").unwrap() else { panic!() };
        assert_eq!((desc.class, desc.size), (DeviceClass::Block, 0));
        let Some(Command::Add { desc, .. }) = parse_line("add d devclass=char").unwrap() else { panic!() };
        assert_eq!(desc.class, DeviceClass::Char);
    }

    #[test]
    fn remove_add_many_remove_all_blank_and_comment() {
        assert_eq!(parse_line("remove vdev0").unwrap(), Some(Command::Remove { name: "vdev0".into() }));
        assert_eq!(
            parse_line("add-many v 1000 vendor=1234").unwrap(),
            Some(Command::AddMany {
                prefix: "v".into(),
                count: 1000,
                desc: Desc { meta: meta(&[("vendor", "1234")]), ..Desc::default() }
            })
        );
        assert_eq!(parse_line("remove-all").unwrap(), Some(Command::RemoveAll));
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(parse_line(" \t \r").unwrap(), None);
        assert_eq!(parse_line("# add nothing").unwrap(), None);
        assert_eq!(parse_line("add x\r").unwrap(), Some(Command::Add { name: "x".into(), desc: Desc::default() }));
    }

    /// Every error the parser gives, with the errno the write answers.
    #[test]
    fn every_error() {
        let long_name = "n".repeat(256);
        let long_key = format!("add x {}=1", "k".repeat(65));
        let long_value = format!("add x k={}", "v".repeat(256));
        let too_long = format!("add x k={}", "v".repeat(LINE_MAX));
        let too_many: String = (0..=PAIRS_MAX).map(|i| format!(" k{i}=v")).collect();
        let too_many = format!("add x{too_many}");
        let add_long_name = format!("add {long_name}");
        let many_long = format!("add-many {} 10", "p".repeat(255));
        let cases: Vec<(&str, CmdError)> = vec![
            (&too_long, CmdError::LineTooLong),
            ("frobnicate x", CmdError::UnknownCommand("frobnicate".into())),
            ("ADD x", CmdError::UnknownCommand("ADD".into())),
            ("add", CmdError::Usage(USAGE_ADD)),
            ("remove", CmdError::Usage(USAGE_REMOVE)),
            ("remove a b", CmdError::Usage(USAGE_REMOVE)),
            ("add-many v", CmdError::Usage(USAGE_ADD_MANY)),
            ("remove-all now", CmdError::Usage(USAGE_REMOVE_ALL)),
            ("add a/b", CmdError::BadName { name: "a/b".into(), why: "contains '/'" }),
            ("remove a/b", CmdError::BadName { name: "a/b".into(), why: "contains '/'" }),
            ("add .", CmdError::BadName { name: ".".into(), why: "'.' and '..' are not device names" }),
            ("add ..", CmdError::BadName { name: "..".into(), why: "'.' and '..' are not device names" }),
            ("add a\u{7}b", CmdError::BadName { name: "a\u{7}b".into(), why: "contains a control character" }),
            ("add a\0b", CmdError::BadName { name: "a\0b".into(), why: "contains a control character" }),
            (&add_long_name, CmdError::BadName { name: "n".repeat(64), why: "longer than 255 bytes" }),
            ("add ctl", CmdError::Reserved),
            ("remove ctl", CmdError::Reserved),
            ("add x vendor", CmdError::NotPair("vendor".into())),
            ("add x =1", CmdError::BadKey(String::new())),
            ("add x ven/dor=1", CmdError::BadKey("ven/dor".into())),
            ("add x ven-dor=1", CmdError::BadKey("ven-dor".into())),
            ("add x ven.dor=1", CmdError::BadKey("ven.dor".into())),
            ("add x vendör=1", CmdError::BadKey("vendör".into())),
            (&long_key, CmdError::BadKey("k".repeat(64))),
            (&long_value, CmdError::BadValue("k".into())),
            ("add x k=a\u{1b}b", CmdError::BadValue("k".into())),
            ("add x address=", CmdError::BadValue("address".into())),
            ("add x k=1 k=2", CmdError::DuplicateKey("k".into())),
            ("add x devclass=block size=1 size=1", CmdError::DuplicateKey("size".into())),
            (&too_many, CmdError::TooManyPairs),
            ("add x devclass=tape", CmdError::BadClass("tape".into())),
            ("add x devclass=block size=lots", CmdError::BadSize("lots".into())),
            ("add x devclass=block size=1Q", CmdError::BadSize("1Q".into())),
            ("add x devclass=block size=99999999999999999999", CmdError::BadSize("99999999999999999999".into())),
            ("add x devclass=block size=99999999999T", CmdError::BadSize("99999999999T".into())),
            ("add x size=10", CmdError::SizeNeedsBlock),
            ("add x devclass=char size=10", CmdError::SizeNeedsBlock),
            ("add-many v 0", CmdError::BadCount("0".into())),
            ("add-many v -1", CmdError::BadCount("-1".into())),
            ("add-many v +1", CmdError::BadCount("+1".into())),
            ("add-many v ten", CmdError::BadCount("ten".into())),
            ("add-many v 1000001", CmdError::BadCount("1000001".into())),
            ("add-many v 99999999999999999999999", CmdError::BadCount("99999999999999999999999".into())),
            ("add-many a/ 2", CmdError::BadName { name: "a/1".into(), why: "contains '/'" }),
            (&many_long, CmdError::BadName { name: "p".repeat(64), why: "longer than 255 bytes" }),
            ("add-many v 3 address=x", CmdError::AddressWithMany),
        ];
        for (line, want) in cases {
            let got = parse_line(line);
            assert_eq!(got.as_ref(), Err(&want), "{line:?}");
            assert_eq!(want.errno(), Errno::EINVAL);
        }
        assert_eq!(CmdError::Full.errno(), Errno::ENOSPC);
        assert_eq!(CmdError::StateTooLarge(1).errno(), Errno::ENOSPC);
        // A name at the limit is fine; add-many counts the digits.
        assert!(parse_line(&format!("add {}", "n".repeat(255))).is_ok());
        assert!(parse_line(&format!("add-many {} 10", "p".repeat(254))).is_ok());
    }

    #[test]
    fn describe_parses_back() {
        for line in [
            "add v0",
            "add v0 vendor=1234 device=0001 class=char",
            "add disk0 address=slot-3 devclass=block size=65536 serial=a=b empty=",
        ] {
            let Some(Command::Add { name, desc }) = parse_line(line).unwrap() else { panic!("{line}") };
            let text = describe(&name, &desc);
            assert_eq!(format!("add {text}"), line);
            assert_eq!(parse_line(&format!("add {text}")).unwrap(), Some(Command::Add { name, desc }));
        }
        // An address equal to the name is not repeated.
        let desc = Desc { address: Some("v1".into()), ..Desc::default() };
        assert_eq!(describe("v1", &desc), "v1");
        // Nor a block device's size of 0.
        let desc = Desc { class: DeviceClass::Block, ..Desc::default() };
        assert_eq!(describe("d", &desc), "d devclass=block");
    }

    /// Found by the round trip of the `vbus_ctl` fuzz target
    /// (fuzz/regressions/vbus_ctl/): a block device with 31 words of
    /// metadata and no size was described with one word more than its add
    /// line (`size=0`), over [`PAIRS_MAX`]; an add line of 4096 bytes whose
    /// size had a suffix (`size=1T`) was described longer than the 4096
    /// bytes `LINE_MAX` was then. Neither description parsed back, so the
    /// listing could not be written back, and the first device was lost at
    /// a restart (the saved list is the listing).
    #[test]
    fn the_fullest_adds_describe_as_lines_that_parse_back() {
        let meta: String = (0..PAIRS_MAX - 1).map(|i| format!(" k{i}=")).collect();
        let many = format!("add x devclass=block{meta}");
        let value = "v".repeat(VALUE_MAX);
        let meta: String = (0..PAIRS_MAX - 2).map(|i| format!(" k{i:0>63}={value}")).collect();
        let longest = format!("add {} devclass=block size=1T{meta}", "n".repeat(NAME_MAX));
        for line in [many, longest] {
            let Some(Command::Add { name, desc }) = parse_line(&line).unwrap() else { panic!("{line}") };
            let again = format!("add {}", describe(&name, &desc));
            assert!(again.len() <= LINE_MAX, "{} bytes", again.len());
            assert_eq!(parse_line(&again).unwrap(), Some(Command::Add { name, desc }));
        }
    }
}
