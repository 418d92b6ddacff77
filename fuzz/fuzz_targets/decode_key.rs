//! Every input as an URL-encoded key: `content_copy::decode_key` against the invariants'
//! reference decoder, the encode/decode round trip, and the decoded key through `share_path`.
#![no_main]

use content_paths::invariants::check_decode_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check_decode_key(data, content_copy::decode_key) {
        panic!("{violation}");
    }
});
