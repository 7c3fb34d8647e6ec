//! Dockerfile parser and word expansion: any text must give a Dockerfile or
//! an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = dockless::dockerfile::parse(text, "Dockerfile") {
        // Re-parsing the rendered instructions must not panic either.
        let mut again = String::new();
        for st in &df.stages {
            for i in &st.instructions {
                again.push_str(&i.original);
                again.push('\n');
            }
        }
        let _ = dockless::dockerfile::parse(&again, "Dockerfile");
    }
    let lookup = |name: &str| -> Option<String> {
        match name {
            "A" => Some("a b".into()),
            "EMPTY" => Some(String::new()),
            "X" => Some("$A".into()),
            _ => None,
        }
    };
    for escape in ['\\', '`'] {
        let _ = dockless::dockerfile::expand_word(text, escape, &lookup);
        let _ = dockless::dockerfile::expand_words(text, escape, &lookup);
    }
});
