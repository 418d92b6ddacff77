//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the very checks the fuzz
//! targets assert (`content_paths::invariants`), so that CI, on stable Rust and without libFuzzer,
//! asserts again every input the fuzzer found worth keeping. The `decode_key` corpus is replayed
//! by content-copy's tests, where the decoder lives.

use content_paths::invariants::{Target, check};
use std::path::{Path, PathBuf};

fn corpus(target: Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target.name())
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| match entry {
            Ok(entry) => entry.path(),
            Err(e) => panic!("{}: {e}", dir.display()),
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, data)
        })
        .collect()
}

#[test]
fn every_saved_input_keeps_the_promises() {
    let mut broken = Vec::new();
    for target in Target::ALL {
        let dir = corpus(target);
        let inputs = inputs(&dir);
        // An empty folder would make this test pass while replaying nothing.
        assert!(
            inputs.len() >= 10,
            "{}: only {} inputs; run scripts/fuzz-paths to rebuild the corpus",
            dir.display(),
            inputs.len()
        );
        for (path, data) in &inputs {
            if let Err(violation) = check(target, data) {
                broken.push(format!("{}: {violation}", path.display()));
            }
        }
        eprintln!("{}: {} inputs replayed", target.name(), inputs.len());
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
