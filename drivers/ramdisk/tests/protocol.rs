//! The real `ddf-ramdisk` binary, driven over the real libDriver protocol by
//! a stand-in for the DDM (this test): registration, I/O at the end of the
//! device, scatter/gather, the size ioctl, and the contents surviving a
//! `kill -9` through the state store (the saved memfd handed to the next
//! incarnation in its `Start` frame). Needs no root and no mount.

#![allow(clippy::unwrap_used)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddf::driver::SOCKET_FD_ENV;
use ddf::ipc::{Channel, RecvBuf};
use ddf::proto::{Answer, Call, DdmToDriver, DeviceClass, DeviceSpec, DriverToDdm, Errno, RequestId, StateEntry};
use ddf_ramdisk::{BLKGETSIZE64, STATE_KEY};

const SIZE: u64 = 1 << 20;

/// State a driver saved: key, bytes, descriptors.
type Saved = (String, Vec<u8>, Vec<OwnedFd>);

/// One driver process and our end of its socket.
struct Driver {
    child: Child,
    chan: Channel,
    buf: RecvBuf,
    next_id: u64,
}

impl Driver {
    fn spawn(pids: &Mutex<Vec<u32>>) -> Driver {
        let (ours, theirs) = Channel::pair().unwrap();
        let raw = theirs.as_fd().as_raw_fd();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddf-ramdisk"));
        cmd.env(SOCKET_FD_ENV, raw.to_string()).env("RUST_LOG", "warn").stdin(Stdio::null());
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
        pids.lock().unwrap().push(child.id());
        drop(theirs);
        let mut buf = RecvBuf::default();
        ours.handshake(&mut buf).unwrap();
        Driver { child, chan: ours, buf, next_id: 1 }
    }

    /// Sends Start and collects what the driver says until Ready: its
    /// devices and the state it saved (bytes, descriptors).
    fn start(&mut self, state: Vec<StateEntry>, fds: &[OwnedFd]) -> (Vec<DeviceSpec>, Vec<Saved>) {
        let params = vec![("size".to_owned(), "1M".to_owned()), ("name".to_owned(), "ram7".to_owned())];
        let start = DdmToDriver::Start { instance: "ramdisk".into(), params, state };
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        self.chan.send(&start, &[], &borrowed).unwrap();
        let (mut devices, mut saved) = (Vec::new(), Vec::new());
        loop {
            let f = self.chan.recv(&mut self.buf).unwrap();
            match f.decode::<DriverToDdm>().unwrap() {
                DriverToDdm::AddDevice(spec) => devices.push(spec),
                DriverToDdm::SaveState { key } => saved.push((key, f.payload.to_vec(), f.fds)),
                DriverToDdm::Ready => return (devices, saved),
                other => panic!("unexpected before Ready: {other:?}"),
            }
        }
    }

    fn call(&mut self, call: Call, payload: &[u8]) -> (Result<Answer, Errno>, Vec<u8>) {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        self.chan.send(&DdmToDriver::Call { id, call }, payload, &[]).unwrap();
        let f = self.chan.recv(&mut self.buf).unwrap();
        match f.decode::<DriverToDdm>().unwrap() {
            DriverToDdm::Reply { id: got, result } => {
                assert_eq!(got, id);
                (result, f.payload.to_vec())
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn read(&mut self, handle: u64, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        let (r, data) = self.call(Call::Read { handle, offset, len, flags: 0 }, &[]);
        r.map(|a| {
            assert_eq!(a, Answer::Data);
            data
        })
    }

    fn write(&mut self, handle: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        match self.call(Call::Write { handle, offset, flags: 0 }, data).0 {
            Ok(Answer::Written { len }) => Ok(len),
            Ok(other) => panic!("write answered {other:?}"),
            Err(e) => Err(e),
        }
    }

    fn open(&mut self, device: u32) -> Result<u64, Errno> {
        match self.call(Call::Open { device, flags: libc::O_RDWR }, &[]).0 {
            Ok(Answer::Opened { handle }) => Ok(handle),
            Ok(other) => panic!("open answered {other:?}"),
            Err(e) => Err(e),
        }
    }
}

fn scenario(pids: Arc<Mutex<Vec<u32>>>) {
    // First incarnation: registers ram7 and leaves its memfd with "us".
    let mut d = Driver::spawn(&pids);
    let (devices, mut saved) = d.start(Vec::new(), &[]);
    assert_eq!(devices.len(), 1);
    let spec = devices[0].clone();
    assert_eq!((spec.name.as_str(), spec.class, spec.size), ("ram7", DeviceClass::Block, SIZE));
    assert_eq!(saved.len(), 1);
    let (key, bytes, fds) = saved.remove(0);
    assert_eq!((key.as_str(), bytes.as_slice(), fds.len()), (STATE_KEY, &SIZE.to_le_bytes()[..], 1));

    assert_eq!(d.open(spec.device + 1), Err(Errno::ENXIO));
    let h = d.open(spec.device).unwrap();
    assert_eq!(d.read(h + 100, 0, 1), Err(Errno::EBADF));

    // End of device: short write, ENOSPC, short read, EOF.
    assert_eq!(d.write(h, SIZE - 3, b"abcdef"), Ok(3));
    assert_eq!(d.write(h, SIZE, b"x"), Err(Errno::ENOSPC));
    assert_eq!(d.read(h, SIZE - 3, 10).unwrap(), b"abc");
    assert_eq!(d.read(h, SIZE, 10).unwrap(), b"");
    // A full-frame write and read back.
    let big: Vec<u8> = (0..ddf::ipc::PAYLOAD_MAX).map(|i| (i * 7) as u8).collect();
    assert_eq!(d.write(h, 4096, &big), Ok(big.len() as u32));
    assert_eq!(d.read(h, 4096, big.len() as u32).unwrap(), big);

    // writev / readv.
    let (r, _) = d.call(Call::Gather { handle: h, offset: 100, lens: vec![2, 3] }, b"hello");
    assert_eq!(r, Ok(Answer::Written { len: 5 }));
    let (r, data) = d.call(Call::Scatter { handle: h, offset: 99, lens: vec![1, 4, 10] }, &[]);
    assert_eq!((r, data.as_slice()), (Ok(Answer::Data), &b"\0hello\0\0\0\0\0\0\0\0\0"[..]));
    let (r, _) = d.call(Call::Gather { handle: h, offset: SIZE - 1, lens: vec![1, 1] }, b"yz");
    assert_eq!(r, Ok(Answer::Written { len: 1 }));

    // The capacity ioctl.
    let (r, out) = d.call(Call::Ioctl { handle: h, cmd: BLKGETSIZE64, out_len: 8 }, &[]);
    assert_eq!((r, out.as_slice()), (Ok(Answer::Ioctl { result: 0 }), &SIZE.to_le_bytes()[..]));

    // kill -9: no fini, no goodbye.
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    // Second incarnation, handed the saved state as the DDM would.
    let mut d = Driver::spawn(&pids);
    let entry = StateEntry { key: STATE_KEY.into(), bytes: bytes.clone(), fds: 1 };
    let (devices, saved) = d.start(vec![entry], &fds);
    assert_eq!(devices[0].size, SIZE);
    assert_eq!(saved.len(), 1, "the new incarnation saves its memfd again");
    let h = d.open(devices[0].device).unwrap();
    assert_eq!(d.read(h, 100, 5).unwrap(), b"hello");
    assert_eq!(d.read(h, SIZE - 3, 3).unwrap(), b"aby");
    assert_eq!(d.read(h, 4096, big.len() as u32).unwrap(), big);

    // A polite stop: exit status 0.
    d.chan.send(&DdmToDriver::Shutdown, &[], &[]).unwrap();
    assert!(d.child.wait().unwrap().success());
}

#[test]
fn ramdisk_over_the_protocol_survives_kill_9() {
    let pids = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let p = pids.clone();
    let t = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(move || scenario(p));
        let _ = tx.send(());
        r
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        for pid in pids.lock().unwrap().iter() {
            // SAFETY: kill(2) has no memory-safety preconditions; these are
            // our children (a reaped one's pid may be reused: acceptable in
            // a test that is failing anyway).
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        panic!("the driver did not answer within 60 s");
    }
    if let Err(e) = t.join().unwrap() {
        std::panic::resume_unwind(e);
    }
}
