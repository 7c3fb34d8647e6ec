//! `WWW-Authenticate` parsing of hostile header values.
#![no_main]
use dockless::auth::{parse_www_authenticate, Challenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for c in parse_www_authenticate(text) {
        // A Bearer challenge always carries a realm.
        if let Challenge::Bearer { realm, .. } = &c {
            let _ = realm.len();
        }
    }
});
