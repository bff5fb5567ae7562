//! The real `ddf-pci` binary, driven over the real libDriver protocol by a
//! stand-in for the DDM (this test), on a fake sysfs tree: the bus and one
//! block device per function with its identifiers, reads of the
//! configuration space at offsets, the refusal of writes, and a rescan
//! that reports what appeared, went and changed. Needs no root and no
//! mount.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ddf::proto::{Answer, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverToDdm, Errno, Handle, OpenFlags};
use ddf::testing::StandIn;

/// The driver under test, behind libddf's stand-in DDM.
struct Driver(StandIn);

impl Driver {
    fn spawn() -> Driver {
        Driver(StandIn::spawn(env!("CARGO_BIN_EXE_ddf-pci").as_ref()).unwrap())
    }

    /// Sends Start with `params`; returns what the driver said until Ready.
    fn start(&mut self, params: &[(&str, &str)]) -> Vec<DriverToDdm> {
        self.0.start("pci", params, Vec::new(), &[]).unwrap().into_iter().map(|s| s.msg).collect()
    }

    /// Makes a call; the reply and its payload (nothing may come before it).
    fn call(&mut self, call: Call, payload: &[u8]) -> (Result<Answer, Errno>, Vec<u8>) {
        let (before, result, data) = self.0.call(call, payload).unwrap();
        assert!(before.is_empty(), "unexpected before the reply: {before:?}");
        (result, data)
    }

    fn open(&mut self, device: DeviceId, flags: i32) -> Result<Handle, Errno> {
        self.0.open(device, OpenFlags(flags)).unwrap()
    }

    fn read(&mut self, handle: Handle, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        self.0.read(handle, offset, len).unwrap()
    }

    /// Asks for a rescan; returns what the driver said about it.
    fn rescan(&mut self) -> Vec<DriverToDdm> {
        self.0.exchange(&DdmToDriver::Rescan, &[]).unwrap().into_iter().map(|s| s.msg).collect()
    }
}

/// A function in the fake tree, the way sysfs lays it out.
fn function(root: &Path, addr: &str, vendor: &str, config: &[u8]) {
    let dir = root.join("bus/pci/devices").join(addr);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config"), config).unwrap();
    for (file, value) in [
        ("vendor", vendor),
        ("device", "0x1041"),
        ("subsystem_vendor", "0x1af4"),
        ("subsystem_device", "0x1100"),
        ("class", "0x020000"),
        ("revision", "0x01"),
        ("irq", "10"),
    ] {
        std::fs::write(dir.join(file), format!("{value}\n")).unwrap();
    }
    std::fs::write(
        dir.join("resource"),
        "0x00000000fe000000 0x00000000fe003fff 0x000000000014220c\n\
         0x0000000000000000 0x0000000000000000 0x0000000000000000\n",
    )
    .unwrap();
}

fn devices(said: &[DriverToDdm]) -> Vec<DeviceSpec> {
    said.iter()
        .filter_map(|m| match m {
            DriverToDdm::AddDevice(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pci_over_the_protocol_on_a_fake_sysfs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let config: Vec<u8> = (0..=255).collect();
    function(root, "0000:00:03.0", "0x1af4", &config);
    function(root, "0000:00:04.0", "0x8086", &config[..64]);
    let drv = root.join("bus/pci/drivers/virtio-pci");
    std::fs::create_dir_all(&drv).unwrap();
    std::os::unix::fs::symlink(&drv, root.join("bus/pci/devices/0000:00:03.0/driver")).unwrap();

    let mut d = Driver::spawn();
    let root_s = root.to_str().unwrap();
    let said = d.start(&[("sysfs_root", root_s), ("hotplug", "false")]);
    let Some(DriverToDdm::AddBus { bus, name, kind, parent: None }) = said.first() else {
        panic!("expected the bus first, got {said:?}")
    };
    assert_eq!((name.as_str(), kind.as_str()), ("pci", "pci"));
    let devs = devices(&said);
    assert_eq!(devs.len(), 2);
    let f3 = devs.iter().find(|s| s.name == "0000:00:03.0").unwrap().clone();
    assert_eq!(
        (f3.class, f3.size, f3.bus, f3.offer, f3.address.as_deref()),
        (DeviceClass::Block, 256, Some(*bus), true, Some("0000:00:03.0"))
    );
    let meta = |s: &DeviceSpec, k: &str| s.meta.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(meta(&f3, "vendor").as_deref(), Some("0x1af4"));
    assert_eq!(meta(&f3, "pci_class").as_deref(), Some("0x020000"));
    assert_eq!(meta(&f3, "irq").as_deref(), Some("10"));
    assert_eq!(meta(&f3, "kernel_driver").as_deref(), Some("virtio-pci"));
    assert_eq!(meta(&f3, "resources").as_deref(), Some("0xfe000000-0xfe003fff:0x14220c"));
    let f4 = devs.iter().find(|s| s.name == "0000:00:04.0").unwrap().clone();
    assert_eq!((f4.size, meta(&f4, "kernel_driver").as_deref()), (64, Some("")));

    // Read-only: opens for writing, and writes, are EROFS.
    assert_eq!(d.open(f3.device, libc::O_RDWR), Err(Errno(libc::EROFS)));
    assert_eq!(d.open(f3.device, libc::O_WRONLY), Err(Errno(libc::EROFS)));
    assert_eq!(d.open(DeviceId(9999), libc::O_RDONLY), Err(Errno::ENODEV));
    let h = d.open(f3.device, libc::O_RDONLY).unwrap();
    let (r, _) = d.call(Call::Write { handle: h, offset: 0, flags: OpenFlags::default() }, b"x");
    assert_eq!(r, Err(Errno(libc::EROFS)));

    // The configuration space, at offsets, short at the end.
    assert_eq!(d.read(h, 0, 4096).unwrap(), config);
    assert_eq!(d.read(h, 0x10, 4).unwrap(), [0x10, 0x11, 0x12, 0x13]);
    assert_eq!(d.read(h, 250, 64).unwrap(), config[250..]);
    assert_eq!(d.read(h, 256, 64).unwrap(), b"");
    assert_eq!(d.read(Handle(h.0 + 100), 0, 1), Err(Errno::EBADF));

    // Nothing changed: a rescan says nothing.
    assert_eq!(d.rescan(), []);

    // One function goes, one comes, one gets another kernel driver.
    let h4 = d.open(f4.device, libc::O_RDONLY).unwrap();
    std::fs::remove_file(root.join("bus/pci/devices/0000:00:03.0/driver")).unwrap();
    std::fs::remove_dir_all(root.join("bus/pci/devices/0000:00:04.0")).unwrap();
    function(root, "0000:00:07.0", "0x1b36", &config[..128]);
    let said = d.rescan();
    let removed: Vec<DeviceId> = said
        .iter()
        .filter_map(|m| match m {
            DriverToDdm::RemoveDevice { device } => Some(*device),
            _ => None,
        })
        .collect();
    assert_eq!(removed, [f4.device, f3.device]);
    let names: Vec<String> = devices(&said).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["0000:00:03.0", "0000:00:07.0"]);
    let new3 = devices(&said).into_iter().find(|s| s.name == "0000:00:03.0").unwrap();
    assert_eq!(meta(&new3, "kernel_driver").as_deref(), Some(""));
    // Handles on what went answer ENODEV; the new node reads.
    assert_eq!(d.read(h4, 0, 4), Err(Errno::ENODEV));
    assert_eq!(d.read(h, 0, 4), Err(Errno::ENODEV));
    let h3 = d.open(new3.device, libc::O_RDONLY).unwrap();
    assert_eq!(d.read(h3, 0, 4).unwrap(), [0, 1, 2, 3]);

    // The bus directory vanishing changes nothing (not "every function went").
    std::fs::remove_dir_all(root.join("bus")).unwrap();
    assert_eq!(d.rescan(), []);

    d.0.send(&DdmToDriver::Shutdown, &[], &[]).unwrap();
    assert!(d.0.wait().unwrap().success());
}
