//! The C API end to end: libddf.so.0 installed by `scripts/install-lib`,
//! drivers and clients in C compiled by the system C compiler against it
//! (`cc ... $(pkg-config --cflags --libs ddf)`, linked dynamically), the
//! drivers run by a real ddm on a real mount, sandboxed and supervised,
//! and driven with shell tools.
//!
//! The tests that start ddm need root (they skip as another user); the
//! library's own checks (exports, header, install-lib) do not.
//!
//! The C sources: `drivers/hello/` (the hello driver), `examples/c/` (a
//! client and a tree tool), `tests/c/` (drivers that park reads and that
//! break the API on purpose). `cargo build --workspace` must have built
//! `libddf_c.a`, the archive the library is linked from.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ddf_tests::{bin_dir, repo_root, wait_until, Ddm};

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(cmd: &str) -> Output {
    ddf_tests::sh(cmd)
}

/// A place where libddf is installed and C programs are built against it,
/// in a temporary directory every user may enter (the drivers run as
/// nobody).
struct CBuild {
    dir: tempfile::TempDir,
}

impl CBuild {
    /// Installs libddf (from the workspace's archive) into a fresh prefix.
    fn new() -> CBuild {
        let dir = tempfile::Builder::new().prefix("ddf-c-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let b = CBuild { dir };
        let archive = bin_dir().join("libddf_c.a");
        assert!(archive.exists(), "no {}: build it first (cargo build --workspace --lib)", archive.display());
        b.install(&repo_root(), &["--archive", archive.to_str().unwrap()]);
        b
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn prefix(&self) -> PathBuf {
        self.path("prefix")
    }

    fn libdir(&self) -> PathBuf {
        self.prefix().join("lib")
    }

    /// Runs `ROOT/scripts/install-lib --prefix PREFIX ARGS`.
    fn install(&self, root: &Path, args: &[&str]) -> String {
        let out = Command::new(root.join("scripts/install-lib"))
            .arg("--prefix")
            .arg(self.prefix())
            .arg("--no-ldconfig")
            .args(args)
            .output()
            .unwrap();
        ok(&out, "scripts/install-lib")
    }

    /// Compiles C `sources` into the program `name` the way ddf-driver(7)
    /// says, with the library's directory as the program's run path.
    fn cc(&self, name: &str, sources: &[&str], extra: &str) -> PathBuf {
        let out = self.path(name);
        let srcs: Vec<String> = sources.iter().map(|s| repo_root().join(s).display().to_string()).collect();
        let cmd = format!(
            "cc -std=c11 -D_DEFAULT_SOURCE -Wall -Wextra -Werror -o {out} {srcs} {extra} \
             $(pkg-config --cflags --libs ddf) -Wl,-rpath,{lib}",
            out = out.display(),
            srcs = srcs.join(" "),
            lib = self.libdir().display(),
        );
        let o = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("PKG_CONFIG_PATH", self.libdir().join("pkgconfig"))
            .output()
            .unwrap();
        ok(&o, &cmd);
        out
    }

    /// A manifest for the C driver `exec`, named `name`, confined as the
    /// checked-in hello manifest is (user nobody, Landlock), reading
    /// libddf from this build's prefix.
    fn manifest(&self, name: &str, exec: &Path, extra: &str) -> String {
        format!(
            "name = \"{name}\"\nexec = \"{}\"\nautostart = true\n{extra}\n[sandbox]\nuser = \"nobody\"\nread = [\"{}\"]\n",
            exec.display(),
            self.libdir().display()
        )
    }
}

/// The checked-in manifest of the hello driver, pointed at this build.
fn hello_manifest(b: &CBuild, exec: &Path) -> String {
    let text = std::fs::read_to_string(repo_root().join("drivers/hello/manifest.toml")).unwrap();
    assert!(text.contains("exec = \"ddf-hello\"") && text.contains("read = [\"/usr/local/lib\"]"), "{text}");
    text.replace("exec = \"ddf-hello\"", &format!("exec = \"{}\"", exec.display()))
        .replace("read = [\"/usr/local/lib\"]", &format!("read = [\"{}\"]", b.libdir().display()))
}

fn build_hello(b: &CBuild) -> PathBuf {
    b.cc("ddf-hello", &["drivers/hello/hello.c"], "")
}

fn status(ddm: &Ddm, name: &str) -> serde_json::Value {
    let all: Vec<serde_json::Value> = serde_json::from_str(&ddm.ddmctl_ok(&["status", "--json"])).unwrap();
    all.into_iter().find(|d| d["name"] == name).unwrap_or_else(|| panic!("no driver {name}"))
}

fn pid(ddm: &Ddm, name: &str) -> u32 {
    status(ddm, name)["pid"].as_u64().unwrap_or(0) as u32
}

fn counter(ddm: &Ddm, name: &str, key: &str) -> Option<u64> {
    status(ddm, name)["counters"].as_array()?.iter().find(|c| c[0] == key).and_then(|c| c[1].as_u64())
}

/// Waits for `name` to run again with another pid than `old`.
fn wait_new_pid(ddm: &Ddm, name: &str, old: u32) -> u32 {
    let mut new = 0;
    let back = wait_until(Duration::from_secs(20), || {
        let s = status(ddm, name);
        new = s["pid"].as_u64().unwrap_or(0) as u32;
        s["state"] == "running" && new != 0 && new != old
    });
    assert!(back, "{name} did not come back; log:\n{}", ddm.log());
    new
}

/// HELLO_GET_GREETINGS through the file, by Python's ioctl (not our code).
fn greetings_by_python(dev: &Path) -> u64 {
    let script = format!(
        "import fcntl, os, struct\nfd = os.open({:?}, os.O_RDONLY)\n\
         print(struct.unpack('Q', fcntl.ioctl(fd, 0x80086801, bytes(8)))[0])",
        dev.display().to_string()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    ok(&out, "python3 ioctl").trim().parse().unwrap()
}

fn cat(path: &Path) -> Output {
    Command::new("cat").arg(path).output().unwrap()
}

#[test]
fn the_c_hello_driver_greets_answers_its_ioctl_and_keeps_its_count_across_kill_9() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = build_hello(&b);
    // Linked dynamically: it needs libddf.so.0 and holds none of its code.
    let dynamic = ok(&Command::new("readelf").arg("-d").arg(&exe).output().unwrap(), "readelf");
    assert!(dynamic.contains("Shared library: [libddf.so.0]"), "{dynamic}");
    let syms = ok(&Command::new("nm").arg(&exe).output().unwrap(), "nm");
    assert!(syms.lines().any(|l| l.trim() == "U ddf_driver_run@DDF_0.1"), "ddf_driver_run is not imported:\n{syms}");

    let ddm = Ddm::builder().manifest(&hello_manifest(&b, &exe)).wait_for("hello").start();
    let dev = ddm.path("hello");
    // cat prints hello and ends; head takes it a byte at a time.
    let out = cat(&dev);
    assert_eq!(ok(&out, "cat /ddf/hello"), "hello\n");
    let out = sh(&format!("dd if={} bs=1 status=none", dev.display()));
    assert_eq!(ok(&out, "dd bs=1"), "hello\n");
    // The ioctl answers the count (two greetings), as does ddmctl status.
    assert_eq!(greetings_by_python(&dev), 2);
    assert_eq!(counter(&ddm, "hello", "greetings"), Some(2));
    // An unknown ioctl is ENOTTY.
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl, os\ntry:\n  fcntl.ioctl(os.open({:?}, os.O_RDONLY), 0x80086802, bytes(8))\n\
             except OSError as e:\n  print(e.errno)",
            dev.display().to_string()
        ))
        .output()
        .unwrap();
    assert_eq!(ok(&out, "python3").trim(), libc::ENOTTY.to_string());

    // Confined like any driver: nobody, no new privileges, the library
    // loaded from the installed prefix.
    let p = pid(&ddm, "hello");
    let st = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
    assert!(st.lines().any(|l| l.starts_with("Uid:") && l.contains("65534")), "{st}");
    assert!(st.lines().any(|l| l == "NoNewPrivs:\t1"), "{st}");
    let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap();
    assert!(maps.contains(&format!("{}/libddf.so.0.1.0", b.libdir().display())), "{maps}");

    // kill -9: ddm restarts it, and the count is still there.
    // SAFETY: kill(2) on the driver process of the ddm under test.
    unsafe { libc::kill(p as i32, libc::SIGKILL) };
    let new = wait_new_pid(&ddm, "hello", p);
    assert_ne!(new, p);
    assert_eq!(greetings_by_python(&dev), 2, "the count did not survive the restart");
    assert_eq!(ok(&cat(&dev), "cat after the restart"), "hello\n");
    assert_eq!(greetings_by_python(&dev), 3);
    assert_eq!(status(&ddm, "hello")["restarts"], 1);
    let log = ddm.log();
    assert!(log.contains("hello: libddf 0.1.0, 2 greetings so far"), "the C driver's log line is missing:\n{log}");
}

#[test]
fn a_c_driver_parks_reads_and_answers_them_from_other_threads() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = b.cc("ddf-parked", &["tests/c/parked.c"], "-pthread");
    let ddm = Ddm::builder().manifest(&b.manifest("parked", &exe, "")).wait_for("forever").start();
    // A read parked forever does not hold up the others.
    let forever = Command::new("cat").arg(ddm.path("forever")).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // Answered on the runtime's thread, after a worker thread woke it.
    let t = Instant::now();
    assert_eq!(ok(&cat(&ddm.path("later")), "cat later"), "woken\n");
    assert!(t.elapsed() >= Duration::from_millis(150), "the read was not parked ({:?})", t.elapsed());
    // Answered by the worker thread itself.
    let t = Instant::now();
    assert_eq!(ok(&cat(&ddm.path("thread")), "cat thread"), "threaded\n");
    assert!(t.elapsed() >= Duration::from_millis(150), "the read was not parked ({:?})", t.elapsed());
    // Several at once, each answered.
    let readers: Vec<_> = (0..4)
        .map(|i| {
            let dev = ddm.path(["later", "thread"][i % 2]);
            Command::new("cat").arg(dev).stdout(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    for (i, r) in readers.into_iter().enumerate() {
        assert_eq!(ok(&r.wait_with_output().unwrap(), "cat"), ["woken\n", "threaded\n"][i % 2]);
    }
    // The caller who gives up: the cancel callback answers EINTR, the
    // reader ends on its signal.
    let mut forever = forever;
    // SAFETY: kill(2) on the cat this test started.
    unsafe { libc::kill(forever.id() as i32, libc::SIGTERM) };
    let st = ddf_tests::wait_timeout(&mut forever, Duration::from_secs(10)).expect("the parked reader did not end");
    assert!(!st.success());
    let out = sh(&format!("timeout 1 cat {}", ddm.path("forever").display()));
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || ddm.log().matches("answered EINTR").count() >= 2),
        "the cancels did not reach the C driver:\n{}",
        ddm.log()
    );
    assert_eq!(status(&ddm, "parked")["restarts"], 0);
    // Asked to stop, it runs fini (which frees its waker) and exits.
    let mut ddm = ddm;
    assert_eq!(ddm.stop().map(|s| s.success()), Some(true));
    assert!(ddm.log().contains("parked: fini, waker freed"), "{}", ddm.log());
}

#[test]
fn the_c_client_gets_what_the_file_gives_and_is_refused_where_the_file_is() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = build_hello(&b);
    let client = b.cc(
        "hello-client",
        &["examples/c/hello-client.c"],
        &format!("-I{}", repo_root().join("drivers/hello").display()),
    );
    let ls = b.cc("ddf-ls", &["examples/c/ddf-ls.c"], "");
    let ddm = Ddm::builder().manifest(&hello_manifest(&b, &exe)).wait_for("hello").start();
    let dev = ddm.path("hello");
    let d = dev.to_str().unwrap();
    let s = ddm.socket.to_str().unwrap();
    let run = |pre: &[&str], args: &[&str]| -> Output {
        let mut cmd = match pre.split_first() {
            None => Command::new(&client),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&client);
                c
            }
        };
        cmd.args(["-s", s]).args(args).output().unwrap()
    };
    // The same bytes as cat, the same count as the ioctl on the file.
    let file = ok(&cat(&dev), "cat");
    let direct = ok(&run(&[], &[d]), "hello-client");
    assert_eq!(direct, file);
    let by_file = ok(&run(&[], &["-f", "-c", d]), "hello-client -f -c");
    let by_link = ok(&run(&[], &["-c", d]), "hello-client -c");
    assert_eq!(by_link, by_file);
    assert_eq!(by_link.trim(), "2");
    assert_eq!(greetings_by_python(&dev).to_string(), by_link.trim());
    // hello has no write: the link and the file both say EINVAL.
    for args in [&["-w", "hi", d][..], &["-f", "-w", "hi", d][..]] {
        let out = run(&[], args);
        assert!(!out.status.success(), "{args:?} wrote");
        assert!(String::from_utf8_lossy(&out.stderr).contains("write: Invalid argument"), "{args:?}: {out:?}");
    }

    // Another user is refused by the file's mode (root 0600), directly too.
    let user = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups"];
    let out = Command::new(user[0]).args(&user[1..]).arg("cat").arg(&dev).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    let out = run(&user, &[d]);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Permission denied"), "{out:?}");
    // Allowed by a chmod, it reads, directly too.
    ok(&sh(&format!("chmod 644 {d}")), "chmod");
    assert_eq!(ok(&run(&user, &[d]), "hello-client as 4242"), "hello\n");

    // A file that is not on the mount is no proof: ddm's words come back.
    let out = Command::new(&client).args(["-s", s, "/dev/null"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on the ddf mount"), "{out:?}");

    // libDDM from C: the tree, and find.
    let tree = ok(&Command::new(&ls).args(["-s", s]).output().unwrap(), "ddf-ls");
    assert!(tree.lines().next().unwrap().starts_with("/ bus "), "{tree}");
    assert!(tree.lines().any(|l| l.starts_with("/null char 0666 ")), "{tree}");
    let found = ok(&Command::new(&ls).args(["-s", s, "-d", "hello"]).output().unwrap(), "ddf-ls -d hello");
    let want = format!("/hello char 0644 0:0 hello {} running\n", pid(&ddm, "hello"));
    assert_eq!(found, want);
    let found = ok(&Command::new(&ls).args(["-s", s, "-c", "block", "-n", "ram*"]).output().unwrap(), "ddf-ls");
    assert_eq!(found.lines().map(|l| l.split(' ').next().unwrap()).collect::<Vec<_>>(), ["/ram0"]);
    let out = Command::new(&ls).args(["-s", "/nonexistent.sock"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach ddm"), "{out:?}");
}

#[test]
fn the_rest_of_the_driver_api_works_from_c() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = b.cc("ddf-features", &["tests/c/features.c"], "");
    let client = b.cc(
        "hello-client",
        &["examples/c/hello-client.c"],
        &format!("-I{}", repo_root().join("drivers/hello").display()),
    );
    let params = "[params]\ngreeting = \"hi there\"\ncount = 3\n";
    let other = |name: &str| b.manifest(name, &exe, &format!("[params]\nprefix = \"{name}-\"\n"));
    let ddm = Ddm::builder()
        .manifest(&b.manifest("features", &exe, params))
        .manifest(&other("short"))
        .manifest(&other("long"))
        .manifest(&other("longnull"))
        .wait_for("ctl")
        .wait_for("longnull-ctl")
        .start();
    // Manifest parameters, all of them and one by name; the instance name.
    let text = ok(&cat(&ddm.path("params")), "cat params");
    assert_eq!(text, "count=3\ngreeting=hi there\ngreeting is hi there\n");
    assert!(ddm.log().contains("features: instance features"), "{}", ddm.log());

    // A watched descriptor: a read waits for the pipe, a write fills it.
    let pipe = ddm.path("pipe");
    let reader =
        Command::new("head").args(["-c", "3"]).arg(&pipe).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ok(&sh(&format!("printf abc > {}", pipe.display())), "printf > pipe");
    let out = reader.wait_with_output().unwrap();
    assert_eq!(ok(&out, "head -c 3 pipe"), "abc");
    // poll(2) waits until the driver says readable (ddf_poll_wake).
    let script = format!(
        "import os, select, threading, time\n\
         fd = os.open({p:?}, os.O_RDONLY)\n\
         p = select.poll(); p.register(fd, select.POLLIN)\n\
         print(p.poll(100))\n\
         def w():\n  time.sleep(0.3)\n  f = open({p:?}, 'w'); f.write('x'); f.close()\n\
         threading.Thread(target=w).start()\n\
         print(p.poll(10000), os.read(fd, 1))",
        p = pipe.display().to_string()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert_eq!(ok(&out, "python3 poll"), "[]\n[(3, 1)] b'x'\n");
    // O_NONBLOCK with nothing there: EAGAIN (ddf_reply_flags).
    let script = format!(
        "import os\nfd = os.open({:?}, os.O_RDONLY | os.O_NONBLOCK)\n\
         try:\n  os.read(fd, 1)\nexcept BlockingIOError as e:\n  print(e.errno)",
        pipe.display().to_string()
    );
    let out = Command::new("python3").arg("-c").arg(script).output().unwrap();
    assert_eq!(ok(&out, "python3 nonblocking read").trim(), libc::EAGAIN.to_string());
    // A write through the C client's direct link reaches the same pipe.
    let reader =
        Command::new("head").args(["-c", "3"]).arg(&pipe).stdout(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = Command::new(&client).arg("-s").arg(&ddm.socket).args(["-w", "xyz"]).arg(&pipe).output().unwrap();
    assert_eq!(ok(&out, "hello-client -w"), "3\n");
    assert_eq!(ok(&reader.wait_with_output().unwrap(), "head -c 3 pipe"), "xyz");

    // State with a descriptor: the memfd the first incarnation made comes
    // back to the next.
    let memo = ok(&cat(&ddm.path("memo")), "cat memo");
    let first = pid(&ddm, "features");
    assert_eq!(memo, format!("left by pid {first}\n"));
    // SAFETY: kill(2) on the driver process of the ddm under test.
    unsafe { libc::kill(first as i32, libc::SIGKILL) };
    wait_new_pid(&ddm, "features", first);
    assert_eq!(ok(&cat(&ddm.path("memo")), "cat memo after the restart"), memo);
    assert!(ddm.log().contains("features: got the memo back"), "{}", ddm.log());
    // Forgotten (ddf_state_drop), the next incarnation makes a new one.
    ok(&sh(&format!("echo forget memo > {}", ddm.path("ctl").display())), "echo > ctl");
    let second = pid(&ddm, "features");
    // SAFETY: as above.
    unsafe { libc::kill(second as i32, libc::SIGKILL) };
    let third = wait_new_pid(&ddm, "features", second);
    assert_eq!(ok(&cat(&ddm.path("memo")), "cat memo"), format!("left by pid {third}\n"));
    // ddf_stop: fini (which unwatches the pipe), then the run ends.
    ok(&sh(&format!("echo stop > {}", ddm.path("ctl").display())), "echo stop > ctl");
    wait_new_pid(&ddm, "features", third);
    assert!(ddm.log().contains("features: fini (unwatch 0)"), "{}", ddm.log());

    // Removing a device.
    assert!(ddm.path("gone").exists());
    ok(&sh(&format!("echo remove gone > {}", ddm.path("ctl").display())), "echo > ctl");
    assert!(wait_until(Duration::from_secs(5), || !ddm.path("gone").exists()), "gone is still there");

    // Tables of other sizes: a shorter one (an older driver) gets the
    // defaults for what it lacks; a longer one is taken if what this
    // library does not know is NULL, and refused if not.
    let out = cat(&ddm.path("short-params"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid argument"), "{out:?}");
    assert_eq!(ok(&cat(&ddm.path("longnull-params")), "cat longnull-params"), "prefix=longnull-\ngreeting is (none)\n");
    assert!(!ddm.path("long-params").exists());
    assert!(
        wait_until(Duration::from_secs(10), || ddm.log().contains("sets entries past the 88 this libddf 0.1.0 knows")),
        "{}",
        ddm.log()
    );
}

/// The functions include/ddf.h declares.
fn header_functions() -> Vec<String> {
    let header = std::fs::read_to_string(repo_root().join("include/ddf.h")).unwrap();
    let mut names: Vec<String> = header
        .lines()
        .filter(|l| !l.starts_with([' ', '*', '#', '/']) && !l.starts_with("static inline"))
        .filter_map(|l| {
            // The identifier right before the first '(' of a declaration.
            let end = l.find('(')?;
            let start = l[..end].rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
            l[start..end].starts_with("ddf_").then(|| l[start..end].to_owned())
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_library_exports_exactly_the_header_functions_and_the_header_compiles() {
    let b = CBuild::new();
    let lib = b.libdir().join("libddf.so.0");
    let out = ok(&Command::new("nm").args(["-D", "--defined-only"]).arg(&lib).output().unwrap(), "nm -D");
    let mut exported = Vec::new();
    for line in out.lines() {
        let name = line.split_whitespace().last().unwrap();
        if name == "DDF_0.1" {
            continue; // the version node itself
        }
        let (sym, version) = name.split_once("@@").unwrap_or((name, ""));
        assert!(sym.starts_with("ddf_"), "the library exports {name}, which is not a ddf_ function");
        assert_eq!(version, "DDF_0.1", "{sym} is not at version DDF_0.1");
        exported.push(sym.to_owned());
    }
    exported.sort();
    let declared = header_functions();
    assert!(declared.len() > 30, "{declared:?}");
    assert_eq!(exported, declared, "exported functions and the header's differ");
    // The soname, and the links an install makes.
    let dynamic = ok(&Command::new("readelf").arg("-d").arg(&lib).output().unwrap(), "readelf");
    assert!(dynamic.contains("Library soname: [libddf.so.0]"), "{dynamic}");
    assert_eq!(std::fs::read_link(b.libdir().join("libddf.so")).unwrap(), Path::new("libddf.so.0"));
    assert_eq!(std::fs::read_link(&lib).unwrap(), Path::new("libddf.so.0.1.0"));
    // pkg-config knows it.
    let out = Command::new("pkg-config")
        .args(["--modversion", "ddf"])
        .env("PKG_CONFIG_PATH", b.libdir().join("pkgconfig"))
        .output()
        .unwrap();
    assert_eq!(ok(&out, "pkg-config").trim(), "0.1.0");
    // The header stands alone in strict C, and in C++ where there is one.
    std::fs::write(b.path("only.c"), "#include <ddf.h>\nint main(void) { return ddf_version() == 0; }\n").unwrap();
    let cmd = format!(
        "cc -std=c99 -pedantic -Wall -Wextra -Werror -o {0}/only {0}/only.c $(pkg-config --cflags --libs ddf) \
         -Wl,-rpath,{1} && {0}/only",
        b.dir.path().display(),
        b.libdir().display()
    );
    let out = Command::new("sh").arg("-c").arg(&cmd).env("PKG_CONFIG_PATH", b.libdir().join("pkgconfig")).output();
    ok(&out.unwrap(), &cmd);
    if sh("command -v c++").status.success() {
        std::fs::write(b.path("only.cc"), "#include <ddf.h>\nint main() { return ddf_version() == nullptr; }\n")
            .unwrap();
        let cmd = format!(
            "c++ -Wall -Wextra -Werror -fsyntax-only {}/only.cc $(pkg-config --cflags ddf)",
            b.dir.path().display()
        );
        let out = Command::new("sh").arg("-c").arg(&cmd).env("PKG_CONFIG_PATH", b.libdir().join("pkgconfig")).output();
        ok(&out.unwrap(), &cmd);
    }
}

#[test]
fn install_lib_stages_under_destdir_with_a_pc_file_that_names_the_prefix() {
    let b = CBuild::new();
    let stage = b.path("stage");
    let archive = bin_dir().join("libddf_c.a");
    let existed = Path::new("/opt/ddf").exists();
    let out = Command::new(repo_root().join("scripts/install-lib"))
        .args(["--prefix", "/opt/ddf", "--destdir"])
        .arg(&stage)
        .arg("--archive")
        .arg(&archive)
        .output()
        .unwrap();
    ok(&out, "install-lib --destdir");
    for f in ["opt/ddf/lib/libddf.so.0.1.0", "opt/ddf/include/ddf.h", "opt/ddf/lib/pkgconfig/ddf.pc"] {
        assert!(stage.join(f).exists(), "{f} was not staged");
    }
    assert!(existed || !Path::new("/opt/ddf").exists(), "install-lib wrote to the prefix, not under DESTDIR");
    let pc = std::fs::read_to_string(stage.join("opt/ddf/lib/pkgconfig/ddf.pc")).unwrap();
    assert!(pc.contains("prefix=/opt/ddf\n") && pc.contains("libdir=/opt/ddf/lib\n"), "{pc}");
    // A packager's build against the staged tree.
    let cmd = format!(
        "cc -o {0}/hello {1} $(pkg-config --cflags --libs ddf)",
        b.dir.path().display(),
        repo_root().join("drivers/hello/hello.c").display()
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env("PKG_CONFIG_SYSROOT_DIR", &stage)
        .env("PKG_CONFIG_PATH", stage.join("opt/ddf/lib/pkgconfig"))
        .output()
        .unwrap();
    ok(&out, &cmd);
    // Bad arguments are clear errors.
    let out = Command::new(repo_root().join("scripts/install-lib")).args(["--prefix", "relative"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("absolute path"), "{out:?}");
}

#[test]
fn a_c_driver_that_breaks_the_api_is_ended_with_a_clear_message_and_ddm_carries_on() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = b.cc("ddf-violate", &["tests/c/violate.c"], "-pthread");
    let ddm = Ddm::builder()
        .manifest(&b.manifest("violate", &exe, "[supervision]\nmax_failures = 20\n"))
        .wait_for("fine")
        .start();
    let cases = [
        ("twice", "API violation in ddf_reply_data: reply 0x", "was answered already"),
        ("nullname", "API violation in ddf_counter_set: name is NULL", ""),
        ("badreturn", "API violation in the driver's open: the return value is 7", "not a negative errno"),
        ("stalectx", "API violation in ddf_counter_set: ctx 0x", "used outside a callback"),
    ];
    for (i, (dev, first, second)) in cases.iter().enumerate() {
        let old = pid(&ddm, "violate");
        let _ = cat(&ddm.path(dev));
        let new = wait_new_pid(&ddm, "violate", old);
        let log = ddm.log();
        let line = log.lines().find(|l| l.contains(first)).unwrap_or_else(|| panic!("no {first:?} in:\n{log}"));
        assert!(line.contains(second) && line.contains("ending the process"), "{line}");
        let s = status(&ddm, "violate");
        assert_eq!(s["restarts"], i as u64 + 1);
        assert!(s["last_exit"].as_str().unwrap().contains("SIGABRT"), "{s}");
        assert_ne!(new, old);
        // The driver works again, and so does everything else.
        assert_eq!(ok(&cat(&ddm.path("fine")), "cat fine"), "fine\n");
        assert_eq!(std::fs::read(ddm.path("null")).unwrap(), b"");
    }
    // A panic inside the library (injected into the runtime) does not
    // cross into C: ddf_driver_run logs it and returns 1.
    let old = pid(&ddm, "violate");
    ddm.ddmctl_ok(&["inject", "violate", "panic"]);
    wait_new_pid(&ddm, "violate", old);
    let log = ddm.log();
    assert!(log.contains("internal error in ddf_driver_run: injected panic"), "{log}");
    let s = status(&ddm, "violate");
    assert!(s["last_exit"].as_str().unwrap().contains("status 1"), "{s}");
    assert_eq!(ok(&cat(&ddm.path("fine")), "cat fine"), "fine\n");
    assert_ne!(pid(&ddm, "null"), 0);
}

#[test]
fn a_c_driver_whose_library_its_sandbox_hides_fails_with_the_loaders_words() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = build_hello(&b);
    // The checked-in manifest minus the line that lets it read libddf.
    let manifest: String =
        hello_manifest(&b, &exe).lines().filter(|l| !l.starts_with("read =")).map(|l| format!("{l}\n")).collect();
    let ddm = Ddm::builder().manifest(&manifest).start();
    assert!(
        wait_until(Duration::from_secs(20), || ddm.log().contains("libddf.so.0: cannot open shared object file")),
        "{}",
        ddm.log()
    );
    assert!(ddm.path("null").exists());
}

/// Copies the parts of the source tree that build libddf-c into `to`, as a
/// workspace of those crates only.
fn copy_library_sources(to: &Path) {
    let root = repo_root();
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for dir in ["libddf", "libddf-c", "include", "scripts"] {
        let out = Command::new("cp").arg("-r").arg(root.join(dir)).arg(to).output().unwrap();
        ok(&out, "cp -r");
    }
    std::fs::copy(root.join("Cargo.lock"), to.join("Cargo.lock")).unwrap();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let start = manifest.find("members = [").unwrap();
    let end = start + manifest[start..].find(']').unwrap() + 1;
    let manifest = format!("{}members = [\"libddf\", \"libddf-c\"]{}", &manifest[..start], &manifest[end..]);
    std::fs::write(to.join("Cargo.toml"), manifest).unwrap();
}

/// Replaces `from` by `to` in the file `path`, which must contain it.
fn patch(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The paper's property: a driver built once runs on a newer library
/// without being rebuilt. The newer library is built here from changed
/// sources (a new version, a new function at a new symbol version), with
/// cargo, and installed over the old one with scripts/install-lib.
#[test]
fn an_unrebuilt_c_driver_runs_on_a_newer_library() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = build_hello(&b);
    let built = std::fs::read(&exe).unwrap();
    let dynamic = ok(&Command::new("readelf").arg("-d").arg(&exe).output().unwrap(), "readelf -d");
    assert!(dynamic.contains("Shared library: [libddf.so.0]"), "{dynamic}");
    let ddm = Ddm::builder().manifest(&hello_manifest(&b, &exe)).wait_for("hello").start();
    assert_eq!(ok(&cat(&ddm.path("hello")), "cat"), "hello\n");
    assert!(ddm.log().contains("hello: libddf 0.1.0, 0 greetings so far"), "{}", ddm.log());

    // libddf 0.2.0: changed sources, built in a target directory of its
    // own (kept between runs, so that only libddf itself is rebuilt).
    let work = bin_dir().parent().unwrap().join("c-abi-next");
    let src = work.join("src");
    copy_library_sources(&src);
    patch(&src.join("libddf-c/Cargo.toml"), "version = \"0.1.0\"", "version = \"0.2.0\"");
    std::fs::write(
        src.join("libddf-c/src/next.rs"),
        "/// Added in 0.2.0: which revision of the C ABI this library is.\n\
         #[no_mangle]\npub extern \"C\" fn ddf_abi_revision() -> u32 {\n    2\n}\n",
    )
    .unwrap();
    patch(&src.join("libddf-c/src/lib.rs"), "mod handles;\n", "mod handles;\npub mod next;\n");
    let map = src.join("libddf-c/ddf.map");
    let text = std::fs::read_to_string(&map).unwrap();
    std::fs::write(&map, format!("{text}\nDDF_0.2 {{\n  global:\n    ddf_abi_revision;\n}} DDF_0.1;\n")).unwrap();
    let out = Command::new(src.join("scripts/install-lib"))
        .args(["--debug", "--no-ldconfig", "--prefix"])
        .arg(b.prefix())
        .env("CARGO_TARGET_DIR", work.join("target"))
        .env("CARGO_NET_OFFLINE", "true")
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .output()
        .unwrap();
    let said = ok(&out, "the newer library's install-lib");
    assert!(said.contains("installed libddf 0.2.0"), "{said}");
    let syms = ok(
        &Command::new("nm").args(["-D", "--defined-only"]).arg(b.libdir().join("libddf.so.0")).output().unwrap(),
        "nm",
    );
    assert!(syms.contains("ddf_abi_revision@@DDF_0.2"), "{syms}");
    assert!(syms.contains("ddf_driver_run@@DDF_0.1"), "{syms}");

    // The same binary, not rebuilt, on its next start loads 0.2.0.
    let old = pid(&ddm, "hello");
    ddm.ddmctl_ok(&["restart", "hello"]);
    let new = wait_new_pid(&ddm, "hello", old);
    assert_eq!(std::fs::read(&exe).unwrap(), built, "the driver binary changed");
    let maps = std::fs::read_to_string(format!("/proc/{new}/maps")).unwrap();
    assert!(maps.contains(&format!("{}/libddf.so.0.2.0", b.libdir().display())), "{maps}");
    assert!(ddm.log().contains("hello: libddf 0.2.0, 1 greetings so far"), "{}", ddm.log());
    assert_eq!(ok(&cat(&ddm.path("hello")), "cat on 0.2.0"), "hello\n");
    assert_eq!(greetings_by_python(&ddm.path("hello")), 2);
}

#[test]
fn a_c_driver_gets_its_dma_memory_with_its_segments() {
    ddf_tests::needs_root!();
    let b = CBuild::new();
    let exe = b.cc("ddf-dma", &["tests/c/dma.c"], "");
    // Page-sized segments, from ordinary locked pages unless reserved huge
    // pages are free: ddm does not touch the machine's huge-page pool.
    let ddm = Ddm::builder()
        .args(&["--no-builtin", "--dma-reserved-only"])
        .manifest(&b.manifest("dma", &exe, "[dma]\nbytes = \"64K\"\ncontiguous = \"4K\"\n"))
        .wait_for("dma")
        .start();
    let r = ddf_tests::dma::Report::parse(&ok(&cat(&ddm.path("dma")), "cat dma"));
    assert!(r.bytes >= 64 << 10 && r.bytes % r.page_size == 0, "{r:?}");
    assert_eq!(r.segments.len(), r.bytes / r.page_size);
    assert!(r.pinned, "{r:?}");
    let p = pid(&ddm, "dma");
    ddf_tests::dma::check_pagemap(p, &r);
    ddf_tests::dma::check_second_mapping(p, &r);
    assert!(ddm.log().contains(&format!("dma: {} bytes in {} segments", r.bytes, r.segments.len())), "{}", ddm.log());
}
