//! The exec form: JSON arrays of strings, and shell form when it is not one.

use super::*;

#[test]
fn exec_and_shell_forms() {
    assert_eq!(
        one("CMD [\"a\",\"b\"]"),
        InstructionKind::Cmd(Command::Exec(s(&["a", "b"])))
    );
    assert_eq!(
        one("CMD\t[\t\"a\",\t\"b\"\t]\t"),
        InstructionKind::Cmd(Command::Exec(s(&["a", "b"])))
    );
    assert_eq!(one("CMD []"), InstructionKind::Cmd(Command::Exec(vec![])));
    assert_eq!(
        one("ENTRYPOINT [\"/bin/app\", \"--flag\"]"),
        InstructionKind::Entrypoint(Command::Exec(s(&["/bin/app", "--flag"])))
    );
    assert_eq!(
        one("ENTRYPOINT exec app"),
        InstructionKind::Entrypoint(Command::Shell("exec app".into()))
    );
    assert_eq!(
        one("RUN [\"ls\", \"-la\"]"),
        InstructionKind::Run(Command::Exec(s(&["ls", "-la"])))
    );
    assert_eq!(
        one("RUN echo 'a b' | wc -c"),
        InstructionKind::Run(Command::Shell("echo 'a b' | wc -c".into()))
    );
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
