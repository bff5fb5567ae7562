//! The real `ddf-vbus` binary, driven over the real libDriver protocol by a
//! stand-in for the DDM (this test): the bus and its control device, adds
//! and removes through `ctl` reported in order and saved before the write
//! is answered, a refused write that changes nothing, what the nodes read,
//! and the device list surviving a `kill -9` through the state store.
//! Needs no root and no mount.

#![allow(clippy::unwrap_used)]

use ddf::proto::{
    Answer, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverToDdm, Errno, Handle, OpenFlags, StateEntry,
};
use ddf::testing::StandIn;
use ddf_vbus::model::STATE_KEY;

/// Messages a driver sent, with their payloads.
type Said = Vec<(DriverToDdm, Vec<u8>)>;

/// The driver under test, behind libddf's stand-in DDM.
struct Driver(StandIn);

fn pairs(said: Vec<ddf::testing::Said>) -> Said {
    said.into_iter().map(|s| (s.msg, s.payload)).collect()
}

impl Driver {
    fn spawn() -> Driver {
        Driver(StandIn::spawn(env!("CARGO_BIN_EXE_ddf-vbus").as_ref()).unwrap())
    }

    /// Sends Start with `state`; returns what the driver said until Ready.
    fn start(&mut self, state: Vec<StateEntry>) -> Vec<DriverToDdm> {
        self.0.start("vbus", &[], state, &[]).unwrap().into_iter().map(|s| s.msg).collect()
    }

    fn open(&mut self, device: DeviceId, flags: i32) -> Result<Handle, Errno> {
        self.0.open(device, OpenFlags(flags)).unwrap()
    }

    fn read(&mut self, handle: Handle, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        self.0.read(handle, offset, len).unwrap()
    }

    /// Writes `data`; the messages sent before the answer, and the answer.
    fn write(&mut self, handle: Handle, data: &str) -> (Said, Result<Answer, Errno>) {
        let call = Call::Write { handle, offset: 0, flags: OpenFlags::default() };
        let (before, result, _) = self.0.call(call, data.as_bytes()).unwrap();
        (pairs(before), result)
    }
}

fn added(msgs: &[(DriverToDdm, Vec<u8>)]) -> Vec<DeviceSpec> {
    msgs.iter()
        .filter_map(|(m, _)| match m {
            DriverToDdm::AddDevice(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn vbus_over_the_protocol_survives_kill_9() {
    let mut d = Driver::spawn();
    let said = d.start(Vec::new());
    let [DriverToDdm::AddBus { bus, name, kind, parent: None }, DriverToDdm::AddDevice(ctl)] = said.as_slice() else {
        panic!("expected the bus and ctl, got {said:?}")
    };
    assert_eq!((name.as_str(), kind.as_str()), ("vbus", "vbus"));
    assert_eq!((ctl.name.as_str(), ctl.class, ctl.bus, ctl.offer), ("ctl", DeviceClass::Char, Some(*bus), false));

    let h = d.open(ctl.device, libc::O_RDWR).unwrap();
    assert_eq!(d.read(h, 0, 4096).unwrap(), b"");

    // An add: the devices, then the state, then the answer.
    let text = "add a vendor=1234 device=0001 class=char\nadd-many v 3 vendor=abcd\n";
    let (before, r) = d.write(h, text);
    assert_eq!(r, Ok(Answer::Written { len: text.len() as u32 }));
    let specs = added(&before);
    assert_eq!(specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["a", "v0", "v1", "v2"]);
    let a = specs[0].clone();
    assert_eq!((a.class, a.bus, a.offer, a.address.as_deref()), (DeviceClass::Char, Some(*bus), true, Some("a")));
    assert_eq!(
        a.meta,
        [("vendor", "1234"), ("device", "0001"), ("class", "char")].map(|(k, v)| (k.to_owned(), v.to_owned()))
    );
    let Some((DriverToDdm::SaveState { key }, saved)) = before.last() else {
        panic!("the state was not saved before the answer: {before:?}")
    };
    assert_eq!(key, STATE_KEY);
    let saved = saved.clone();

    // ctl lists the bus, then end of file, in reads of any size.
    let h2 = d.open(ctl.device, libc::O_RDONLY).unwrap();
    let mut listing = Vec::new();
    loop {
        let chunk = d.read(h2, 0, 7).unwrap();
        if chunk.is_empty() {
            break;
        }
        listing.extend(chunk);
    }
    assert_eq!(
        String::from_utf8(listing).unwrap(),
        "a vendor=1234 device=0001 class=char\nv0 vendor=abcd\nv1 vendor=abcd\nv2 vendor=abcd\n"
    );

    // An unbound device reads as its line; writes are refused.
    let ha = d.open(a.device, libc::O_RDWR).unwrap();
    assert_eq!(d.read(ha, 0, 4096).unwrap(), b"a vendor=1234 device=0001 class=char\n");
    assert_eq!(d.read(ha, 0, 4096).unwrap(), b"");
    assert_eq!(d.write(ha, "x").1, Err(Errno::EINVAL));

    // A write with a bad line changes nothing and says nothing to the DDM.
    for bad in ["remove a\nbogus\n", "add v1\n", "remove zz\n", "add x/y\n", "\u{ff}"] {
        let (before, r) = d.write(h, bad);
        assert_eq!((before.len(), r), (0, Err(Errno::EINVAL)), "{bad:?}");
    }
    assert_eq!(d.write(h, "add-many w 4094\n").1, Err(Errno::ENOSPC));
    assert_eq!(d.write(h, "\n# nothing\n"), (Vec::new(), Ok(Answer::Written { len: 11 })));

    // A removal; the open handle on it then answers ENODEV.
    let ha2 = d.open(a.device, libc::O_RDONLY).unwrap();
    let (before, r) = d.write(h, "remove a");
    assert_eq!(r, Ok(Answer::Written { len: 8 }));
    assert!(matches!(before[0].0, DriverToDdm::RemoveDevice { device } if device == a.device));
    assert!(matches!(&before[1].0, DriverToDdm::SaveState { key } if key == STATE_KEY));
    let after_remove = before[1].1.clone();
    assert_eq!(d.read(ha2, 0, 10), Err(Errno::ENODEV));
    assert_eq!(d.open(a.device, libc::O_RDONLY), Err(Errno::ENODEV));

    // kill -9, then a new incarnation with the state the DDM kept.
    d.0.kill().unwrap();
    assert_ne!(saved, after_remove);
    let mut d = Driver::spawn();
    let said = d.start(vec![StateEntry { key: STATE_KEY.into(), bytes: after_remove, fds: 0 }]);
    let names: Vec<&str> = said
        .iter()
        .filter_map(|m| match m {
            DriverToDdm::AddDevice(s) => Some(s.name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["ctl", "v0", "v1", "v2"]);

    // Garbage in the state store: an empty bus, not a crash.
    drop(d);
    let mut d = Driver::spawn();
    let said = d.start(vec![StateEntry { key: STATE_KEY.into(), bytes: b"\xffnot a list".to_vec(), fds: 0 }]);
    assert_eq!(said.len(), 2, "{said:?}");

    d.0.send(&DdmToDriver::Shutdown, &[], &[]).unwrap();
    assert!(d.0.wait().unwrap().success());
}
