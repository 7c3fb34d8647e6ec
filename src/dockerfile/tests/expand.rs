//! Variable expansion and word splitting.

use super::*;

/// Each word expands, with `vars` set, to the expected text or error.
fn assert_expands(vars: &[(&str, &str)], cases: &[(&str, Result<&str, &str>)]) {
    for &(word, expected) in cases {
        let got = x(word, vars);
        assert_eq!(got.as_deref().map_err(String::as_str), expected, "{word:?}");
    }
}

#[test]
fn expand_basic_forms() {
    #[rustfmt::skip]
    let cases = [
        ("$A", Ok("apple")),
        ("${A}pie", Ok("applepie")),
        ("$A-$B.", Ok("apple-.")),
        ("${B:-def}", Ok("def")),
        ("${E:-def}", Ok("def")),
        ("${E-def}", Ok("")),
        ("${B-def}", Ok("def")),
        ("${A:+alt}", Ok("alt")),
        ("${E:+alt}", Ok("")),
        ("${E+alt}", Ok("alt")),
        ("${B+alt}", Ok("")),
        ("${A:?oops}", Ok("apple")),
        ("${E?oops}", Ok("")),
        ("${B:-${A}-x}", Ok("apple-x")),
        ("${B:-\"q }\"}", Ok("q }")),
    ];
    assert_expands(&[("A", "apple"), ("E", ""), ("S", "a b")], &cases);
}

#[test]
fn expand_quotes_and_escapes() {
    #[rustfmt::skip]
    let cases = [
        ("'$A'", Ok("$A")),
        ("\"$A\"", Ok("apple")),
        ("\"a\\$A\\\"\\\\\\n\"", Ok("a$A\"\\\\n")),
        ("\\$A", Ok("$A")),
        ("a\\ b\\x", Ok("a bx")),
        ("trailing\\", Ok("trailing")),
        ("it's", Err("unexpected end of input: missing closing single quote")),
        ("'a'\"b\"c", Ok("abc")),
        ("cost: $ 5 $", Ok("cost: $ 5 $")),
        ("$-x$/", Ok("$-x$/")),
    ];
    assert_expands(&[("A", "apple")], &cases);
}

#[test]
fn expand_with_backtick_escape() {
    let look = env(&[("A", "apple")]);
    #[rustfmt::skip]
    let cases = [
        ("C:\\dir\\$A", "C:\\dir\\apple"),
        ("`$A", "$A"),
        ("\"`\"`$ \\\"", "\"$ \\"),
    ];
    for (word, expected) in cases {
        assert_eq!(
            expand_word(word, '`', &look).as_deref(),
            Ok(expected),
            "{word:?}"
        );
    }
}

#[test]
fn expand_errors() {
    #[rustfmt::skip]
    let cases = [
        ("${A", Err("missing '}' in substitution ${A")),
        ("${A:-x", Err("missing '}' in variable substitution")),
        ("${}", Err("bad substitution: missing variable name after ${")),
        ("${A#x}", Err("unsupported modifier \"#\" in substitution ${A...}")),
        ("${A:=x}", Err("unsupported modifier \":=\" in substitution ${A...}")),
        ("${A?}", Err("A: is not allowed to be unset")),
        ("\"abc", Err("unexpected end of input: missing closing double quote")),
    ];
    assert_expands(&[], &cases);
    assert_expands(
        &[("A", "")],
        &[("${A:?must be set}", Err("A: must be set"))],
    );
    let deep = format!("{}x{}", "${A:-".repeat(200), "}".repeat(200));
    assert_eq!(
        x(&deep, &[]),
        Err("variable substitution nested too deeply".into())
    );
}

#[test]
fn expand_words_splits_on_unquoted_whitespace() {
    let look = env(&[("P", "80 443"), ("Q", "a b")]);
    #[rustfmt::skip]
    let cases: [(&str, &[&str]); 5] = [
        ("80  $P\t\"x y\" 'z w'", &["80", "80", "443", "x y", "z w"]),
        ("\"$Q\" pre$Q", &["a b", "prea", "b"]),
        ("a\\ b  ", &["a b"]),
        ("   ", &[]),
        ("$NOPE", &[]),
    ];
    for (word, words) in cases {
        assert_eq!(expand_words(word, '\\', &look), Ok(s(words)), "{word:?}");
    }
}
