//! The driver's start parameters (see the crate documentation for what
//! each means), parsed and checked once, before any device appears.

use std::path::PathBuf;
use std::time::Duration;

use ddf::input::{Layout, EVENT_SIZE};
use log::warn;

/// Bytes a handle buffers by default.
pub const DEFAULT_BUFFER: usize = 4096;
/// The largest `buffer`.
pub const MAX_BUFFER: usize = 1 << 20;
/// The most virtual keyboards (`count`).
pub const MAX_COUNT: usize = 64;
/// How often the i8042 is polled by default.
pub const DEFAULT_POLL: Duration = Duration::from_millis(10);
/// Events each evdev handle holds by default: more than the kernel's 64
/// ([`ddf::input::evnode::MIN_QUEUE`]), so that one `ddmctl type` write
/// (170 records, as many events) never overflows a reader that keeps up.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;
/// The range of `event_buffer`.
pub const EVENT_BUFFER_RANGE: std::ops::RangeInclusive<usize> = 4..=65536;

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
    /// `layout`: how text mode decodes keys (and `ddmctl type` types them).
    pub layout: Layout,
    /// `input_bus`: the bus the evdev nodes are on; `None`: no evdev nodes.
    pub input_bus: Option<String>,
    /// `event_buffer`: events each evdev handle holds.
    pub event_buffer: usize,
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
            layout: Layout::Us,
            input_bus: Some("input-keyboard".to_owned()),
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
    /// Parses `key=value` parameters of the driver instance `instance`; a
    /// later key overrides an earlier one. Unknown keys are logged and
    /// ignored (the DDM may pass more than a driver knows); bad values are
    /// an error that names the parameter. The evdev nodes' bus defaults to
    /// `input-<instance>`, so that two keyboard drivers never ask for the
    /// same bus (the built-in manifest says `input`).
    pub fn from_params(instance: &str, params: &[(String, String)]) -> Result<Config, String> {
        let mut c = Config::default();
        let default_bus = format!("input-{instance}");
        c.input_bus = is_node_name(&default_bus).then_some(default_bus);
        if c.input_bus.is_none() && !params.iter().any(|(k, _)| k == "input_bus") {
            warn!("instance {instance:?} makes no bus name: no evdev nodes unless the manifest names input_bus");
        }
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
                    if !is_node_name(value) {
                        return Err(bad("expected 1-64 letters, digits, '-' or '_'"));
                    }
                    c.name = value.to_owned();
                }
                "layout" => {
                    c.layout = Layout::parse(value).ok_or_else(|| {
                        let all: Vec<&str> = Layout::ALL.iter().map(|l| l.name()).collect();
                        bad(&format!("expected one of {}", all.join(", ")))
                    })?;
                }
                "input_bus" => {
                    if value.is_empty() {
                        c.input_bus = None;
                    } else if is_node_name(value) {
                        c.input_bus = Some(value.to_owned());
                    } else {
                        return Err(bad("expected 1-64 letters, digits, '-' or '_', or \"\" for no evdev nodes"));
                    }
                }
                "event_buffer" => {
                    c.event_buffer =
                        value.parse().ok().filter(|n| EVENT_BUFFER_RANGE.contains(n)).ok_or_else(|| {
                            bad(&format!(
                                "expected events from {} to {}",
                                EVENT_BUFFER_RANGE.start(),
                                EVENT_BUFFER_RANGE.end()
                            ))
                        })?;
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
        assert_eq!(Config::from_params("keyboard", &[]).unwrap(), Config::default());
        let c = Config::default();
        assert_eq!((c.source, c.count, c.buffer, c.event_buffer), (SourceKind::Auto, 1, 4096, 1024));
        assert_eq!((c.layout, c.input_bus.as_deref()), (Layout::Us, Some("input-keyboard")));
        // The bus follows the instance, so that two drivers never share one.
        let c = Config::from_params("slowkbd", &[]).unwrap();
        assert_eq!(c.input_bus.as_deref(), Some("input-slowkbd"));
    }

    #[test]
    fn every_parameter() {
        let c = Config::from_params(
            "k",
            &params(&[
                ("source", "i8042"),
                ("name", "ps2kbd"),
                ("buffer", "100"),
                ("ports", "real"),
                ("scancodes", "2a 23,a3:aa"),
                ("poll_ms", "5"),
                ("devices", "/dev/input/event3, /dev/input/event4"),
                ("count", "3"),
                ("something", "else"),
                ("layout", "de"),
                ("input_bus", "input"),
                ("event_buffer", "16"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source, SourceKind::I8042);
        assert_eq!(c.name, "ps2kbd");
        assert_eq!(c.buffer, 100);
        assert_eq!(c.ports, PortsKind::Real);
        assert_eq!(c.scancodes, [0x2a, 0x23, 0xa3, 0xaa]);
        assert_eq!(c.poll, Duration::from_millis(5));
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.count, 3);
        assert_eq!((c.layout, c.input_bus.as_deref(), c.event_buffer), (Layout::De, Some("input"), 16));
        let c = Config::from_params("k", &params(&[("input_bus", "")])).unwrap();
        assert_eq!(c.input_bus, None, "an empty bus name: no evdev nodes");
    }

    #[test]
    fn the_last_value_wins() {
        let c = Config::from_params("k", &params(&[("source", "evdev"), ("source", "virtual")])).unwrap();
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
            ("layout", "fr"),
            ("input_bus", "a/b"),
            ("input_bus", ".."),
            ("event_buffer", "3"),
            ("event_buffer", "65537"),
        ] {
            let err = Config::from_params("k", &params(&[(k, v)])).unwrap_err();
            assert!(err.starts_with(&format!("parameter {k}=")), "{err}");
        }
    }
}
