//! The real `ddf-ramdisk` binary, driven over the real libDriver protocol by
//! a stand-in for the DDM (this test): registration, I/O at the end of the
//! device, scatter/gather, the size ioctl, and the contents surviving a
//! `kill -9` through the state store (the saved memfd handed to the next
//! incarnation in its `Start` frame). Needs no root and no mount.

#![allow(clippy::unwrap_used)]

use std::os::fd::{AsFd, OwnedFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddf::proto::{
    Answer, Call, DdmToDriver, DeviceClass, DeviceId, DeviceSpec, DriverToDdm, Errno, Handle, OpenFlags, StateEntry,
};
use ddf::testing::StandIn;
use ddf_ramdisk::{BLKGETSIZE64, STATE_KEY};

const SIZE: u64 = 1 << 20;

/// State a driver saved: key, bytes, descriptors.
type Saved = (String, Vec<u8>, Vec<OwnedFd>);

/// The driver under test, behind libddf's stand-in DDM.
struct Driver(StandIn);

impl Driver {
    fn spawn(pids: &Mutex<Vec<u32>>) -> Driver {
        let d = StandIn::spawn(env!("CARGO_BIN_EXE_ddf-ramdisk").as_ref()).unwrap();
        pids.lock().unwrap().push(d.pid());
        Driver(d)
    }

    /// Sends Start and collects what the driver says until Ready: its
    /// devices and the state it saved (bytes, descriptors).
    fn start(&mut self, state: Vec<StateEntry>, fds: &[OwnedFd]) -> (Vec<DeviceSpec>, Vec<Saved>) {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let said = self.0.start("ramdisk", &[("size", "1M"), ("name", "ram7")], state, &borrowed).unwrap();
        let (mut devices, mut saved) = (Vec::new(), Vec::new());
        for s in said {
            match s.msg {
                DriverToDdm::AddDevice(spec) => devices.push(spec),
                DriverToDdm::SaveState { key } => saved.push((key, s.payload, s.fds)),
                other => panic!("unexpected before Ready: {other:?}"),
            }
        }
        (devices, saved)
    }

    fn call(&mut self, call: Call, payload: &[u8]) -> (Result<Answer, Errno>, Vec<u8>) {
        let (before, result, data) = self.0.call(call, payload).unwrap();
        assert!(before.is_empty(), "unexpected before the reply: {before:?}");
        (result, data)
    }

    fn read(&mut self, handle: Handle, offset: u64, len: u32) -> Result<Vec<u8>, Errno> {
        self.0.read(handle, offset, len).unwrap()
    }

    fn write(&mut self, handle: Handle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        self.0.write(handle, offset, data).unwrap()
    }

    fn open(&mut self, device: DeviceId) -> Result<Handle, Errno> {
        self.0.open(device, OpenFlags::READ_WRITE).unwrap()
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

    assert_eq!(d.open(DeviceId(spec.device.0 + 1)), Err(Errno::ENXIO));
    let h = d.open(spec.device).unwrap();
    assert_eq!(d.read(Handle(h.0 + 100), 0, 1), Err(Errno::EBADF));

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
    d.0.kill().unwrap();

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
    d.0.send(&DdmToDriver::Shutdown, &[], &[]).unwrap();
    assert!(d.0.wait().unwrap().success());
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

#[test]
fn the_client_proxy_reads_and_writes_vectored_within_its_access() {
    let pids = Mutex::new(Vec::new());
    let mut d = Driver::spawn(&pids);
    let (devices, _) = d.start(Vec::new(), &[]);
    let device = devices[0].device;
    // What ddm does for `Ddm::connect_device`: a socket pair, one end to the
    // driver with the device and the access granted.
    let link = |d: &mut Driver, access: OpenFlags| {
        let (ours, theirs) = ddf::ipc::Channel::pair().unwrap();
        d.0.send(&DdmToDriver::Attach { device, access, ring: None }, &[], &[theirs.as_fd()]).unwrap();
        ddf::driver::Client::new(ours, device, access.access()).unwrap()
    };
    let mut c = link(&mut d, OpenFlags::READ_WRITE);
    let h = c.open(OpenFlags::READ_WRITE).unwrap();
    let parts = [std::io::IoSlice::new(b"scat"), std::io::IoSlice::new(b"ter")];
    assert_eq!(c.write_vectored(h, 10, &parts).unwrap(), 7);
    let (mut a, mut b) = ([0u8; 3], [0u8; 6]);
    let mut bufs = [std::io::IoSliceMut::new(&mut a), std::io::IoSliceMut::new(&mut b)];
    assert_eq!(c.read_vectored(h, 9, &mut bufs).unwrap(), 9);
    assert_eq!((&a, &b), (b"\0sc", b"atter\0"));
    let too_long = vec![0u8; ddf::ipc::PAYLOAD_MAX + 1];
    assert!(matches!(
        c.write_vectored(h, 0, &[std::io::IoSlice::new(&too_long)]),
        Err(ddf::driver::ClientError::TooLong(_))
    ));
    // A read-only link may not open for writing, nor write on its handle.
    let mut ro = link(&mut d, OpenFlags::READ);
    assert!(matches!(ro.open(OpenFlags::READ_WRITE), Err(ddf::driver::ClientError::Errno(Errno::EPERM))));
    let rh = ro.open(OpenFlags::READ).unwrap();
    let err = ro.write_vectored(rh, 0, &[std::io::IoSlice::new(b"x")]).unwrap_err();
    assert!(matches!(err, ddf::driver::ClientError::Errno(Errno::EBADF)), "{err}");
    let mut one = [0u8; 4];
    assert_eq!(ro.read_vectored(rh, 10, &mut [std::io::IoSliceMut::new(&mut one)]).unwrap(), 4);
    assert_eq!(&one, b"scat");
}

#[test]
fn the_client_proxy_gets_the_same_answers_through_a_ring() {
    let pids = Mutex::new(Vec::new());
    let mut d = Driver::spawn(&pids);
    let (devices, _) = d.start(Vec::new(), &[]);
    let device = devices[0].device;
    let spec = ddf::proto::RingSpec { slots: 2, slot_size: ddf::ring::DEFAULT_SLOT_SIZE };
    let ring = ddf::ring::Ring::create(spec).unwrap();
    ring.set_spin_allowed(true);
    let bell = ddf::ring::Doorbell::new().unwrap();
    let (ours, theirs) = ddf::ipc::Channel::pair().unwrap();
    let fds = [theirs.as_fd(), ring.fd(), bell.as_fd()];
    d.0.send(&DdmToDriver::Attach { device, access: OpenFlags::READ_WRITE, ring: Some(spec) }, &[], &fds).unwrap();
    let mine = ddf::ring::Ring::accept(ring.fd().try_clone_to_owned().unwrap(), spec).unwrap();
    let my_bell = ddf::ring::Doorbell::from_fd(bell.as_fd().try_clone_to_owned().unwrap());
    let mut c = ddf::driver::Client::with_ring(ours, device, ddf::proto::Access::ReadWrite, mine, my_bell).unwrap();
    let h = c.open(OpenFlags::READ_WRITE).unwrap();
    // Many calls: whether each goes by the ring or the socket depends on
    // where the driver spins; every answer must be right either way.
    for i in 0..2000u64 {
        let data = i.to_le_bytes();
        assert_eq!(c.write(h, i * 8, &data).unwrap(), 8);
        let mut back = [0u8; 8];
        assert_eq!(c.read(h, i * 8, &mut back).unwrap(), 8);
        assert_eq!(back, data, "call {i}");
    }
    assert_eq!(c.read(h, SIZE, &mut [0u8; 4]).unwrap(), 0);
    let err = c.write(h, SIZE, b"x").unwrap_err();
    assert!(matches!(err, ddf::driver::ClientError::Errno(Errno::ENOSPC)), "{err}");
    eprintln!("{} of the calls went by the ring", c.fast_calls());
}

#[test]
fn a_client_that_gives_up_on_ring_calls_under_load_gets_each_answer_once() {
    // Busy threads beside the client and the driver make the client's spin
    // run out often, in every state of a call: each answer must still come
    // once, to its own call.
    let pids = Mutex::new(Vec::new());
    let mut d = Driver::spawn(&pids);
    let (devices, _) = d.start(Vec::new(), &[]);
    let device = devices[0].device;
    let spec = ddf::proto::RingSpec { slots: 2, slot_size: ddf::ring::DEFAULT_SLOT_SIZE };
    let ring = ddf::ring::Ring::create(spec).unwrap();
    ring.set_spin_allowed(true);
    let bell = ddf::ring::Doorbell::new().unwrap();
    let (ours, theirs) = ddf::ipc::Channel::pair().unwrap();
    let fds = [theirs.as_fd(), ring.fd(), bell.as_fd()];
    d.0.send(&DdmToDriver::Attach { device, access: OpenFlags::READ_WRITE, ring: Some(spec) }, &[], &fds).unwrap();
    let mine = ddf::ring::Ring::accept(ring.fd().try_clone_to_owned().unwrap(), spec).unwrap();
    let my_bell = ddf::ring::Doorbell::from_fd(bell.as_fd().try_clone_to_owned().unwrap());
    let mut c = ddf::driver::Client::with_ring(ours, device, ddf::proto::Access::ReadWrite, mine, my_bell).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..3)
        .map(|_| {
            let s = stop.clone();
            std::thread::spawn(move || {
                while !s.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for i in 0..20_000u64 {
            let h = c.open(OpenFlags::READ_WRITE).unwrap_or_else(|e| panic!("open {i}: {e}"));
            let mut b = [0u8; 1];
            c.read(h, i, &mut b).unwrap_or_else(|e| panic!("read {i}: {e}"));
            assert_eq!(c.write(h, i, b"x").unwrap_or_else(|e| panic!("write {i}: {e}")), 1);
            c.close(h).unwrap_or_else(|e| panic!("close {i}: {e}"));
        }
    }));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    eprintln!("{} of 80000 calls by the ring", c.fast_calls());
}
