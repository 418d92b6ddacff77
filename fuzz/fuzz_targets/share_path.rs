//! Every input through `content_paths::invariants::check(Target::SharePath, ..)`.
#![no_main]

use content_paths::invariants::{Target, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check(Target::SharePath, data) {
        panic!("{violation}");
    }
});
