//! `.dockerignore` patterns and matching: the first part (up to a NUL byte)
//! is the file, every following NUL-separated part a path to test.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let patterns = parts.next().unwrap_or_default();
    let Ok(ignore) = dockless::context::DockerIgnore::parse(patterns, ".dockerignore") else {
        return;
    };
    let _ = ignore.is_empty();
    for path in parts {
        let _ = ignore.is_excluded(path);
        let _ = ignore.may_reinclude_below(path);
    }
});
