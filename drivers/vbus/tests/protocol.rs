//! The real `ddf-vbus` binary, driven over the real libDriver protocol by a
//! stand-in for the DDM (this test): the bus and its control device, adds
//! and removes through `ctl` reported in order and saved before the write
//! is answered, a refused write that changes nothing, what the nodes read,
//! and the device list surviving a `kill -9` through the state store.
//! Needs no root and no mount.

#![allow(clippy::unwrap_used)]

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use ddf::driver::SOCKET_FD_ENV;
use ddf::ipc::{Channel, RecvBuf};
use ddf::proto::{Answer, Call, DdmToDriver, DeviceClass, DeviceSpec, DriverToDdm, Errno, RequestId, StateEntry};
use ddf_vbus::model::STATE_KEY;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

/// Messages a driver sent, with their payloads.
type Said = Vec<(DriverToDdm, Vec<u8>)>;

/// One driver process and our end of its socket; killed when dropped.
struct Driver {
    child: Child,
    chan: Channel,
    buf: RecvBuf,
    next_id: u64,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn spawn() -> Driver {
        let (ours, theirs) = Channel::pair().unwrap();
        // A driver that stops answering fails the test instead of hanging it.
        setsockopt(&ours.as_fd(), sockopt::ReceiveTimeout, &TimeVal::new(30, 0)).unwrap();
        let raw = theirs.as_fd().as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddf-vbus"));
        cmd.env(SOCKET_FD_ENV, raw.to_string()).env("RUST_LOG", "error").stdin(Stdio::null());
        let keep_open = move || {
            // SAFETY: runs in the forked child before exec; fcntl is
            // async-signal-safe and only clears FD_CLOEXEC on `raw`.
            if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the hook only calls fcntl: no allocation, no locks.
        unsafe { cmd.pre_exec(keep_open) };
        let child = cmd.spawn().unwrap();
        drop(theirs);
        let mut buf = RecvBuf::default();
        ours.handshake(&mut buf).unwrap();
        Driver { child, chan: ours, buf, next_id: 1 }
    }

    /// Receives one message and its payload.
    fn recv(&mut self) -> (DriverToDdm, Vec<u8>) {
        let f = self.chan.recv(&mut self.buf).unwrap();
        let msg = f.decode::<DriverToDdm>().unwrap();
        (msg, f.payload.to_vec())
    }

    /// Sends Start with `state`; returns what the driver said until Ready.
    fn start(&mut self, state: Vec<StateEntry>) -> Vec<DriverToDdm> {
        let start = DdmToDriver::Start { instance: "vbus".into(), params: Vec::new(), state };
        self.chan.send(&start, &[], &[]).unwrap();
        let mut said = Vec::new();
        loop {
            match self.recv().0 {
                DriverToDdm::Ready => return said,
                other => said.push(other),
            }
        }
    }

    /// Makes a call; returns the messages before the reply (with their
    /// payloads), the reply and its payload.
    fn call(&mut self, call: Call, payload: &[u8]) -> (Said, Result<Answer, Errno>, Vec<u8>) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.chan.send(&DdmToDriver::Call { id, call }, payload, &[]).unwrap();
        let mut before = Vec::new();
        loop {
            match self.recv() {
                (DriverToDdm::Reply { id: got, result }, data) => {
                    assert_eq!(got, id);
                    return (before, result, data);
                }
                other => before.push(other),
            }
        }
    }

    fn open(&mut self, device: u32, flags: i32) -> Result<u64, Errno> {
        match self.call(Call::Open { device, flags }, &[]) {
            (b, Ok(Answer::Opened { handle }), _) if b.is_empty() => Ok(handle),
            (_, Err(e), _) => Err(e),
            other => panic!("open answered {other:?}"),
        }
    }

    fn read(&mut self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let call = Call::Read { handle, offset, len, flags: 0 };
        match self.call(call, &[]) {
            (_, Ok(Answer::Data), data) => Ok(data),
            (_, Err(e), _) => Err(e),
            other => panic!("read answered {other:?}"),
        }
    }

    /// Writes `data`; the messages sent before the answer, and the answer.
    fn write(&mut self, handle: u64, data: &str) -> (Said, Result<Answer, Errno>) {
        let call = Call::Write { handle, offset: 0, flags: 0 };
        let (before, result, _) = self.call(call, data.as_bytes());
        (before, result)
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
    d.child.kill().unwrap();
    d.child.wait().unwrap();
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

    d.chan.send(&DdmToDriver::Shutdown, &[], &[]).unwrap();
    assert!(d.child.wait().unwrap().success());
}
