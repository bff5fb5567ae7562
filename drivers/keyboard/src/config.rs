//! The driver's start parameters (see the crate documentation for what
//! each means), parsed and checked once, before any device appears.

use std::path::PathBuf;
use std::time::Duration;

use ddf::input::EVENT_SIZE;
use log::warn;

/// Bytes a handle buffers by default.
pub const DEFAULT_BUFFER: usize = 4096;
/// The largest `buffer`.
pub const MAX_BUFFER: usize = 1 << 20;
/// The most virtual keyboards (`count`).
pub const MAX_COUNT: usize = 64;
/// How often the i8042 is polled by default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(10);

/// Where keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// Every evdev keyboard; if there is none, virtual keyboards.
    Auto,
    /// Every evdev keyboard (or those named by `devices`); none is an error.
    Evdev,
    /// `count` virtual keyboards.
    Virtual,
    /// One PS/2 keyboard behind an i8042 controller.
    I8042,
}

/// Which port backend the i8042 source uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortsKind {
    /// The emulated port space with an emulated controller.
    Emulated,
    /// The machine's ports, through `ioperm` (explicit only).
    Real,
}

/// The parsed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub scancodes: Vec<u8>,
    /// `poll_ms`: the i8042 poll interval.
    pub poll: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: SourceKind::Auto,
            name: "keyboard".to_owned(),
            count: 1,
            buffer: DEFAULT_BUFFER,
            devices: Vec::new(),
            ports: PortsKind::Emulated,
            scancodes: Vec::new(),
            poll: DEFAULT_POLL,
        }
    }
}

impl Config {
    /// Parses `key=value` parameters; a later key overrides an earlier one.
    /// Unknown keys are logged and ignored (the DDM may pass more than a
    /// driver knows); bad values are an error that names the parameter.
    pub fn from_params(params: &[(String, String)]) -> Result<Config, String> {
        let mut c = Config::default();
        for (key, value) in params {
            let value = value.trim();
            let bad = |what: &str| format!("parameter {key}={value:?}: {what}");
            match key.as_str() {
                "source" => {
                    c.source = match value {
                        "auto" => SourceKind::Auto,
                        "evdev" => SourceKind::Evdev,
                        "virtual" => SourceKind::Virtual,
                        "i8042" => SourceKind::I8042,
                        _ => return Err(bad("expected auto, evdev, virtual or i8042")),
                    }
                }
                "name" => {
                    let ok = !value.is_empty()
                        && value.len() <= 64
                        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                    if !ok {
                        return Err(bad("expected 1-64 letters, digits, '-' or '_'"));
                    }
                    c.name = value.to_owned();
                }
                "count" => {
                    c.count = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_COUNT).contains(n))
                        .ok_or_else(|| bad(&format!("expected a number from 1 to {MAX_COUNT}")))?;
                }
                "buffer" => {
                    c.buffer = value
                        .parse()
                        .ok()
                        .filter(|n| (EVENT_SIZE..=MAX_BUFFER).contains(n))
                        .ok_or_else(|| bad(&format!("expected bytes from {EVENT_SIZE} to {MAX_BUFFER}")))?;
                }
                "devices" => {
                    c.devices = value.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect();
                }
                "ports" => {
                    c.ports = match value {
                        "emulated" => PortsKind::Emulated,
                        "real" => PortsKind::Real,
                        _ => return Err(bad("expected emulated or real")),
                    }
                }
                "scancodes" => c.scancodes = parse_hex(value).map_err(|e| bad(&e))?,
                "poll_ms" => {
                    let ms: u64 = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad("expected milliseconds from 1 to 1000"))?;
                    c.poll = Duration::from_millis(ms);
                }
                _ => warn!("ignoring unknown parameter {key}={value:?}"),
            }
        }
        c.warn_unused(params);
        Ok(c)
    }

    /// Logs parameters that the chosen source does not use.
    fn warn_unused(&self, params: &[(String, String)]) {
        let given = |k: &str| params.iter().any(|(key, _)| key == k);
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

/// Bytes written as hex pairs; spaces, commas, colons and dashes between
/// bytes are allowed (`2a 23 a3 aa`, `2a23a3aa`, `2a:23`).
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

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults() {
        assert_eq!(Config::from_params(&[]).unwrap(), Config::default());
        let c = Config::default();
        assert_eq!((c.source, c.count, c.buffer), (SourceKind::Auto, 1, 4096));
    }

    #[test]
    fn every_parameter() {
        let c = Config::from_params(&params(&[
            ("source", "i8042"),
            ("name", "ps2kbd"),
            ("buffer", "100"),
            ("ports", "real"),
            ("scancodes", "2a 23,a3:aa"),
            ("poll_ms", "5"),
            ("devices", "/dev/input/event3, /dev/input/event4"),
            ("count", "3"),
            ("something", "else"),
        ]))
        .unwrap();
        assert_eq!(c.source, SourceKind::I8042);
        assert_eq!(c.name, "ps2kbd");
        assert_eq!(c.buffer, 100);
        assert_eq!(c.ports, PortsKind::Real);
        assert_eq!(c.scancodes, [0x2a, 0x23, 0xa3, 0xaa]);
        assert_eq!(c.poll, Duration::from_millis(5));
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.count, 3);
    }

    #[test]
    fn the_last_value_wins() {
        let c = Config::from_params(&params(&[("source", "evdev"), ("source", "virtual")])).unwrap();
        assert_eq!(c.source, SourceKind::Virtual);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (k, v) in [
            ("source", "usb"),
            ("count", "0"),
            ("count", "65"),
            ("count", "many"),
            ("buffer", "23"),
            ("buffer", "2000000"),
            ("ports", "yes"),
            ("scancodes", "2a2"),
            ("scancodes", "zz"),
            ("poll_ms", "0"),
            ("name", "a/b"),
            ("name", ""),
        ] {
            let err = Config::from_params(&params(&[(k, v)])).unwrap_err();
            assert!(err.starts_with(&format!("parameter {k}=")), "{err}");
        }
    }
}
