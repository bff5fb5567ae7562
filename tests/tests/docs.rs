//! The man pages render without warnings and document every option and
//! subcommand the binaries have (so they cannot drift from the code).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::Command;

use ddf_tests::{bin, repo_root};

fn render_warnings(page: &str) -> String {
    let path = repo_root().join("man").join(page);
    assert!(path.exists(), "{} is missing", path.display());
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&path)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "man -l {page} failed");
    assert!(!out.stdout.is_empty(), "{page} rendered to nothing");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Long options and subcommands listed by `prog [sub] --help`.
fn help_words(prog: &str, sub: Option<&str>) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cmd = Command::new(bin(prog));
    if let Some(s) = sub {
        cmd.arg(s);
    }
    let out = cmd.arg("--help").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut opts = BTreeSet::new();
    let mut subs = BTreeSet::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if !line.starts_with(' ') {
            in_commands = false;
        }
        if in_commands {
            if let Some(w) = line.split_whitespace().next() {
                if w != "help" {
                    subs.insert(w.to_owned());
                }
            }
        }
        for w in line.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some(o) = w.strip_prefix("--") {
                let o = o.split('=').next().unwrap();
                if !o.is_empty() && o != "help" && o != "version" {
                    opts.insert(o.to_owned());
                }
            }
        }
    }
    (opts, subs)
}

fn man_text(page: &str) -> String {
    // roff escapes hyphens as \-; compare against the plain text.
    std::fs::read_to_string(repo_root().join("man").join(page)).unwrap().replace("\\-", "-")
}

fn assert_documented(prog: &str, page: &str) {
    let man = man_text(page);
    let (opts, subs) = help_words(prog, None);
    assert!(!opts.is_empty() || !subs.is_empty(), "{prog} --help listed nothing");
    let mut all_opts = opts.clone();
    for s in &subs {
        let documented = man.contains(&format!("\n.B {s}\n")) || man.contains(&format!("\n.BI {s} "));
        assert!(documented, "{page} does not document the command {s}");
        all_opts.extend(help_words(prog, Some(s)).0);
    }
    for o in all_opts {
        assert!(man.contains(&format!("--{o}")), "{page} does not document --{o}");
    }
}

#[test]
fn man_pages_render_without_warnings() {
    for page in std::fs::read_dir(repo_root().join("man")).unwrap() {
        let name = page.unwrap().file_name().into_string().unwrap();
        let warnings = render_warnings(&name);
        assert!(warnings.trim().is_empty(), "man {name} warns:\n{warnings}");
    }
}

#[test]
fn ddm_page_documents_every_option() {
    assert_documented("ddm", "ddm.8");
}

#[test]
fn ddmctl_page_documents_every_command_and_option() {
    assert_documented("ddmctl", "ddmctl.8");
}

/// The code blocks (`.nf` ... `.fi`) of a man page section, unescaped.
fn code_blocks(page: &str, section: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("man").join(page)).unwrap();
    let start = text.find(&format!("\n{section}\n")).unwrap_or_else(|| panic!("{page} has no {section}"));
    let rest = &text[start + section.len() + 2..];
    let end = rest.find("\n.SS ").or_else(|| rest.find("\n.SH ")).unwrap_or(rest.len());
    let mut blocks = Vec::new();
    let mut lines = rest[..end].lines();
    while lines.by_ref().any(|l| l == ".nf") {
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|l| *l != ".fi")
            .filter(|l| *l != ".RS" && *l != ".RE")
            .map(|l| l.strip_prefix("\\&").unwrap_or(l).replace("\\-", "-").replace("\\e", "\\"))
            .collect();
        blocks.push(body.join("\n") + "\n");
    }
    blocks
}

#[test]
fn ddf_driver_7_shows_the_whole_c_hello_driver_and_its_manifest() {
    let file = |rel: &str| std::fs::read_to_string(repo_root().join(rel)).unwrap();
    let hint = "update the C section of man/ddf-driver.7 from drivers/hello/";
    let driver = code_blocks("ddf-driver.7", ".SS The hello driver");
    assert_eq!(driver, [format!("{}\n{}", file("drivers/hello/hello.h"), file("drivers/hello/hello.c"))], "{hint}");
    let manifest = code_blocks("ddf-driver.7", ".SS Its manifest");
    assert_eq!(manifest, [file("drivers/hello/manifest.toml")], "{hint}");
    let build = code_blocks("ddf-driver.7", ".SS Building");
    assert_eq!(build, ["cc -o ddf-hello hello.c $(pkg-config --cflags --libs ddf)\n"]);
}
