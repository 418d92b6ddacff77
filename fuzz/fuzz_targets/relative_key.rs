//! Every input through `content_paths::invariants::check(Target::RelativeKey, ..)`.
#![no_main]

use content_paths::invariants::{Target, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check(Target::RelativeKey, data) {
        panic!("{violation}");
    }
});
