//! Variable expansion and word splitting.

use super::*;

#[test]
fn expand_basic_forms() {
    let vars = [("A", "apple"), ("E", ""), ("S", "a b")];
    assert_eq!(x("$A", &vars).as_deref(), Ok("apple"));
    assert_eq!(x("${A}pie", &vars).as_deref(), Ok("applepie"));
    assert_eq!(x("$A-$B.", &vars).as_deref(), Ok("apple-."));
    assert_eq!(x("${B:-def}", &vars).as_deref(), Ok("def"));
    assert_eq!(x("${E:-def}", &vars).as_deref(), Ok("def"));
    assert_eq!(x("${E-def}", &vars).as_deref(), Ok(""));
    assert_eq!(x("${B-def}", &vars).as_deref(), Ok("def"));
    assert_eq!(x("${A:+alt}", &vars).as_deref(), Ok("alt"));
    assert_eq!(x("${E:+alt}", &vars).as_deref(), Ok(""));
    assert_eq!(x("${E+alt}", &vars).as_deref(), Ok("alt"));
    assert_eq!(x("${B+alt}", &vars).as_deref(), Ok(""));
    assert_eq!(x("${A:?oops}", &vars).as_deref(), Ok("apple"));
    assert_eq!(x("${E?oops}", &vars).as_deref(), Ok(""));
    assert_eq!(x("${B:-${A}-x}", &vars).as_deref(), Ok("apple-x"));
    assert_eq!(x("${B:-\"q }\"}", &vars).as_deref(), Ok("q }"));
}

#[test]
fn expand_quotes_and_escapes() {
    let vars = [("A", "apple")];
    assert_eq!(x("'$A'", &vars).as_deref(), Ok("$A"));
    assert_eq!(x("\"$A\"", &vars).as_deref(), Ok("apple"));
    assert_eq!(
        x("\"a\\$A\\\"\\\\\\n\"", &vars).as_deref(),
        Ok("a$A\"\\\\n")
    );
    assert_eq!(x("\\$A", &vars).as_deref(), Ok("$A"));
    assert_eq!(x("a\\ b\\x", &vars).as_deref(), Ok("a bx"));
    assert_eq!(x("trailing\\", &vars).as_deref(), Ok("trailing"));
    assert_eq!(
        x("it's", &vars),
        Err("unexpected end of input: missing closing single quote".into())
    );
    assert_eq!(x("'a'\"b\"c", &vars).as_deref(), Ok("abc"));
    assert_eq!(x("cost: $ 5 $", &vars).as_deref(), Ok("cost: $ 5 $"));
    assert_eq!(x("$-x$/", &vars).as_deref(), Ok("$-x$/"));
}

#[test]
fn expand_with_backtick_escape() {
    let look = env(&[("A", "apple")]);
    assert_eq!(
        expand_word("C:\\dir\\$A", '`', &look).as_deref(),
        Ok("C:\\dir\\apple")
    );
    assert_eq!(expand_word("`$A", '`', &look).as_deref(), Ok("$A"));
    assert_eq!(
        expand_word("\"`\"`$ \\\"", '`', &look).as_deref(),
        Ok("\"$ \\")
    );
}

#[test]
fn expand_errors() {
    assert_eq!(x("${A", &[]), Err("missing '}' in substitution ${A".into()));
    assert_eq!(
        x("${A:-x", &[]),
        Err("missing '}' in variable substitution".into())
    );
    assert_eq!(
        x("${}", &[]),
        Err("bad substitution: missing variable name after ${".into())
    );
    assert_eq!(
        x("${A#x}", &[]),
        Err("unsupported modifier \"#\" in substitution ${A...}".into())
    );
    assert_eq!(
        x("${A:=x}", &[]),
        Err("unsupported modifier \":=\" in substitution ${A...}".into())
    );
    assert_eq!(
        x("${A:?must be set}", &[("A", "")]),
        Err("A: must be set".into())
    );
    assert_eq!(x("${A?}", &[]), Err("A: is not allowed to be unset".into()));
    assert_eq!(
        x("\"abc", &[]),
        Err("unexpected end of input: missing closing double quote".into())
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
    assert_eq!(
        expand_words("80  $P\t\"x y\" 'z w'", '\\', &look),
        Ok(s(&["80", "80", "443", "x y", "z w"]))
    );
    assert_eq!(
        expand_words("\"$Q\" pre$Q", '\\', &look),
        Ok(s(&["a b", "prea", "b"]))
    );
    assert_eq!(expand_words("a\\ b  ", '\\', &look), Ok(s(&["a b"])));
    assert_eq!(expand_words("   ", '\\', &look), Ok(vec![]));
    assert_eq!(expand_words("$NOPE", '\\', &look), Ok(vec![]));
}
