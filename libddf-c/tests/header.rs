//! `include/ddf.h` is what cbindgen generates from the sources, so the
//! header C programs compile against cannot drift from the library.
//!
//! After changing the C API: `DDF_UPDATE_HEADER=1 cargo test -p ddf-c --test
//! header` rewrites the header; commit it with the change.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn generate() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).unwrap();
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"))
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn the_checked_in_header_is_what_the_sources_generate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/ddf.h");
    let fresh = generate();
    if std::env::var_os("DDF_UPDATE_HEADER").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != fresh {
        let line = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| checked_in.lines().count().min(fresh.lines().count()) + 1, |i| i + 1);
        panic!(
            "include/ddf.h is not what libddf-c/src generates (first difference at line {line}); \
             regenerate it with `DDF_UPDATE_HEADER=1 cargo test -p ddf-c --test header` and commit it"
        );
    }
}

#[test]
fn every_function_in_the_header_is_documented() {
    let header = generate();
    let lines: Vec<&str> = header.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(start) = line.find("ddf_").filter(|_| line.ends_with('(') && !line.starts_with(' ')) else {
            continue;
        };
        let name = &line[start..line.len() - 1];
        // The declaration's return type may be on the line itself; the
        // comment ends on the line before.
        let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty()).copied().unwrap_or("");
        assert!(before.trim_end().ends_with("*/"), "{name} has no documentation comment in the header");
    }
}

#[test]
fn the_default_socket_is_libddfs() {
    let header = generate();
    let want = format!("#define DDF_DEFAULT_CONTROL_SOCKET \"{}\"", ddf::ddm::DEFAULT_CONTROL_SOCKET);
    assert!(header.contains(&want), "the header does not say {want}");
}
