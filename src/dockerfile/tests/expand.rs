//! Variable expansion and word splitting, checked against BuildKit's shell
//! lexer (`frontend/dockerfile/shell/lex.go`; cases in the style of its
//! `envVarTest` and `lex_test.go` `TestProcessWithMatches`).

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
        ("${aaa:-bbb {foo}", Ok("bbb {foo")),
        ("${aaa}}", Ok("}")),
        ("${A:+${A}:}xx", Ok("apple:xx")),
        ("${B:-\\${A}z}xx", Ok("${Az}xx")),
        ("안녕$K", Ok("안녕한국어")),
        ("$K2", Ok("")),
    ];
    assert_expands(
        &[("A", "apple"), ("E", ""), ("S", "a b"), ("K", "한국어")],
        &cases,
    );
}

/// Positional and special parameters are names no variable has (BuildKit's
/// `processName`/`isSpecialParam`), so `$$` and `$@` expand to "".
#[test]
fn positional_and_special_parameters_expand_to_nothing() {
    #[rustfmt::skip]
    let cases = [
        ("$1", Ok("")), ("${1:-bbb}", Ok("bbb")), ("$999aaa", Ok("aaa")),
        ("${001:-bbb}aaa", Ok("bbbaaa")), ("$@", Ok("")), ("$@@@", Ok("@@")),
        ("${@:-bbb}aaa", Ok("bbbaaa")), ("$$", Ok("")), ("${$:+bbb}", Ok("")),
        ("${#:-bbb}", Ok("bbb")), ("$-x$/", Ok("x$/")), ("$!$*$?$0", Ok("")),
        ("$.", Ok("$.")), ("he$1x", Ok("hex")),
    ];
    assert_expands(&[("A", "apple")], &cases);
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
        ("it's", Err("unexpected end of statement while looking for matching single-quote")),
        ("'a'\"b\"c", Ok("abc")),
        ("cost: $ 5 $", Ok("cost: $ 5 $")),
        ("'hello\\'", Ok("hello\\")),
        ("\"hello\\\"", Err("unexpected end of statement while looking for matching double-quote")),
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
        ("${A", Err("syntax error: missing '}'")),
        ("${A:-x", Err("syntax error: missing '}'")),
        ("${", Err("syntax error: missing '}'")),
        ("${}", Err("syntax error: bad substitution")),
        ("${{aaa}", Err("syntax error: bad substitution")),
        ("${:-bbb}", Err("syntax error: bad substitution")),
        ("${.}", Err("unsupported modifier (.) in substitution")),
        ("${A:=x}", Err("unsupported modifier (:=) in substitution")),
        ("${A=}", Err("unsupported modifier (=) in substitution")),
        ("${A:YYY}", Err("unsupported modifier (:Y) in substitution")),
        ("${A?}", Err("A: is not allowed to be unset")),
        ("${A:?}", Err("A: is not allowed to be unset")),
        ("\"abc", Err("unexpected end of statement while looking for matching double-quote")),
    ];
    assert_expands(&[], &cases);
    assert_expands(
        &[("A", "")],
        &[
            ("${A:?must be set}", Err("A: must be set")),
            ("${A:?}", Err("A: is not allowed to be empty")),
            ("${A?}", Ok("")),
        ],
    );
    let deep = format!("{}x{}", "${A:-".repeat(200), "}".repeat(200));
    assert_eq!(
        x(&deep, &[]),
        Err("variable substitution nested too deeply".into())
    );
}

/// `#`, `##`, `%`, `%%`, `/` and `//`: BuildKit's `lex_test.go`
/// `TestProcessWithMatches` cases.
#[test]
fn pattern_modifiers() {
    let one = |word: &str, vars: &[(&str, &str)], expected: Result<&str, &str>| {
        assert_eq!(
            x(word, vars).as_deref().map_err(String::as_str),
            expected,
            "{word:?} with {vars:?}"
        );
    };
    let foo = [("FOO", "xxyy")];
    for (word, expected) in [
        ("${FOO#*x*y}", "y"),
        ("${FOO#*}", "xxyy"),
        ("${FOO##*x}", "yy"),
        ("${FOO%y*}", "xxy"),
        ("${FOO%%y*}", "xx"),
        ("${FOO#}", "xxyy"),
        ("${FOO##}", "xxyy"),
        ("${FOO%}", "xxyy"),
        ("${ABC:-.}${FOO%x}${ABC:-.}", ".xxyy."),
        ("${FOO///}", "xxyy"),
        ("${NOPE#x}", ""),
        ("${NOPE///}", ""),
    ] {
        one(word, &foo, Ok(expected));
    }
    one("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "x")], Ok("xyy"));
    one("${FOO#$BAR}", &[("FOO", "xxyy"), ("BAR", "")], Ok("xxyy"));
    one(
        "${FOO/$BAR/ww}",
        &[("FOO", "xxyy"), ("BAR", "")],
        Ok("wwxxyy"),
    );
    one("${FOO#?\\?}", &[("FOO", "???y")], Ok("?y"));
    one("${FOO%%\\**}", &[("FOO", "xx**")], Ok("xx"));
    one("${FOO%%\\**\\*}", &[("FOO", "a***yy*")], Ok("a"));
    one(
        "${FOO#()[]{\\}^$.\\*\\?|\\\\}",
        &[("FOO", "()[]{}^$.*?|\\x")],
        Ok("x"),
    );
    one(
        "${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}",
        &[("FOO", "/foo*/*/*.txt"), ("NEEDLE", "\\*/")],
        Ok("/foo.*/*.txt - /foo..*.txt"),
    );
    one(
        "${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}",
        &[("FOO", "/tmp/tmp/bar.txt"), ("NEEDLE", "/tmp")],
        Ok("/tmp/bar.txt - /bar.txt"),
    );
    one(
        "${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}",
        &[
            ("FOO", "/a/foo/b/c.txt"),
            ("NEEDLE", "/?/"),
            ("REPLACEMENT", "/"),
        ],
        Ok("/foo/b/c.txt - /foo/c.txt"),
    );
    one(
        "${FOO//\\//\\/}",
        &[("FOO", "/tmp/foo.txt")],
        Ok("\\/tmp\\/foo.txt"),
    );
    for (word, expected) in [
        ("${FOO:#}", "unsupported modifier (:#) in substitution"),
        ("${FOO:##}", "unsupported modifier (:#) in substitution"),
        ("${FOO:%}", "unsupported modifier (:%) in substitution"),
        ("${FOO:%%}", "unsupported modifier (:%) in substitution"),
        ("${FOO:/a/b}", "unsupported modifier (:/) in substitution"),
        ("${FOO//ww}", "syntax error: missing '/' in ${}"),
        ("${FOO//}", "syntax error: missing '/' in ${}"),
        ("${FOO/a}", "syntax error: missing '/' in ${}"),
        (
            "${FOO#\\a}",
            "invalid pattern (\\a) in substitution: invalid escape '\\a'",
        ),
    ] {
        one(word, &foo, Err(expected));
    }
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

/// Heredoc bodies expand once, with backslash escapes and quotes as plain
/// text (BuildKit `instructions/commands.go` `SourcesAndDest.ExpandRaw`,
/// test `testCopyHeredocSpecialSymbols`).
#[test]
fn heredoc_bodies_expand_with_backslash_and_plain_quotes() {
    let look = env(&[("X", "val")]);
    for (body, expected) in [
        ("a\\$X `$X \\\\ \\q\n", "a$X `val \\ q\n"),
        ("echo \\\"hi\\\" '$X'\n", "echo \"hi\" 'val'\n"),
        ("\"quotes in file\"\n", "\"quotes in file\"\n"),
        // An escaped newline is a newline: `\` alone on a line leaves it empty.
        ("line\\\nnext\n", "line\nnext\n"),
        ("\\\n", "\n"),
        ("it's ${X}\n", "it's val\n"),
    ] {
        assert_eq!(
            expand_heredoc(body, &look).as_deref(),
            Ok(expected),
            "{body:?}"
        );
    }
}
