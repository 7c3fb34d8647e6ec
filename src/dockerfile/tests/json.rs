//! The exec form: JSON arrays of strings, and shell form when it is not one.

use super::*;

#[test]
fn exec_and_shell_forms() {
    use Command::{Exec, Shell};
    use InstructionKind::{Cmd, Entrypoint, Run};
    #[rustfmt::skip]
    let cases = [
        ("CMD [\"a\",\"b\"]", Cmd(Exec(s(&["a", "b"])))),
        ("CMD\t[\t\"a\",\t\"b\"\t]\t", Cmd(Exec(s(&["a", "b"])))),
        ("CMD []", Cmd(Exec(vec![]))),
        ("ENTRYPOINT [\"/bin/app\", \"--flag\"]", Entrypoint(Exec(s(&["/bin/app", "--flag"])))),
        ("ENTRYPOINT exec app", Entrypoint(Shell("exec app".into()))),
        ("RUN [\"ls\", \"-la\"]", Run(RunArgs::plain(Exec(s(&["ls", "-la"]))))),
        ("RUN echo 'a b' | wc -c", Run(RunArgs::plain(Shell("echo 'a b' | wc -c".into())))),
    ];
    for (text, kind) in cases {
        assert_eq!(one(text), kind, "{text:?}");
    }
}

#[test]
fn invalid_json_falls_back_to_shell_form() {
    for text in [
        "['single', 'quotes']",
        "[\"unterminated\"",
        "[\"no end quote]",
        "[\"a\",]",
        "[\"a\"] trailing",
        "'[\"in\", \"string\"]'",
    ] {
        assert_eq!(
            one(&format!("CMD {text}")),
            InstructionKind::Cmd(Command::Shell(text.into())),
            "{text}"
        );
    }
}

#[test]
fn json_string_escapes() {
    assert_eq!(
        one(r#"CMD ["\" \\ \/ \b \f \n \r \t \u0000", "\u00e9\u2603", "\ud83d\ude00", "\ud800x"]"#),
        InstructionKind::Cmd(Command::Exec(s(&[
            "\" \\ / \u{8} \u{c} \n \r \t \u{0}",
            "é☃",
            "😀",
            "\u{FFFD}x",
        ])))
    );
}

#[test]
fn deeply_nested_json_is_not_a_crash() {
    let deep = format!(
        "FROM a\nCMD {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let k = &ok(&deep).stages[0].instructions[0].kind;
    assert!(matches!(k, InstructionKind::Cmd(Command::Shell(_))));
    let many = format!("FROM a\nRUN {}\n", "ONBUILD ".repeat(10_000));
    assert!(parse(&many, "x").is_ok());
    let many = format!("FROM a\nONBUILD {}RUN x\n", "ONBUILD ".repeat(10_000));
    assert!(parse(&many, "x").is_err());
}
