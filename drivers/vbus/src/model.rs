//! The bus as data: its devices by name, what a write of commands does to
//! them ([`Model::run`], all or nothing), the listing, and the encoding kept
//! in the DDM's state store.
//!
//! Nothing here talks to the DDM: [`Model::run`] returns the new model and
//! the [`Effect`]s, in order, that the driver then reports.

use std::collections::BTreeMap;

use crate::command::{
    check_name, describe, parse_desc, parse_device, parse_line, CmdError, Command, Desc, DEVICES_LIMIT, DEVICES_MAX,
};

/// The state store key of the device list.
pub const STATE_KEY: &str = "devices";

/// The first line of the saved device list; a list with another first line
/// (another format) is not restored.
pub const STATE_HEADER: &str = "ddf-vbus-state 2";

/// The first line of the format before runs (`TAB START COUNT /PREFIX`):
/// its lines are lines of today's format, so it is still restored.
const STATE_HEADER_1: &str = "ddf-vbus-state 1";

/// The most bytes the saved device list may take: one frame's payload, well
/// within the DDM's state store limit (1 MiB per driver).
pub const STATE_MAX: usize = ddf::ipc::PAYLOAD_MAX;

/// A change to report to the DDM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A device to add.
    Added(String, Desc),
    /// A device to remove.
    Removed(String),
}

/// A refused line of a write, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}")]
pub struct LineError {
    /// Which line.
    pub line: usize,
    /// Why.
    pub error: CmdError,
}

/// Why a saved device list cannot be restored at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// It is not UTF-8.
    #[error("saved device list is not UTF-8")]
    NotUtf8,
    /// Its first line is not [`STATE_HEADER`].
    #[error("saved device list has header {0:?}, expected {STATE_HEADER:?}")]
    Header(String),
}

/// The devices of the bus (the control device apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    devices: BTreeMap<String, Desc>,
    /// Address → name, to keep addresses unique.
    addresses: BTreeMap<String, String>,
    /// The most devices it takes.
    limit: usize,
}

impl Default for Model {
    fn default() -> Model {
        Model::with_limit(DEVICES_MAX)
    }
}

impl Model {
    /// An empty bus that takes at most `limit` devices (at most
    /// [`DEVICES_LIMIT`]).
    pub fn with_limit(limit: usize) -> Model {
        Model { devices: BTreeMap::new(), addresses: BTreeMap::new(), limit: limit.min(DEVICES_LIMIT) }
    }

    /// The most devices it takes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many devices.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The device `name`.
    pub fn get(&self, name: &str) -> Option<&Desc> {
        self.devices.get(name)
    }

    /// The devices, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Desc)> {
        self.devices.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// Applies the lines of `text` to a copy of this model: the copy and
    /// what changed, in order; or the first bad line, and nothing changed.
    /// Blank lines and `#` comments are skipped.
    pub fn run(&self, text: &str) -> Result<(Model, Vec<Effect>), LineError> {
        let mut next = self.clone();
        let mut effects = Vec::new();
        let mut last = 0;
        for (i, line) in text.split('\n').enumerate() {
            let at = |error| LineError { line: i + 1, error };
            let Some(cmd) = parse_line(line).map_err(at)? else {
                continue;
            };
            next.apply(cmd, &mut effects).map_err(at)?;
            last = i + 1;
        }
        if !effects.is_empty() {
            let len = next.encode_state().len();
            if len > STATE_MAX {
                return Err(LineError { line: last, error: CmdError::StateTooLarge(len) });
            }
        }
        Ok((next, effects))
    }

    /// Applies one command, pushing what changed onto `effects`. On error
    /// the model may be half changed: [`Model::run`] works on a copy.
    pub fn apply(&mut self, cmd: Command, effects: &mut Vec<Effect>) -> Result<(), CmdError> {
        match cmd {
            Command::Add { name, desc } => self.add(name, desc, effects),
            Command::Remove { name } => self.remove(&name, effects),
            Command::AddMany { prefix, count, desc } => {
                if self.devices.len() + count > self.limit {
                    return Err(CmdError::Full);
                }
                for i in 0..count {
                    self.add(format!("{prefix}{i}"), desc.clone(), effects)?;
                }
                Ok(())
            }
            Command::RemoveAll => {
                effects.extend(self.devices.keys().cloned().map(Effect::Removed));
                self.devices.clear();
                self.addresses.clear();
                Ok(())
            }
        }
    }

    fn add(&mut self, name: String, desc: Desc, effects: &mut Vec<Effect>) -> Result<(), CmdError> {
        if self.devices.contains_key(&name) {
            return Err(CmdError::Exists(name));
        }
        let address = desc.address_of(&name).to_owned();
        if self.addresses.contains_key(&address) {
            return Err(CmdError::AddressTaken(address));
        }
        if self.devices.len() >= self.limit {
            return Err(CmdError::Full);
        }
        self.addresses.insert(address, name.clone());
        self.devices.insert(name.clone(), desc.clone());
        effects.push(Effect::Added(name, desc));
        Ok(())
    }

    fn remove(&mut self, name: &str, effects: &mut Vec<Effect>) -> Result<(), CmdError> {
        let desc = self.devices.remove(name).ok_or_else(|| CmdError::NoSuchDevice(name.to_owned()))?;
        self.addresses.remove(desc.address_of(name));
        effects.push(Effect::Removed(name.to_owned()));
        Ok(())
    }

    /// What reading `ctl` gives: one [`describe`] line per device, by name.
    pub fn listing(&self) -> String {
        let mut s = String::new();
        for (name, desc) in &self.devices {
            s.push_str(&describe(name, desc));
            s.push('\n');
        }
        s
    }

    /// The device list as kept in the state store: [`STATE_HEADER`], then a
    /// line per device as [`describe`] gives it, except that devices named a
    /// common prefix and consecutive numbers with one description (what
    /// `add-many` makes) share one line, `TAB START COUNT /PREFIX DESC`, so
    /// that a bus of 100,000 such devices fits the state store.
    pub fn encode_state(&self) -> Vec<u8> {
        let mut s = String::from(STATE_HEADER);
        s.push('\n');
        let mut runs: BTreeMap<(&str, String), Vec<u64>> = BTreeMap::new();
        for (name, desc) in &self.devices {
            match numbered(name).filter(|_| desc.address.is_none()) {
                Some((prefix, n)) => runs.entry((prefix, describe("", desc))).or_default().push(n),
                None => {
                    s.push_str(&describe(name, desc));
                    s.push('\n');
                }
            }
        }
        for ((prefix, rest), mut numbers) in runs {
            numbers.sort_unstable();
            let mut i = 0;
            while i < numbers.len() {
                let start = numbers[i];
                let mut n = 1;
                while i + n < numbers.len() && numbers[i + n] == start + n as u64 {
                    n += 1;
                }
                if n == 1 {
                    s.push_str(&format!("{prefix}{start}{rest}\n"));
                } else {
                    s.push_str(&format!("\t{start} {n} /{prefix}{rest}\n"));
                }
                i += n;
            }
        }
        s.into_bytes()
    }

    /// The device list saved by [`Model::encode_state`], for a bus that
    /// takes at most `limit` devices. Lines that do not parse (or name a
    /// device twice) are left out and returned, so that one bad line loses
    /// its devices, not the bus.
    pub fn decode_state(bytes: &[u8], limit: usize) -> Result<(Model, Vec<LineError>), StateError> {
        let text = std::str::from_utf8(bytes).map_err(|_| StateError::NotUtf8)?;
        let mut lines = text.split('\n');
        let header = lines.next().unwrap_or_default();
        if header != STATE_HEADER && header != STATE_HEADER_1 {
            return Err(StateError::Header(header.chars().take(64).collect()));
        }
        let mut model = Model::with_limit(limit);
        let mut bad = Vec::new();
        let mut effects = Vec::new();
        for (i, line) in lines.enumerate() {
            let run = line.strip_prefix('\t');
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            let added = match (run, words.as_slice()) {
                (None, []) => continue,
                (None, [name, pairs @ ..]) => {
                    parse_device(name, pairs).and_then(|desc| model.add((*name).to_owned(), desc, &mut effects))
                }
                (Some(_), [start, count, prefix, pairs @ ..]) => {
                    model.add_run(start, count, prefix, pairs, &mut effects)
                }
                (Some(_), _) => Err(CmdError::BadCount(line.chars().take(32).collect())),
            };
            if let Err(error) = added {
                bad.push(LineError { line: i + 2, error });
            }
        }
        Ok((model, bad))
    }

    /// A saved run of devices `PREFIX START` to `PREFIX START+COUNT-1`.
    fn add_run(
        &mut self,
        start: &str,
        count: &str,
        prefix: &str,
        pairs: &[&str],
        effects: &mut Vec<Effect>,
    ) -> Result<(), CmdError> {
        let bad = || CmdError::BadCount(format!("{start} {count}"));
        let start: u64 = start.parse().map_err(|_| bad())?;
        let count: u64 = count.parse().map_err(|_| bad())?;
        let prefix = prefix.strip_prefix('/').ok_or_else(bad)?;
        if count == 0 || count > self.limit as u64 || start.checked_add(count).is_none() {
            return Err(bad());
        }
        let desc = parse_desc(pairs)?;
        for n in start..start + count {
            let name = format!("{prefix}{n}");
            check_name(&name)?;
            let mut desc = desc.clone();
            // As for a single line: an address equal to the name is the default.
            if desc.address.as_deref() == Some(name.as_str()) {
                desc.address = None;
            }
            self.add(name, desc, effects)?;
        }
        Ok(())
    }
}

/// A name as a prefix and the decimal number it ends with (without leading
/// zeros, so that the name comes back the same).
fn numbered(name: &str) -> Option<(&str, u64)> {
    let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (prefix, number) = name.split_at(name.len() - digits);
    if number.is_empty() || (number.len() > 1 && number.starts_with('0')) {
        return None;
    }
    Some((prefix, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ddf::proto::DeviceClass;

    use super::*;

    fn names(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Added(n, _) => format!("+{n}"),
                Effect::Removed(n) => format!("-{n}"),
            })
            .collect()
    }

    #[test]
    fn add_remove_and_list() {
        let m = Model::default();
        let (m, fx) = m.run("add b vendor=1234 device=0001 class=char\nadd a\n").unwrap();
        assert_eq!(names(&fx), ["+b", "+a"]);
        assert_eq!(m.listing(), "a\nb vendor=1234 device=0001 class=char\n");
        let (m, fx) = m.run("remove b").unwrap();
        assert_eq!(names(&fx), ["-b"]);
        assert_eq!(m.listing(), "a\n");
        assert!(m.get("b").is_none());
    }

    #[test]
    fn a_bad_line_applies_nothing() {
        let (m, _) = Model::default().run("add a\n").unwrap();
        for (text, line, err) in [
            ("add b\nadd a\n", 2, CmdError::Exists("a".into())),
            ("add b\nremove zz\n", 2, CmdError::NoSuchDevice("zz".into())),
            ("\n# x\nadd b\nbogus\n", 4, CmdError::UnknownCommand("bogus".into())),
            ("add b address=a\n", 1, CmdError::AddressTaken("a".into())),
            ("add b address=q\nadd c address=q\n", 2, CmdError::AddressTaken("q".into())),
            ("add a0\nadd-many a 2\n", 2, CmdError::Exists("a0".into())),
            ("add-many x 3\nadd x1\n", 2, CmdError::Exists("x1".into())),
            ("remove a\nremove a\n", 2, CmdError::NoSuchDevice("a".into())),
        ] {
            assert_eq!(m.run(text), Err(LineError { line, error: err }), "{text:?}");
        }
        assert_eq!(m.listing(), "a\n");
    }

    #[test]
    fn a_name_may_come_back_in_the_same_write() {
        let (m, _) = Model::default().run("add a k=1").unwrap();
        let (m, fx) = m.run("remove a\nadd a k=2\n").unwrap();
        assert_eq!(names(&fx), ["-a", "+a"]);
        assert_eq!(m.listing(), "a k=2\n");
        // An address is free again once its device is gone.
        let (m, _) = m.run("add b address=z\nremove b\nadd c address=z").unwrap();
        assert_eq!(m.listing(), "a k=2\nc address=z\n");
    }

    #[test]
    fn add_many_and_remove_all() {
        let (m, fx) = Model::default().run("add-many v 1000 vendor=1234 device=0001").unwrap();
        assert_eq!(fx.len(), 1000);
        assert_eq!(m.len(), 1000);
        assert_eq!(m.get("v999").unwrap().meta.len(), 2);
        assert!(m.get("v1000").is_none());
        let (m, fx) = m.run("remove-all").unwrap();
        assert_eq!(fx.len(), 1000);
        assert!(m.is_empty());
        // Nothing to remove is no error.
        let (_, fx) = m.run("remove-all").unwrap();
        assert!(fx.is_empty());
    }

    #[test]
    fn the_bus_has_limits() {
        let (m, _) = Model::default().run(&format!("add-many v {DEVICES_MAX}")).unwrap();
        assert_eq!(m.run("add one-more").unwrap_err().error, CmdError::Full);
        assert_eq!(m.run("add-many w 1").unwrap_err().error, CmdError::Full);
        assert_eq!(m.run("remove v0\nadd w").unwrap().0.len(), DEVICES_MAX);

        // Long descriptions fill the state store before the count does
        // (each one different, or they would share a line).
        let fat: String = (0..1000)
            .map(|n| format!("add f{n} {}\n", (0..8).map(|i| format!("k{i}={n:040}")).collect::<Vec<_>>().join(" ")))
            .collect();
        let err = Model::default().run(&fat).unwrap_err();
        assert!(matches!(err.error, CmdError::StateTooLarge(n) if n > STATE_MAX));
        assert_eq!(err.error.errno(), ddf::proto::Errno::ENOSPC);
    }

    #[test]
    fn state_round_trip() {
        let (m, _) = Model::default()
            .run(
                "add a vendor=1234 device=0001 class=char\n\
                 add disk address=slot-9 devclass=block size=1M serial=x=y\n\
                 add-many v 20 vendor=abcd\n",
            )
            .unwrap();
        let bytes = m.encode_state();
        assert!(bytes.starts_with(b"ddf-vbus-state 2\n"));
        let (back, bad) = Model::decode_state(&bytes, DEVICES_MAX).unwrap();
        assert!(bad.is_empty());
        assert_eq!(back, m);
        let disk = back.get("disk").unwrap();
        assert_eq!((disk.class, disk.size, disk.address.as_deref()), (DeviceClass::Block, 1 << 20, Some("slot-9")));

        let (empty, bad) = Model::decode_state(Model::default().encode_state().as_slice(), DEVICES_MAX).unwrap();
        assert!(empty.is_empty() && bad.is_empty());
    }

    /// Found by the `vbus_state` fuzz target (fuzz/regressions/vbus_state/):
    /// a saved line whose address is its name restored as a device with an
    /// explicit address, which saved without it and restored as another
    /// device: the round trip did not hold.
    #[test]
    fn a_saved_address_equal_to_the_name_is_the_default() {
        let bytes = b"ddf-vbus-state 2\nv0 address=v0\n";
        let (m, bad) = Model::decode_state(bytes, DEVICES_MAX).unwrap();
        assert!(bad.is_empty());
        assert_eq!(m.get("v0").unwrap().address, None);
        assert_eq!(m.encode_state(), b"ddf-vbus-state 2\nv0\n");
        let (back, _) = Model::decode_state(&m.encode_state(), DEVICES_MAX).unwrap();
        assert_eq!(back, m);
        // The same as an add line gives.
        let (added, _) = Model::default().run("add v0 address=v0").unwrap();
        assert_eq!(added, m);
    }

    #[test]
    fn damaged_state_loses_only_its_bad_lines() {
        let bytes = b"ddf-vbus-state 2\na k=1\nb/c\nd k\n\na k=2\ne\n\t0 3 /r k=1\n\t5 x /r\n\t7 2 r\n\t0 2 /r\n";
        let (m, bad) = Model::decode_state(bytes, DEVICES_MAX).unwrap();
        // The last run adds r0 and r1 again, so stops at its first device.
        assert_eq!(m.listing(), "a k=1\ne\nr0 k=1\nr1 k=1\nr2 k=1\n");
        assert_eq!(bad.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4, 6, 9, 10, 11]);
        let d = |b: &[u8]| Model::decode_state(b, DEVICES_MAX).map(|_| ());
        assert_eq!(d(b"\xff\xfe"), Err(StateError::NotUtf8));
        assert_eq!(d(b""), Err(StateError::Header(String::new())));
        assert_eq!(d(b"ddf-vbus-state 3\na\n"), Err(StateError::Header("ddf-vbus-state 3".into())));
        // A run longer than the bus takes is refused as a whole, before
        // anything is made of it.
        let (m, bad) = Model::decode_state(b"ddf-vbus-state 2\n\t0 1000000 /v\n", 10).unwrap();
        assert!(m.is_empty());
        assert_eq!(bad.len(), 1);
    }

    /// What the bus saved before runs (format 1) is still restored.
    #[test]
    fn the_format_before_runs_is_restored() {
        let (m, bad) = Model::decode_state(b"ddf-vbus-state 1\nv0 k=1\nv1 k=1\n", DEVICES_MAX).unwrap();
        assert!(bad.is_empty());
        assert_eq!(m.listing(), "v0 k=1\nv1 k=1\n");
    }

    /// `add-many` devices share a line of the saved list, so that a bus of
    /// 100,000 of them fits the state store and comes back the same; devices
    /// with gaps, other descriptions, addresses or leading zeros do too.
    #[test]
    fn runs_of_devices_save_as_one_line_and_restore_the_same() {
        let (m, _) = Model::with_limit(200_000)
            .run(
                "add-many v 100000 vendor=1234 device=0001\n\
                 add-many w 3 devclass=block size=4K\n\
                 remove v500\nremove w1\n\
                 add v500 vendor=9999\nadd v007\nadd x5 address=here\nadd 42\nadd 43\n",
            )
            .unwrap();
        let bytes = m.encode_state();
        assert!(bytes.len() < 1024, "{} bytes: {}", bytes.len(), String::from_utf8_lossy(&bytes));
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\t0 500 /v vendor=1234 device=0001\n"), "{text}");
        assert!(text.contains("\t501 99499 /v vendor=1234 device=0001\n"), "{text}");
        assert!(text.contains("\nw0 devclass=block size=4096\n"), "{text}");
        assert!(text.contains("\t42 2 /\n"), "{text}");
        let (back, bad) = Model::decode_state(&bytes, 200_000).unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(back, m);
        assert_eq!(back.len(), 100_000 - 2 + 2 + 1 + 1 + 2 + 2);
        // A bus that takes fewer restores what fits and says what did not.
        let (small, bad) = Model::decode_state(&bytes, 1000).unwrap();
        assert!(small.len() <= 1000 && !bad.is_empty());
    }
}
