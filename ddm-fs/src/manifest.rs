//! Driver manifests: what a driver is and how to start it, as data.
//!
//! A manifest is a small TOML file shipped with each driver:
//!
//! ```toml
//! name = "null"          # instance name, unique in one ddm
//! exec = "ddf-null"      # executable; relative names are looked up in the driver directory
//! autostart = true       # start when ddm starts
//! handles_survive_restart = true   # open files are re-opened on a new incarnation
//! [params]               # key = "value" pairs handed to the driver at start
//! [supervision]          # optional overrides of the restart policy
//! max_failures = 5       # deaths within `window_secs` that quarantine it
//! window_secs = 60
//! backoff_ms = 100       # wait before the 2nd restart; doubles each time
//! backoff_max_ms = 5000
//! heartbeat_ms = 1000    # ping period
//! heartbeat_timeout_ms = 3000   # no pong for this long: hung, killed
//! request_timeout_ms = 5000     # open/ioctl/poll unanswered this long: hung
//! blocking_calls = ["read", "write"]   # calls that may wait forever
//! [sandbox]              # how the process is confined
//! user = "nobody"        # run as this user (default: ddm's)
//! landlock = true        # open no file but these (default: true)
//! read = ["/sys"]        # and below
//! write = []
//! [dma]                  # DMA memory ddm allocates for it (see `crate::dma`)
//! bytes = "4M"           # how much (rounded up to whole pages)
//! contiguous = "2M"      # the longest run that must be physically contiguous
//! ```
//!
//! The built-in drivers' manifests are compiled into `ddm` (so it needs no
//! configuration); `--manifest FILE` adds more. Unknown keys are an error, so
//! a typo does not pass silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ddf::params::Size;
use ddf::proto::DMA_PAGES_MAX;
use serde::Deserialize;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Instance name.
    pub name: String,
    /// Executable name or path.
    pub exec: String,
    /// Start with ddm.
    #[serde(default)]
    pub autostart: bool,
    /// Whether open files stay usable across a restart (the DDM re-opens
    /// them on the new incarnation). Only for drivers whose handles carry no
    /// state a restart would lose.
    #[serde(default)]
    pub handles_survive_restart: bool,
    /// Parameters for the driver.
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    /// Restart policy and hang detection.
    #[serde(default)]
    pub supervision: Supervision,
    /// Which devices, reported by bus drivers, this driver serves (the
    /// plugin manager starts it, or hands it the device, when one appears).
    #[serde(default, rename = "match")]
    pub matches: Option<Match>,
    /// How the driver's process is confined.
    #[serde(default)]
    pub sandbox: Sandbox,
    /// DMA memory the driver needs: ddm allocates, pins and resolves it,
    /// and hands it to every incarnation.
    #[serde(default)]
    pub dma: Option<Dma>,
    /// Where it came from, for messages.
    #[serde(skip)]
    pub source: String,
}

/// How a driver is supervised. Every field has a documented default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Supervision {
    /// Deaths within [`Supervision::window_secs`] that put the driver in the
    /// `failed` state (quarantine) instead of restarting it again.
    pub max_failures: u32,
    /// The window for counting deaths, in seconds.
    pub window_secs: u64,
    /// The first restart is immediate; the second waits this long, and each
    /// later one twice as long as the one before.
    pub backoff_ms: u64,
    /// The longest wait between restarts.
    pub backoff_max_ms: u64,
    /// How often the DDM pings the driver.
    pub heartbeat_ms: u64,
    /// A driver that has not answered a ping for this long is hung.
    pub heartbeat_timeout_ms: u64,
    /// An open, ioctl, poll or close unanswered for this long means the
    /// driver is hung.
    pub request_timeout_ms: u64,
    /// Calls that may wait forever (a keyboard read waits for a key).
    pub blocking_calls: Vec<String>,
}

impl Default for Supervision {
    fn default() -> Self {
        Supervision {
            max_failures: 5,
            window_secs: 60,
            backoff_ms: 100,
            backoff_max_ms: 5000,
            heartbeat_ms: 1000,
            heartbeat_timeout_ms: 3000,
            request_timeout_ms: 5000,
            blocking_calls: vec!["read".into(), "write".into()],
        }
    }
}

/// How a driver's process is confined (see `crate::sandbox`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sandbox {
    /// Run as this user (name or number) instead of ddm's.
    pub user: Option<String>,
    /// Confine the files it can open with Landlock.
    pub landlock: bool,
    /// Paths it may read (and below them), besides what any program needs.
    pub read: Vec<String>,
    /// Paths it may read and write.
    pub write: Vec<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox { user: None, landlock: true, read: Vec::new(), write: Vec::new() }
    }
}

/// A driver's request for DMA memory (its `[dma]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dma {
    /// Bytes wanted; rounded up to whole pages of the size used.
    pub bytes: Size,
    /// The longest run that must be physically contiguous: a power of two
    /// of at least 4K [default: 2M, one huge page]. Every run of this many
    /// bytes that starts at a multiple of it is contiguous. `4K` (the base
    /// page) also accepts ordinary locked pages when no huge page can be had.
    #[serde(default = "Dma::default_contiguous")]
    pub contiguous: Size,
}

impl Dma {
    /// One huge page of the usual size.
    fn default_contiguous() -> Size {
        Size(2 << 20)
    }

    /// What is wrong with the request, if anything.
    fn check(&self) -> Result<(), String> {
        let (bytes, contiguous) = (self.bytes.bytes(), self.contiguous.bytes());
        if bytes == 0 {
            return Err("[dma] bytes must be more than 0".into());
        }
        if contiguous < 4096 || !contiguous.is_power_of_two() {
            return Err(format!(
                "[dma] contiguous = \"{}\" must be a power of two of at least 4K (4K, 64K, 2M, ...)",
                self.contiguous
            ));
        }
        let runs = bytes.div_ceil(contiguous);
        if runs > DMA_PAGES_MAX as u64 {
            return Err(format!(
                "[dma] bytes = \"{}\" is {runs} runs of {}; at most {DMA_PAGES_MAX} fit one grant: ask for less, or for longer runs",
                self.bytes, self.contiguous
            ));
        }
        Ok(())
    }
}

/// What devices a driver serves. Every field given must match; the values
/// are glob patterns (`*`, `?`, `[a-f]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// The kind of bus (`pci`, `vbus`).
    pub bus: String,
    /// The device class its bus driver gave it (`char`, `block`).
    #[serde(default)]
    pub class: Option<String>,
    /// Identifier patterns by key (`vendor = "0x1af4"`, `device = "0x10*"`).
    #[serde(default)]
    pub ids: BTreeMap<String, String>,
}

/// Whether `value` matches the glob `pat` (`*`, `?`, `[a-f]`, as in
/// ddf.rules(5)); a pattern that does not parse matches nothing.
pub fn glob(pat: &str, value: &str) -> bool {
    access_policy::Pattern::parse(pat).map(|p| p.matches(value)).unwrap_or(false)
}

impl Match {
    /// Whether a device of `kind` and `class` with identifiers `meta` matches.
    pub fn matches(&self, kind: &str, class: &str, meta: &[(String, String)]) -> bool {
        if !glob(&self.bus, kind) {
            return false;
        }
        if let Some(c) = &self.class {
            if !glob(c, class) {
                return false;
            }
        }
        self.ids.iter().all(|(key, pat)| meta.iter().find(|(k, _)| k == key).is_some_and(|(_, v)| glob(pat, v)))
    }
}

/// Manifests of the drivers that ship with ddf, compiled in.
const BUILTIN: &[(&str, &str)] = &[
    ("builtin:null", include_str!("../../drivers/null/manifest.toml")),
    ("builtin:keyboard", include_str!("../../drivers/keyboard/manifest.toml")),
    ("builtin:ramdisk", include_str!("../../drivers/ramdisk/manifest.toml")),
    ("builtin:pci", include_str!("../../drivers/pci/manifest.toml")),
    ("builtin:vbus", include_str!("../../drivers/vbus/manifest.toml")),
];

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is wrong.
    #[error("manifest {source_name}: {message}")]
    Parse {
        /// Where it came from.
        source_name: String,
        /// What is wrong (with line and column from the TOML parser).
        message: String,
    },
    /// Two manifests claim one name.
    #[error("two drivers are named {0:?}; instance names must be unique")]
    Duplicate(String),
}

impl Manifest {
    /// Parses `text`, naming `source_name` in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Manifest, ManifestError> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if m.name.is_empty() || m.name.contains('/') {
            return Err(ManifestError::Parse {
                source_name: source_name.to_owned(),
                message: format!("name {:?} must be non-empty and have no '/'", m.name),
            });
        }
        if let Some(dma) = &m.dma {
            dma.check().map_err(|message| ManifestError::Parse { source_name: source_name.to_owned(), message })?;
        }
        m.source = source_name.to_owned();
        Ok(m)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_owned(), source })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// The built-in manifests.
    pub fn builtin() -> Result<Vec<Manifest>, ManifestError> {
        BUILTIN.iter().map(|(name, text)| Manifest::parse(text, name)).collect()
    }

    /// Parameters as strings, in key order.
    pub fn param_pairs(&self) -> Vec<(String, String)> {
        self.params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()
    }

    /// The executable to run: `exec` as is when it has a `/`, else in `dir`.
    pub fn exec_path(&self, dir: &Path) -> PathBuf {
        if self.exec.contains('/') {
            PathBuf::from(&self.exec)
        } else {
            dir.join(&self.exec)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn builtins_parse() {
        let all = Manifest::builtin().unwrap();
        assert!(all.iter().any(|m| m.name == "null" && m.autostart));
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        let e = Manifest::parse("name = \"x\"\nexec = 3\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("t.toml"), "{e}");
        let e = Manifest::parse("name = \"x\"\nexec = \"y\"\nautostrat = true\n", "t.toml").unwrap_err();
        assert!(e.to_string().contains("autostrat"), "{e}");
        assert!(Manifest::parse("name = \"a/b\"\nexec = \"y\"\n", "t").is_err());
    }

    #[test]
    fn match_sections_match_by_glob() {
        let m = Manifest::parse(
            "name = \"v\"\nexec = \"e\"\n[match]\nbus = \"vbus\"\nclass = \"char\"\n[match.ids]\nvendor = \"12*\"\n",
            "t",
        )
        .unwrap();
        let mm = m.matches.unwrap();
        let meta = vec![("vendor".to_owned(), "1234".to_owned())];
        assert!(mm.matches("vbus", "char", &meta));
        assert!(!mm.matches("pci", "char", &meta));
        assert!(!mm.matches("vbus", "block", &meta));
        assert!(!mm.matches("vbus", "char", &[("vendor".into(), "9999".into())]));
        assert!(!mm.matches("vbus", "char", &[]));
    }

    #[test]
    fn dma_requests_parse_with_a_default_contiguity_and_bad_ones_are_named() {
        let m = Manifest::parse("name = \"d\"\nexec = \"e\"\n[dma]\nbytes = \"4M\"\n", "t").unwrap();
        assert_eq!(m.dma, Some(Dma { bytes: Size(4 << 20), contiguous: Size(2 << 20) }));
        let m = Manifest::parse("name = \"d\"\nexec = \"e\"\n[dma]\nbytes = 8192\ncontiguous = \"4K\"\n", "t").unwrap();
        assert_eq!(m.dma, Some(Dma { bytes: Size(8192), contiguous: Size(4096) }));
        assert_eq!(Manifest::parse("name = \"d\"\nexec = \"e\"\n", "t").unwrap().dma, None);
        for (table, why) in [
            ("bytes = \"0\"", "more than 0"),
            ("bytes = \"4M\"\ncontiguous = \"3K\"", "power of two"),
            ("bytes = \"4M\"\ncontiguous = \"1K\"", "at least 4K"),
            ("bytes = \"65M\"\ncontiguous = \"4K\"", "16640 runs of 4K"),
            ("bytes = \"lots\"", "not a size"),
            ("byte = \"4M\"", "unknown field"),
            ("contiguous = \"2M\"", "missing field `bytes`"),
        ] {
            let text = format!("name = \"d\"\nexec = \"e\"\n[dma]\n{table}\n");
            let e = Manifest::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(e.contains("t.toml") && e.contains(why), "{table}: {e}");
        }
    }

    #[test]
    fn params_become_strings() {
        let m = Manifest::parse("name = \"r\"\nexec = \"e\"\n[params]\nsize = \"64M\"\ncount = 2\n", "t").unwrap();
        assert_eq!(m.param_pairs(), vec![("count".into(), "2".into()), ("size".into(), "64M".into())]);
    }
}
