//! The driver's start parameters (see the crate documentation for what
//! each means), read with [`ddf::params`] and checked once, before any
//! device appears.
//!
//! [`StartInfo::config`] does the parsing: choices are lowercase names,
//! numbers decimal (or `0x` hex), `devices` a comma-separated list, and an
//! unknown key is refused, as every ddf driver refuses one. What serde
//! cannot say (the ranges, the node names, `scancodes`' hex) is checked
//! after, and a wrong value is a [`ParamError`] naming the instance, the
//! key and the value as given, just like a value that does not parse.

use std::path::PathBuf;
use std::time::Duration;

use ddf::driver::StartInfo;
use ddf::input::{Layout, EVENT_SIZE};
use ddf::params::ParamError;
use log::warn;
use serde::{Deserialize, Deserializer};

/// Bytes a handle buffers by default.
pub const DEFAULT_BUFFER: usize = 4096;
/// The largest `buffer`.
pub const MAX_BUFFER: usize = 1 << 20;
/// The most virtual keyboards (`count`).
pub const MAX_COUNT: usize = 64;
/// How often the i8042 is polled by default, in milliseconds.
pub const DEFAULT_POLL_MS: u64 = 10;
/// The range of `poll_ms`.
pub const POLL_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=1000;
/// Events each evdev handle holds by default: more than the kernel's 64
/// ([`ddf::input::evnode::MIN_QUEUE`]), so that one `ddmctl type` write
/// (170 records, as many events) never overflows a reader that keeps up.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;
/// The range of `event_buffer`.
pub const EVENT_BUFFER_RANGE: std::ops::RangeInclusive<usize> = 4..=65536;

/// Where keys come from (`source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Every evdev keyboard; if there is none, virtual keyboards.
    #[default]
    Auto,
    /// Every evdev keyboard (or those named by `devices`); none is an error.
    Evdev,
    /// `count` virtual keyboards.
    Virtual,
    /// One PS/2 keyboard behind an i8042 controller.
    I8042,
}

/// Which port backend the i8042 source uses (`ports`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortsKind {
    /// The emulated port space with an emulated controller.
    #[default]
    Emulated,
    /// The machine's ports, through `ioperm` (explicit only).
    Real,
}

/// The parameters; the fields are the manifest's keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `source`.
    pub source: SourceKind,
    /// `name`: devices are `<name>0`, `<name>1`, ...
    pub name: String,
    /// `count`: virtual keyboards (also for `auto` without evdev keyboards).
    pub count: usize,
    /// `buffer`: bytes per handle.
    pub buffer: usize,
    /// `devices`: evdev nodes to use instead of scanning `/dev/input`.
    pub devices: Vec<PathBuf>,
    /// `ports`: the i8042's port backend.
    pub ports: PortsKind,
    /// `scancodes`: bytes the emulated i8042 sends when its device is first opened.
    #[serde(deserialize_with = "hex_bytes")]
    pub scancodes: Vec<u8>,
    /// `poll_ms`: the i8042 poll interval (see [`Config::poll`]).
    pub poll_ms: u64,
    /// `layout`: how text mode decodes keys (and `ddmctl type` types them).
    pub layout: Layout,
    /// `input_bus`: the bus the evdev nodes are on. Once
    /// [`Config::from_start`] has read it, `None` means no evdev nodes (the
    /// manifest said `""`); before, it means "not given".
    pub input_bus: Option<String>,
    /// `event_buffer`: events each evdev handle holds.
    pub event_buffer: usize,
}

impl Default for Config {
    /// The defaults, `input_bus` not given.
    fn default() -> Config {
        Config {
            source: SourceKind::Auto,
            name: "keyboard".to_owned(),
            count: 1,
            buffer: DEFAULT_BUFFER,
            devices: Vec::new(),
            ports: PortsKind::Emulated,
            scancodes: Vec::new(),
            poll_ms: DEFAULT_POLL_MS,
            layout: Layout::Us,
            input_bus: None,
            event_buffer: DEFAULT_EVENT_BUFFER,
        }
    }
}

/// Whether `name` is a good node or bus name: 1-64 letters, digits, `-`
/// or `_`.
fn is_node_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    /// Reads and checks the parameters of `info`. A later key overrides an
    /// earlier one; an unknown key or a bad value is an error that names the
    /// instance, the key and the value. The evdev nodes' bus defaults to
    /// `input-<instance>`, so that two keyboard drivers never ask for the
    /// same bus (the built-in manifest says `input`). Parameters the chosen
    /// source does not use are logged.
    pub fn from_start(info: &StartInfo) -> Result<Config, ParamError> {
        let mut c: Config = info.config()?;
        let bad = |key: &str, reason: String| ParamError {
            instance: info.instance.clone(),
            key: Some(key.to_owned()),
            value: Some(info.param(key).unwrap_or_default().to_owned()),
            reason,
        };
        const NODE_NAME: &str = "expected 1-64 letters, digits, '-' or '_'";
        c.name = c.name.trim().to_owned();
        if !is_node_name(&c.name) {
            return Err(bad("name", NODE_NAME.to_owned()));
        }
        c.input_bus = match c.input_bus.as_deref().map(str::trim) {
            None => {
                let default_bus = format!("input-{}", info.instance);
                let bus = is_node_name(&default_bus).then_some(default_bus);
                if bus.is_none() {
                    warn!(
                        "instance {:?} makes no bus name: no evdev nodes unless the manifest names input_bus",
                        info.instance
                    );
                }
                bus
            }
            Some("") => None,
            Some(bus) if is_node_name(bus) => Some(bus.to_owned()),
            Some(_) => return Err(bad("input_bus", format!("{NODE_NAME}, or \"\" for no evdev nodes"))),
        };
        if !EVENT_BUFFER_RANGE.contains(&c.event_buffer) {
            let (lo, hi) = (EVENT_BUFFER_RANGE.start(), EVENT_BUFFER_RANGE.end());
            return Err(bad("event_buffer", format!("expected events from {lo} to {hi}")));
        }
        if !(1..=MAX_COUNT).contains(&c.count) {
            return Err(bad("count", format!("expected a number from 1 to {MAX_COUNT}")));
        }
        if !(EVENT_SIZE..=MAX_BUFFER).contains(&c.buffer) {
            return Err(bad("buffer", format!("expected bytes from {EVENT_SIZE} to {MAX_BUFFER}")));
        }
        if !POLL_MS_RANGE.contains(&c.poll_ms) {
            let (lo, hi) = (POLL_MS_RANGE.start(), POLL_MS_RANGE.end());
            return Err(bad("poll_ms", format!("expected milliseconds from {lo} to {hi}")));
        }
        c.warn_unused(info);
        Ok(c)
    }

    /// `poll_ms` as a duration.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// Logs parameters that the chosen source does not use.
    fn warn_unused(&self, info: &StartInfo) {
        let given = |k: &str| info.param(k).is_some();
        let unused: &[&str] = match self.source {
            SourceKind::Auto => &["ports", "scancodes", "poll_ms"],
            SourceKind::Evdev => &["count", "ports", "scancodes", "poll_ms"],
            SourceKind::Virtual => &["devices", "ports", "scancodes", "poll_ms"],
            SourceKind::I8042 => &["count", "devices"],
        };
        for key in unused.iter().filter(|k| given(k)) {
            warn!("parameter {key} is not used with source={:?}", self.source);
        }
        if self.source == SourceKind::I8042 && self.ports == PortsKind::Real && given("scancodes") {
            warn!("parameter scancodes is only used with ports=emulated");
        }
    }
}

/// `scancodes`: bytes written as hex pairs; spaces, commas, colons and
/// dashes between bytes are allowed (`2a 23 a3 aa`, `2a23a3aa`, `2a:23`).
fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    parse_hex(&text).map_err(serde::de::Error::custom)
}

/// The bytes of [`hex_bytes`].
fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !matches!(b, b' ' | b',' | b':' | b'-' | b'\t')).collect();
    if digits.len() % 2 != 0 {
        return Err("expected hex bytes (pairs of hex digits)".to_owned());
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("{:?} is not a hex byte", String::from_utf8_lossy(pair)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(instance: &str, params: &[(&str, &str)]) -> Result<Config, ParamError> {
        Config::from_start(&StartInfo::new(instance, params))
    }

    #[test]
    fn defaults() {
        let c = config("keyboard", &[]).unwrap();
        assert_eq!(c, Config { input_bus: Some("input-keyboard".into()), ..Config::default() });
        assert_eq!((c.source, c.count, c.buffer, c.event_buffer), (SourceKind::Auto, 1, 4096, 1024));
        assert_eq!((c.layout, c.ports, c.poll()), (Layout::Us, PortsKind::Emulated, Duration::from_millis(10)));
        assert_eq!((c.name.as_str(), c.devices.len(), c.scancodes.len()), ("keyboard", 0, 0));
        // The bus follows the instance, so that two drivers never share one.
        let c = config("slowkbd", &[]).unwrap();
        assert_eq!(c.input_bus.as_deref(), Some("input-slowkbd"));
        // An instance that makes no bus name: no evdev nodes (and a warning).
        let c = config("a.b", &[]).unwrap();
        assert_eq!(c.input_bus, None);
    }

    #[test]
    fn every_parameter() {
        let c = config(
            "k",
            &[
                ("source", "i8042"),
                ("name", "ps2kbd"),
                ("buffer", "100"),
                ("ports", "real"),
                ("scancodes", "2a 23,a3:aa"),
                ("poll_ms", "5"),
                ("devices", "/dev/input/event3, /dev/input/event4"),
                ("count", "3"),
                ("layout", "de"),
                ("input_bus", "input"),
                ("event_buffer", "16"),
            ],
        )
        .unwrap();
        assert_eq!(c.source, SourceKind::I8042);
        assert_eq!(c.name, "ps2kbd");
        assert_eq!(c.buffer, 100);
        assert_eq!(c.ports, PortsKind::Real);
        assert_eq!(c.scancodes, [0x2a, 0x23, 0xa3, 0xaa]);
        assert_eq!(c.poll(), Duration::from_millis(5));
        assert_eq!(c.devices, [PathBuf::from("/dev/input/event3"), PathBuf::from("/dev/input/event4")]);
        assert_eq!(c.count, 3);
        assert_eq!((c.layout, c.input_bus.as_deref(), c.event_buffer), (Layout::De, Some("input"), 16));
        let c = config("k", &[("input_bus", "")]).unwrap();
        assert_eq!(c.input_bus, None, "an empty bus name: no evdev nodes");
        // Spaces around a value are not part of it.
        let c =
            config("k", &[("name", " ps2 "), ("input_bus", " in "), ("source", " virtual"), ("count", "2 ")]).unwrap();
        assert_eq!(
            (c.name.as_str(), c.input_bus.as_deref(), c.source, c.count),
            ("ps2", Some("in"), SourceKind::Virtual, 2)
        );
        let c = config("k", &[("input_bus", "  ")]).unwrap();
        assert_eq!(c.input_bus, None);
        let c = config("k", &[("scancodes", "")]).unwrap();
        assert!(c.scancodes.is_empty());
    }

    #[test]
    fn the_last_value_wins() {
        let c = config("k", &[("source", "evdev"), ("source", "virtual")]).unwrap();
        assert_eq!(c.source, SourceKind::Virtual);
        let c = config("k", &[("count", "0"), ("count", "2")]).unwrap();
        assert_eq!(c.count, 2, "only the value that wins is checked");
    }

    #[test]
    fn bad_values_name_the_instance_the_key_and_the_value() {
        for (k, v, why) in [
            ("source", "usb", "unknown variant `usb`, expected one of `auto`, `evdev`, `virtual`, `i8042`"),
            ("source", "Evdev", "unknown variant"),
            ("count", "0", "expected a number from 1 to 64"),
            ("count", "65", "expected a number from 1 to 64"),
            ("count", "many", "invalid digit"),
            ("count", "-1", "invalid digit"),
            ("buffer", "23", "expected bytes from 24 to 1048576"),
            ("buffer", "2000000", "expected bytes from 24 to 1048576"),
            ("ports", "yes", "expected `emulated` or `real`"),
            ("scancodes", "2a2", "pairs of hex digits"),
            ("scancodes", "zz", "\"zz\" is not a hex byte"),
            ("poll_ms", "0", "expected milliseconds from 1 to 1000"),
            ("poll_ms", "1001", "expected milliseconds from 1 to 1000"),
            ("name", "a/b", "expected 1-64 letters"),
            ("name", "", "expected 1-64 letters"),
            ("layout", "fr", "expected `us` or `de`"),
            ("input_bus", "a/b", "or \"\" for no evdev nodes"),
            ("input_bus", "..", "or \"\" for no evdev nodes"),
            ("event_buffer", "3", "expected events from 4 to 65536"),
            ("event_buffer", "65537", "expected events from 4 to 65536"),
        ] {
            let e = config("kbd", &[(k, v)]).unwrap_err();
            assert_eq!((e.instance.as_str(), e.key.as_deref(), e.value.as_deref()), ("kbd", Some(k), Some(v)), "{e}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("parameters of kbd: {k} = {v:?}: ")), "{text}");
            assert!(text.contains(why), "{k}={v}: {text}");
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = config("kbd", &[("source", "virtual"), ("colour", "red")]).unwrap_err();
        assert_eq!((e.key.as_deref(), e.value.as_deref()), (Some("colour"), Some("red")));
        assert!(e.to_string().contains("unknown field `colour`"), "{e}");
    }
}
