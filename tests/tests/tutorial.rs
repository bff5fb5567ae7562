//! The driver of the ddf-driver(7) tutorial is the example that is built
//! (`libddf/examples/hello.rs`), and it works as the page says: under a real
//! ddm, `cat` of its device prints `hello` and ends.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use ddf_tests::{bin_dir, repo_root, Ddm};

/// The code block of the tutorial, as a reader of the page sees it.
fn tutorial_code() -> String {
    let page = std::fs::read_to_string(repo_root().join("man/ddf-driver.7")).unwrap();
    let start = page.find("\n.nf\n.RS\n").expect("no code block in ddf-driver(7)") + "\n.nf\n.RS\n".len();
    let end = start + page[start..].find(".RE\n.fi\n").unwrap();
    // roff escapes: \- is a minus, \e a backslash.
    page[start..end].replace("\\-", "-").replace("\\e", "\\")
}

#[test]
fn the_tutorial_is_the_example_that_is_built() {
    let example = std::fs::read_to_string(repo_root().join("libddf/examples/hello.rs")).unwrap();
    assert_eq!(tutorial_code(), example, "ddf-driver(7)'s tutorial and libddf/examples/hello.rs differ");
}

#[test]
fn cat_of_the_tutorial_device_prints_hello_and_ends() {
    ddf_tests::needs_root!();
    let exe = bin_dir().join("examples/hello");
    assert!(exe.exists(), "{} is missing: the tests build it with `cargo build --examples`", exe.display());
    let manifest = format!("name = \"hello\"\nexec = \"{}\"\nautostart = true\n", exe.display());
    let ddm = Ddm::builder().manifest(&manifest).wait_for("hello").start();
    for _ in 0..2 {
        let out = Command::new("timeout").arg("10").arg("cat").arg(ddm.path("hello")).output().unwrap();
        assert!(out.status.success(), "cat did not end at end of file: {:?}", out.status);
        assert_eq!(out.stdout, b"hello\n");
    }
    let out = Command::new("head").args(["-c", "3"]).arg(ddm.path("hello")).output().unwrap();
    assert_eq!(out.stdout, b"hel");
}
