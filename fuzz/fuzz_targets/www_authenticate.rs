//! `WWW-Authenticate` parsing of hostile header values: never a panic, and
//! whatever it reads survives a round trip (rendered with quoted, escaped
//! values and parsed again, the challenges come back the same), so quoting
//! and escaping cannot shift one parameter into another.
#![no_main]
use dockless::remote::{parse_www_authenticate, Challenge};
use libfuzzer_sys::fuzz_target;

fn quoted(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

fn render(c: &Challenge) -> String {
    match c {
        Challenge::Basic { realm: None } => "Basic".into(),
        Challenge::Basic { realm: Some(r) } => format!("Basic realm={}", quoted(r)),
        Challenge::Bearer {
            realm,
            service,
            scope,
        } => {
            let mut s = format!("Bearer realm={}", quoted(realm));
            if let Some(v) = service {
                s.push_str(&format!(",service={}", quoted(v)));
            }
            if let Some(v) = scope {
                s.push_str(&format!(",scope={}", quoted(v)));
            }
            s
        }
        Challenge::Other { scheme } => scheme.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_www_authenticate(text);
    let header: Vec<String> = parsed.iter().map(render).collect();
    let again = parse_www_authenticate(&header.join(", "));
    assert_eq!(again, parsed, "round trip of {text:?} through {header:?}");
});
