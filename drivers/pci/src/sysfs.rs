//! Reading the PCI functions of a machine from sysfs.
//!
//! Each directory (or symlink) under `<root>/bus/pci/devices` is one PCI
//! function, named by its address (`0000:00:03.0`). From it we read the
//! identifier files (`vendor`, `device`, ...), the `resource` table, the
//! kernel driver bound to it (the `driver` symlink) and the size of its
//! `config` file. Everything is read with a bound on its size, and a file
//! that cannot be read only leaves its key out: one odd function never
//! stops the scan of the others.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use log::{debug, warn};

/// The identifier files read into metadata, in this order: (file, key).
/// Their text is kept as sysfs gives it (`0x1af4`), trimmed. The PCI class
/// is `pci_class`, not `class`: the DDM shows a node's device class (`char`,
/// `block`) as `user.ddf.class`, and does not let a bus's keys shadow its
/// own.
pub const ID_FILES: [(&str, &str); 7] = [
    ("vendor", "vendor"),
    ("device", "device"),
    ("subsystem_vendor", "subsystem_vendor"),
    ("subsystem_device", "subsystem_device"),
    ("class", "pci_class"),
    ("revision", "revision"),
    ("irq", "irq"),
];

/// The metadata key of the compact `resource` table.
pub const META_RESOURCES: &str = "resources";

/// The metadata key of the kernel driver bound to a function (not `driver`:
/// `user.ddf.driver` is the ddf driver serving the node).
pub const META_KERNEL_DRIVER: &str = "kernel_driver";

/// The most bytes read from one attribute file (sysfs attributes are at
/// most a page).
const ATTR_MAX: u64 = 4096;

/// The most lines of a `resource` file taken (6 BARs, the ROM, and bridge
/// windows: 17 on current kernels).
const RESOURCE_LINES_MAX: usize = 64;

/// The most functions one scan takes; more are logged and left out.
pub const FUNCTIONS_MAX: usize = 16_384;

/// What can go wrong reading sysfs.
#[derive(Debug, thiserror::Error)]
pub enum SysfsError {
    /// The directory of PCI functions cannot be listed.
    #[error("cannot list {path}")]
    ListDevices {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// One PCI function as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Its address, `domain:bus:slot.function` (`0000:00:03.0`).
    pub address: String,
    /// The size of its `config` file: 256 (conventional PCI) or 4096 (PCI
    /// Express); 0 if it has none.
    pub config_size: u64,
    /// `vendor`, `device`, `subsystem_vendor`, `subsystem_device`,
    /// `pci_class`, `revision`, `irq` (those whose file could be read), then
    /// `resources` and `kernel_driver`.
    pub meta: Vec<(String, String)>,
}

impl Function {
    /// The value of metadata `key`.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A sysfs tree: the real one at `/sys`, or a fake one in tests.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    /// The sysfs mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `<root>/bus/pci/devices`.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    /// The `config` file of the function at `address`.
    pub fn config_path(&self, address: &str) -> PathBuf {
        self.devices_dir().join(address).join("config")
    }

    /// Every PCI function, by address. Functions that vanish while they are
    /// read are left out.
    pub fn scan(&self) -> Result<BTreeMap<String, Function>, SysfsError> {
        let dir = self.devices_dir();
        let entries =
            std::fs::read_dir(&dir).map_err(|source| SysfsError::ListDevices { path: dir.clone(), source })?;
        let mut out = BTreeMap::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    warn!("pci: listing {}: {e}", dir.display());
                    continue;
                }
            };
            let Some(address) = entry.file_name().to_str().map(str::to_owned) else {
                warn!("pci: skipping {:?} in {}: not UTF-8", entry.file_name(), dir.display());
                continue;
            };
            if address.starts_with('.') {
                continue;
            }
            if out.len() >= FUNCTIONS_MAX {
                warn!("pci: more than {FUNCTIONS_MAX} functions; the rest are left out");
                break;
            }
            if let Some(f) = self.function(&address) {
                out.insert(address, f);
            }
        }
        Ok(out)
    }

    /// The function at `address`, or `None` if it is gone (its directory or
    /// its `config` file does not exist).
    pub fn function(&self, address: &str) -> Option<Function> {
        let dir = self.devices_dir().join(address);
        let config_size = match std::fs::metadata(dir.join("config")) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !dir.exists() {
                    debug!("pci: {address} vanished while scanning");
                    return None;
                }
                warn!("pci: {address} has no config file");
                0
            }
            Err(e) => {
                warn!("pci: {address}: config: {e}");
                0
            }
        };
        let mut meta = Vec::with_capacity(ID_FILES.len() + 2);
        for (file, key) in ID_FILES {
            match read_attr(&dir.join(file)) {
                Ok(v) => meta.push((key.to_owned(), v)),
                Err(e) => debug!("pci: {address}: {file}: {e}"),
            }
        }
        match read_attr(&dir.join("resource")) {
            Ok(text) => meta.push((META_RESOURCES.to_owned(), compact_resources(&text))),
            Err(e) => debug!("pci: {address}: resource: {e}"),
        }
        meta.push((META_KERNEL_DRIVER.to_owned(), kernel_driver(&dir)));
        Some(Function { address: address.to_owned(), config_size, meta })
    }
}

/// Reads a small attribute file: at most [`ATTR_MAX`] bytes, invalid UTF-8
/// replaced, surrounding white space trimmed.
fn read_attr(path: &Path) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?.take(ATTR_MAX).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// The name of the kernel driver bound to the function in `dir` (the last
/// component of its `driver` symlink), or empty when none is.
fn kernel_driver(dir: &Path) -> String {
    match std::fs::read_link(dir.join("driver")) {
        Ok(target) => target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The compact form of a sysfs `resource` file: each line is
/// `start end flags` in hexadecimal; the non-empty ones (start or end not
/// zero) become `start-end:flags`, with leading zeros dropped, joined by
/// spaces. Lines that do not parse are skipped.
///
/// ```
/// let text = "0x00000000fe000000 0x00000000fe003fff 0x000000000014220c\n\
///             0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
/// assert_eq!(ddf_pci::sysfs::compact_resources(text), "0xfe000000-0xfe003fff:0x14220c");
/// ```
pub fn compact_resources(text: &str) -> String {
    let mut out = Vec::new();
    for line in text.lines().take(RESOURCE_LINES_MAX) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [start, end, flags] = fields.as_slice() else {
            if !line.trim().is_empty() {
                debug!("pci: resource line {line:?} skipped");
            }
            continue;
        };
        let (Some(start), Some(end), Some(flags)) = (hex(start), hex(end), hex(flags)) else {
            debug!("pci: resource line {line:?} skipped");
            continue;
        };
        if start == 0 && end == 0 {
            continue;
        }
        out.push(format!("{start:#x}-{end:#x}:{flags:#x}"));
    }
    out.join(" ")
}

/// Parses `0x`-prefixed (or bare) hexadecimal.
fn hex(s: &str) -> Option<u64> {
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Writes a fake function under `root` the way sysfs lays it out.
    pub(crate) fn fake_function(root: &Path, addr: &str, vendor: &str, config: &[u8], driver: Option<&str>) {
        let dir = root.join("bus/pci/devices").join(addr);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config"), config).unwrap();
        std::fs::write(dir.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(dir.join("device"), "0x1041\n").unwrap();
        std::fs::write(dir.join("subsystem_vendor"), "0x1af4\n").unwrap();
        std::fs::write(dir.join("subsystem_device"), "0x1100\n").unwrap();
        std::fs::write(dir.join("class"), "0x020000\n").unwrap();
        std::fs::write(dir.join("revision"), "0x01\n").unwrap();
        std::fs::write(dir.join("irq"), "11\n").unwrap();
        std::fs::write(
            dir.join("resource"),
            "0x000000000000c040 0x000000000000c05f 0x0000000000040101\n\
             0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
             0x000000fe00000000 0x000000fe00003fff 0x000000000014220c\n",
        )
        .unwrap();
        if let Some(d) = driver {
            let drv = root.join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&drv).unwrap();
            std::os::unix::fs::symlink(&drv, dir.join("driver")).unwrap();
        }
    }

    #[test]
    fn scan_reads_every_function_and_its_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        fake_function(tmp.path(), "0000:00:03.0", "0x1af4", &[0xf4, 0x1a, 0x41, 0x10], Some("virtio-pci"));
        fake_function(tmp.path(), "0000:00:04.0", "0x8086", &[0u8; 256], None);
        let fs = Sysfs::new(tmp.path());
        let all = fs.scan().unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["0000:00:03.0", "0000:00:04.0"]);

        let f = &all["0000:00:03.0"];
        assert_eq!(f.config_size, 4);
        let keys: Vec<&str> = f.meta.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "vendor",
                "device",
                "subsystem_vendor",
                "subsystem_device",
                "pci_class",
                "revision",
                "irq",
                "resources",
                "kernel_driver"
            ]
        );
        assert_eq!(f.meta("vendor"), Some("0x1af4"));
        assert_eq!(f.meta("pci_class"), Some("0x020000"));
        assert_eq!(f.meta("irq"), Some("11"));
        assert_eq!(f.meta("kernel_driver"), Some("virtio-pci"));
        assert_eq!(f.meta("resources"), Some("0xc040-0xc05f:0x40101 0xfe00000000-0xfe00003fff:0x14220c"));

        let g = &all["0000:00:04.0"];
        assert_eq!(g.config_size, 256);
        assert_eq!(g.meta("vendor"), Some("0x8086"));
        assert_eq!(g.meta("kernel_driver"), Some(""));
        assert_eq!(fs.config_path("0000:00:04.0"), tmp.path().join("bus/pci/devices/0000:00:04.0/config"));
    }

    #[test]
    fn missing_files_leave_their_key_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bus/pci/devices/0000:00:05.0");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vendor"), "0x1234").unwrap();
        let all = Sysfs::new(tmp.path()).scan().unwrap();
        let f = &all["0000:00:05.0"];
        assert_eq!(f.config_size, 0);
        assert_eq!(f.meta, [("vendor".to_owned(), "0x1234".to_owned()), ("kernel_driver".to_owned(), String::new())]);
    }

    #[test]
    fn a_missing_bus_is_an_error_not_an_empty_bus() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(Sysfs::new(tmp.path()).scan(), Err(SysfsError::ListDevices { .. })));
        std::fs::create_dir_all(tmp.path().join("bus/pci/devices")).unwrap();
        assert!(Sysfs::new(tmp.path()).scan().unwrap().is_empty());
    }

    #[test]
    fn a_vanished_function_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(Sysfs::new(tmp.path()).function("0000:00:09.0"), None);
    }

    #[test]
    fn resources_skip_empty_and_malformed_lines() {
        let text = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    garbage\n\
                    0xzz 0x1 0x2\n\
                    \n\
                    0x0000000000001000 0x0000000000001fff 0x0000000000000101\n\
                    0x1 0x2\n";
        assert_eq!(compact_resources(text), "0x1000-0x1fff:0x101");
        assert_eq!(compact_resources(""), "");
    }

    /// The real machine, when it has a PCI bus: every function has a config
    /// file whose size the scan reports.
    #[test]
    fn the_real_sysfs_scans() {
        let fs = Sysfs::new("/sys");
        let Ok(all) = fs.scan() else { return };
        for (addr, f) in &all {
            let len = std::fs::metadata(fs.config_path(addr)).map(|m| m.len()).unwrap_or(0);
            assert_eq!(f.config_size, len, "{addr}");
            assert!(f.meta("vendor").is_some_and(|v| v.starts_with("0x")), "{addr}");
        }
    }
}
