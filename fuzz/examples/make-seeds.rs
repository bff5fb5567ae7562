//! Writes the corpus seeds ([`ddf_fuzz::seeds`]) to `fuzz/corpus/<target>/`,
//! replacing files of the same name and leaving others alone:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make-seeds`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let scratch = std::env::temp_dir().join(format!("ddf-fuzz-seeds.{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&scratch) {
        eprintln!("make-seeds: cannot create {}: {e}", scratch.display());
        return ExitCode::FAILURE;
    }
    let seeds = ddf_fuzz::seeds::all(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    for seed in &seeds {
        let dir = corpus.join(seed.target);
        let path = dir.join(&seed.name);
        if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &seed.bytes)) {
            eprintln!("make-seeds: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!("make-seeds: {} seeds in {}", seeds.len(), corpus.display());
    ExitCode::SUCCESS
}
