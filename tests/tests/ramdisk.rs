//! The ramdisk through the mount, its zero-copy path, its survival of a
//! crash, and the direct client path (libDriver without FUSE).

#![allow(clippy::unwrap_used)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;
use std::time::Duration;

use ddf_tests::{bin, wait_until, Ddm};

const MIB: u64 = 1 << 20;

/// A small seeded PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn ramdisk_manifest(size: &str) -> String {
    format!("name = \"rd\"\nexec = \"ddf-ramdisk\"\nautostart = true\nhandles_survive_restart = true\n[params]\nname = \"rd0\"\nsize = \"{size}\"\n")
}

fn driver_json(ddm: &Ddm, name: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ddm.ddmctl_ok(&["status", "--json"])).unwrap();
    all.into_iter().find(|d| d["name"] == name).unwrap()
}

#[test]
fn size_is_the_capacity_and_random_io_matches_a_model() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("4M")).wait_for("rd0").start();
    let path = ddm.path("rd0");
    let size = 4 * MIB;
    assert_eq!(std::fs::metadata(&path).unwrap().size(), size);
    let rw = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let ro = File::open(&path).unwrap();
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(0x5eed_d15c);
    let mut buf = vec![0u8; 300_000];
    for op in 0..3000 {
        let off = rng.below(size + 4096);
        let len = 1 + rng.below(if op % 10 == 0 { 300_000 } else { 9000 }) as usize;
        match rng.below(3) {
            0 => {
                for b in &mut buf[..len] {
                    *b = rng.next() as u8;
                }
                let res = rw.write_at(&buf[..len], off);
                if off >= size {
                    assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::ENOSPC), "write at {off}");
                } else {
                    let n = res.unwrap();
                    let want = len.min((size - off) as usize);
                    assert_eq!(n, want, "short write at {off}");
                    model[off as usize..off as usize + n].copy_from_slice(&buf[..n]);
                }
            }
            r => {
                // Half the reads through the read-only (passthrough) open.
                let f = if r == 1 { &rw } else { &ro };
                let n = f.read_at(&mut buf[..len], off).unwrap();
                let want = if off >= size { 0 } else { len.min((size - off) as usize) };
                assert_eq!(n, want, "read length at {off}");
                if n > 0 {
                    assert!(buf[..n] == model[off as usize..off as usize + n], "op {op}: data differs at {off}+{n}");
                }
            }
        }
    }
}

#[test]
fn readv_and_writev_become_scatter_and_gather() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("1M")).wait_for("rd0").start();
    let f = OpenOptions::new().read(true).write(true).open(ddm.path("rd0")).unwrap();
    let a = [1u8; 100];
    let b = [2u8; 5000];
    let iov = [
        libc::iovec { iov_base: a.as_ptr() as *mut _, iov_len: a.len() },
        libc::iovec { iov_base: b.as_ptr() as *mut _, iov_len: b.len() },
    ];
    // SAFETY: the iovecs point at live buffers of the given lengths.
    let n = unsafe { libc::pwritev(f.as_raw_fd(), iov.as_ptr(), 2, 7000) };
    assert_eq!(n, 5100);
    let mut x = [0u8; 50];
    let mut y = [0u8; 5050];
    let iov = [
        libc::iovec { iov_base: x.as_mut_ptr().cast(), iov_len: x.len() },
        libc::iovec { iov_base: y.as_mut_ptr().cast(), iov_len: y.len() },
    ];
    // SAFETY: as above, writable buffers.
    let n = unsafe { libc::preadv(f.as_raw_fd(), iov.as_ptr(), 2, 7000) };
    assert_eq!(n, 5100);
    assert!(x.iter().all(|v| *v == 1));
    assert!(y[..50].iter().all(|v| *v == 1) && y[50..].iter().all(|v| *v == 2));
}

#[test]
fn end_of_device_behaves_like_a_block_device() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("64K")).wait_for("rd0").start();
    let f = OpenOptions::new().read(true).write(true).open(ddm.path("rd0")).unwrap();
    let size = 64 * 1024;
    let mut buf = [0u8; 100];
    assert_eq!(f.read_at(&mut buf, size).unwrap(), 0, "read at the end is end of file");
    assert_eq!(f.read_at(&mut buf, size - 10).unwrap(), 10, "short read at the end");
    assert_eq!(f.write_at(&[9u8; 100], size - 30).unwrap(), 30, "short write at the end");
    let e = f.write_at(&[9u8; 10], size).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    // dd past the end says so too.
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096", "count=20", "conv=notrunc"])
        .arg(format!("of={}", ddm.path("rd0").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"), "{out:?}");
}

#[test]
fn contents_survive_a_kill_9_of_the_driver() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("8M")).wait_for("rd0").start();
    let path = ddm.path("rd0");
    let mut data = vec![0u8; 3 * MIB as usize];
    let mut rng = Rng(42);
    for b in data.iter_mut() {
        *b = rng.next() as u8;
    }
    let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
    f.write_all_at(&data, 12345).unwrap();
    let pid = driver_json(&ddm, "rd")["pid"].as_u64().unwrap();
    // SAFETY: kill(2) on the driver of the ddm under test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(20), || {
        let d = driver_json(&ddm, "rd");
        d["state"] == "running" && d["pid"].as_u64() != Some(pid)
    }));
    // The old handle survives (the ramdisk's handles do), and a new open
    // sees every acknowledged byte.
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 12345).unwrap();
    assert!(back == data, "contents lost across the restart (old handle)");
    let g = File::open(&path).unwrap();
    g.read_exact_at(&mut back, 12345).unwrap();
    assert!(back == data, "contents lost across the restart (new open)");
}

#[test]
fn large_reads_take_the_zero_copy_path() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("16M")).wait_for("rd0").start();
    let before = driver_json(&ddm, "rd")["requests"].as_u64().unwrap();
    let f = File::open(ddm.path("rd0")).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for i in 0..16 {
        f.read_exact_at(&mut buf, i * MIB).unwrap();
    }
    drop(f);
    // 16 MiB through the driver would be at least 128 read calls; through
    // passthrough the driver sees the open and the close only.
    assert!(wait_until(Duration::from_secs(5), || {
        driver_json(&ddm, "rd")["requests"].as_u64().unwrap() >= before + 2
    }));
    let after = driver_json(&ddm, "rd")["requests"].as_u64().unwrap();
    assert!(after - before <= 4, "the driver served {} calls for 16 MiB read-only", after - before);
}

#[test]
fn mkfs_ext4_and_a_loop_mount_work_on_the_ramdisk() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("32M")).wait_for("rd0").start();
    let dev = ddm.path("rd0");
    let out = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&dev).output().unwrap();
    assert!(out.status.success(), "mkfs.ext4: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("losetup").args(["-f", "--show"]).arg(&dev).output().unwrap();
    assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
    let loopdev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    struct Loop(String, std::path::PathBuf);
    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let mnt = ddm.dir.path().join("ext4");
    std::fs::create_dir(&mnt).unwrap();
    let guard = Loop(loopdev.clone(), mnt.clone());
    let st = Command::new("mount").arg(&loopdev).arg(&mnt).status().unwrap();
    assert!(st.success());
    std::fs::write(mnt.join("hello"), b"written through ext4 on /ddf\n").unwrap();
    let st = Command::new("sync").status().unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(mnt.join("hello")).unwrap(), b"written through ext4 on /ddf\n");
    drop(guard);
    // fsck finds a clean file system on the device afterwards.
    let out = Command::new("e2fsck").args(["-n", "-f"]).arg(&dev).output().unwrap();
    assert!(out.status.success(), "e2fsck: {}", String::from_utf8_lossy(&out.stdout));
}

fn direct(ddm: &Ddm, pre: &[&str], args: &[&str]) -> std::process::Output {
    let mut cmd = if pre.is_empty() {
        Command::new(bin("ddf-direct"))
    } else {
        let mut c = Command::new(pre[0]);
        c.args(&pre[1..]).arg(bin("ddf-direct"));
        c
    };
    cmd.arg("--socket").arg(&ddm.socket).args(args).output().unwrap()
}

#[test]
fn the_direct_client_path_works_and_refuses_whom_the_file_refuses() {
    ddf_tests::needs_root!();
    let ddm = Ddm::builder().manifest(&ramdisk_manifest("1M")).wait_for("rd0").start();
    let dev = ddm.path("rd0");
    let d = dev.to_str().unwrap();
    let out = direct(&ddm, &[], &["--write", d, "write", "4096", "68656c6c6f"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    // The bytes are on the device, as the file shows.
    let mut b = [0u8; 5];
    File::open(&dev).unwrap().read_exact_at(&mut b, 4096).unwrap();
    assert_eq!(&b, b"hello");
    let out = direct(&ddm, &[], &[d, "read", "4095", "7"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0068656c6c6f00");
    // Read-only access grants no writes.
    let out = direct(&ddm, &[], &[d, "write", "0", "ff"]);
    assert!(!out.status.success(), "a read-only link wrote");
    // Another user, refused by the file's mode (root:disk 0660), gets no link.
    let user = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups"];
    let out = direct(&ddm, &user, &[d, "read", "0", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    // After a chmod the same user may read, directly too.
    let st = Command::new("chmod").arg("664").arg(&dev).status().unwrap();
    assert!(st.success());
    let out = direct(&ddm, &user, &[d, "read", "4096", "5"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "68656c6c6f");
    // A file that is not on the mount is no proof.
    let mut ddmc = ddf::ddm::Ddm::connect(&ddm.socket).unwrap();
    let err = ddmc.connect_device(&File::open("/dev/null").unwrap()).unwrap_err();
    assert!(err.to_string().contains("not on the ddf mount"), "{err}");
}
