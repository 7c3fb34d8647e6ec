//! Robustness: parse and expansion return, never panic.

use super::*;

/// Deterministic fuzzing: parse and expansion must return, never panic.
#[test]
fn fuzz_never_panics() {
    let fragments = [
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "LABEL ",
        "ARG ",
        "CMD ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "SHELL ",
        "VOLUME ",
        "EXPOSE ",
        "USER ",
        "WORKDIR ",
        "AS ",
        "x",
        "--from=",
        "--link",
        "--interval=",
        "1m30s",
        "5",
        "ms",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\\",
        "`",
        "#",
        "# escape=`\n",
        "# syntax=x\n",
        "[",
        "]",
        "\"",
        "'",
        ",",
        "{",
        "}",
        ":",
        "=",
        "$",
        "${",
        ":-",
        ":?",
        "+",
        "<<",
        "<<-",
        "EOF",
        "\nEOF\n",
        "\\u",
        "d83d",
        "é",
        "☃",
        "\u{feff}",
        "\0",
        "NONE",
        "CMD",
        "--",
        "-",
        ".",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let look = |name: &str| {
        if name.len().is_multiple_of(2) {
            Some(name.to_string())
        } else {
            None
        }
    };
    for _ in 0..4000 {
        let mut text = String::new();
        let n = (next() % 40) as usize;
        for _ in 0..n {
            let r = next();
            if r % 5 == 0 {
                text.push(char::from_u32((r >> 8) as u32 % 0x800).unwrap_or('?'));
            } else {
                text.push_str(fragments[(r >> 8) as usize % fragments.len()]);
            }
        }
        let _ = parse(&text, "fuzz");
        let _ = parse(&format!("FROM a\n{text}"), "fuzz");
        let _ = expand_word(&text, '\\', &look);
        let _ = expand_words(&text, '`', &look);
        let _ = parse_go_duration(&text);
    }
}
