//! Malformed Dockerfiles: the line and the message of each error.

use super::*;

#[test]
fn error_display_format() {
    let e = match parse("FROM a\nRUN x\n\n\n\n\nCOPY onlyone\n", "Dockerfile") {
        Err(e) => e,
        Ok(d) => panic!("{d:?}"),
    };
    assert_eq!(
        e.to_string(),
        "Dockerfile:7: COPY requires at least two arguments, got 1"
    );
    assert_eq!(e.file, "Dockerfile");
}

#[test]
fn malformed_unknown_instruction() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\n\nCOPPY a b\n", 3, "unknown instruction: COPPY (did you mean COPY?)"),
        ("FROM a\nRUN x \\\n  y\nfrobnicate\n", 4, "unknown instruction: FROBNICATE"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_unknown_flags() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nCOPY --frm=x a b\n", 2, "unknown flag for COPY: --frm"),
        ("FROM a\nADD --from=x a b\n", 2, "unknown flag for ADD: --from"),
        ("FROM --plat=x a\n", 1, "unknown flag for FROM: --plat"),
        ("FROM a\nRUN --mnt=type=cache,target=/x make\n", 2, "unknown flag for RUN: --mnt"),
        ("FROM a\nCMD --doit [\"a\"]\n", 2, "unknown flag for CMD: --doit"),
        ("FROM a\nHEALTHCHECK --every=5s CMD x\n", 2, "unknown flag for HEALTHCHECK: --every"),
    ];
    assert_errs(&cases);
}

#[test]
fn errors_do_not_echo_what_is_not_a_dockerfile() {
    // /proc/self/environ, /etc/passwd, a token: no keyword, so nothing echoed.
    for secret in [
        "PATH=/usr/bin\0DOCKLESS_WEBHOOK_SECRET=hunter2\0",
        "root:x:0:0:root:/root:/bin/bash\n",
        "ghp_0123456789abcdef\n",
    ] {
        let (line, m) = err(secret);
        assert_eq!(line, 1);
        assert_eq!(
            m,
            "unknown instruction: the line does not start with a Dockerfile keyword"
        );
    }
    assert_err(
        &format!("{}\n", "A".repeat(100)),
        1,
        &format!("unknown instruction: {}…", "A".repeat(20)),
    );
    assert_err(
        "FROM a\nONBUILD x=1\n",
        2,
        "unknown instruction in ONBUILD trigger: the line does not start with a Dockerfile keyword",
    );
    // Other quoted values are cut at 40 characters.
    let long = "x".repeat(1000);
    let (_, m) = err(&format!("FROM a\nCOPY --{long} a b\n"));
    assert_eq!(m, format!("unknown flag for COPY: --{}…", "x".repeat(40)));
    let (_, m) = err(&format!("FROM a\nHEALTHCHECK --interval={long} CMD x\n"));
    assert!(m.len() < 120, "{m}");
    let (_, m) = err(&format!("FROM a AS 9{long}\n"));
    assert!(m.len() < 200, "{m}");
}

#[test]
fn malformed_flag_values() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nCOPY --from a b\n", 2, "COPY flag --from requires a value (--from=...)"),
        ("FROM a\nCOPY --from= a b\n", 2, "COPY flag --from requires a value (--from=...)"),
        ("FROM a\nCOPY --link=maybe a b\n", 2, "COPY flag --link expects true or false, got \"maybe\""),
        ("FROM a\nCOPY --from=x --from=y a b\n", 2, "duplicate flag for COPY: --from"),
        ("FROM --platform a\n", 1, "FROM flag --platform requires a value (--platform=...)"),
        ("FROM a\nCOPY --checksum=sha256:abc https://x/y /y\n", 2, "unknown flag for COPY: --checksum"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_before_from() {
    #[rustfmt::skip]
    let cases = [
        ("CMD [\"a\"]\nFROM a\n", 1, "CMD cannot be used before the first FROM (only ARG can)"),
        ("ARG X\n\nRUN echo\n", 3, "RUN cannot be used before the first FROM (only ARG can)"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_no_stages() {
    #[rustfmt::skip]
    let cases = [
        ("", 1, "no FROM instruction: a Dockerfile needs at least one build stage"),
        ("# only\n# comments\n", 1, "no FROM instruction: a Dockerfile needs at least one build stage"),
    ];
    assert_errs(&cases);
    assert_err_contains("ARG A=1\nARG B\n", 3, "no FROM instruction");
}

#[test]
fn malformed_directives() {
    #[rustfmt::skip]
    let cases = [
        ("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive can be used"),
        ("# syntax=a\n# SYNTAX=b\nFROM a\n", 2, "only one syntax parser directive can be used"),
        ("# escape=x\nFROM a\n", 1, "invalid escape token \"x\": must be \\ or `"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_copy_arity() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nRUN x\n\n\n\n\nCOPY onlyone\n", 7, "COPY requires at least two arguments, got 1"),
        ("FROM a\nADD\n", 2, "ADD requires at least two arguments, got 0"),
        ("FROM a\nCOPY [\"one\"]\n", 2, "COPY requires at least two arguments, got 1"),
        ("FROM a\nCOPY [\"a\", 1]\n", 2, "COPY: a JSON array argument must contain only strings"),
        ("FROM a\nCOPY <<EOF\nx\nEOF\n", 2, "COPY requires at least two arguments, got 1"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_env_label_arg() {
    #[rustfmt::skip]
    let cases = [
        ("FROM busybox\n\nENV PATH\n", 3, "ENV PATH has no value: use ENV PATH=value or ENV PATH value"),
        ("FROM a\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM a\nENV =x\n", 2, "ENV names can not be empty in \"=x\""),
        ("FROM a\nLABEL a=b c\n", 2, "LABEL: can't find = in \"c\"; each argument must be of the form name=value"),
        ("FROM a\nLABEL lonely\n", 2, "LABEL lonely has no value: use LABEL lonely=value or LABEL lonely value"),
        ("FROM a\nARG\n", 2, "ARG requires at least one argument"),
        ("FROM a\nARG =x\n", 2, "ARG name can not be empty in \"=x\""),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_from() {
    #[rustfmt::skip]
    let cases = [
        ("FROM\n", 1, "FROM requires an image name"),
        ("FROM a b\n", 1, "FROM requires either one argument (image) or three (image AS name), got 2"),
        ("FROM a AS b c\n", 1, "FROM requires either one argument (image) or three (image AS name), got 4"),
        ("FROM a IS b\n", 1, "FROM expects AS before the stage name, got \"IS\""),
    ];
    assert_errs(&cases);
    assert_err_contains("FROM a AS 1st\n", 1, "invalid stage name \"1st\"");
    assert_err_contains("FROM a AS my/stage\n", 1, "invalid stage name \"my/stage\"");
    assert_err(
        "FROM a AS b\nFROM c AS B\n",
        2,
        "duplicate stage name \"b\", first defined on line 1",
    );
}

#[test]
fn malformed_commands() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nCMD [ \"echo\", [ \"nested json\" ] ]\n", 2, "CMD: a JSON array argument must contain only strings"),
        ("FROM a\nRUN\n", 2, "RUN requires a command"),
        ("FROM a\nENTRYPOINT\n", 2, "ENTRYPOINT requires a command"),
        ("FROM a\nSHELL /bin/sh -c\n", 2, "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"),
        ("FROM a\nSHELL []\n", 2, "SHELL requires at least one argument"),
        ("FROM a\nSHELL [\"sh\", null]\n", 2, "SHELL: a JSON array argument must contain only strings"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_simple_instructions() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nEXPOSE\n", 2, "EXPOSE requires at least one argument"),
        ("FROM a\nUSER\n", 2, "USER requires exactly one argument"),
        ("FROM a\nSTOPSIGNAL\n", 2, "STOPSIGNAL requires exactly one argument"),
        ("FROM a\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
        ("FROM a\nVOLUME\n", 2, "VOLUME requires at least one argument"),
        ("FROM a\nVOLUME [\"/a\", \"  \"]\n", 2, "VOLUME specified can not be an empty string"),
        ("FROM a\nMAINTAINER\n", 2, "MAINTAINER requires an argument"),
        ("FROM a\nENV --x=1 A=b\n", 2, "unknown flag for ENV: --x"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_healthcheck() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nHEALTHCHECK\n", 2, "HEALTHCHECK requires NONE or CMD followed by a command"),
        ("FROM a\nHEALTHCHECK CMD\n", 2, "missing command after HEALTHCHECK CMD"),
        ("FROM a\nHEALTHCHECK CMD []\n", 2, "missing command after HEALTHCHECK CMD"),
        ("FROM a\nHEALTHCHECK NONE x\n", 2, "HEALTHCHECK NONE takes no arguments"),
        ("FROM a\nHEALTHCHECK CONNECT TCP 7000\n", 2, "unknown type \"CONNECT\" in HEALTHCHECK (expected CMD or NONE)"),
        ("FROM a\nHEALTHCHECK --interval=10x CMD x\n", 2, "HEALTHCHECK --interval: unknown unit \"x\" in duration \"10x\""),
        ("FROM a\nHEALTHCHECK --timeout=10 CMD x\n", 2, "HEALTHCHECK --timeout: missing unit in duration \"10\" (use e.g. 30s, 1m30s, 500ms)"),
        ("FROM a\nHEALTHCHECK --interval=500us CMD x\n", 2, "HEALTHCHECK --interval cannot be less than 1ms, got \"500us\""),
        ("FROM a\nHEALTHCHECK --start-period=-5s CMD x\n", 2, "HEALTHCHECK --start-period: duration \"-5s\" cannot be negative"),
        ("FROM a\nHEALTHCHECK --retries=-1 CMD x\n", 2, "HEALTHCHECK --retries cannot be negative, got -1"),
        ("FROM a\nHEALTHCHECK --retries=abc CMD x\n", 2, "HEALTHCHECK --retries expects a whole number, got \"abc\""),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_onbuild() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nONBUILD\n", 2, "ONBUILD requires a trigger instruction"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "chaining ONBUILD via ONBUILD ONBUILD is not allowed"),
        ("FROM a\nONBUILD from b\n", 2, "FROM is not allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD MAINTAINER me\n", 2, "MAINTAINER is not allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD RUUN x\n", 2, "unknown instruction in ONBUILD trigger: RUUN (did you mean RUN?)"),
        ("FROM a\nONBUILD COPY a\n", 2, "invalid ONBUILD trigger: COPY requires at least two arguments, got 1"),
    ];
    assert_errs(&cases);
}

#[test]
fn malformed_heredoc() {
    assert_err(
        "FROM a\nRUN true\nCOPY <<EOF /x\nline\nEOFX\n",
        3,
        "unterminated heredoc <<EOF: no line equal to \"EOF\" before end of file",
    );
    // The second heredoc is the one left open; the error names the instruction's line.
    assert_err_contains(
        "FROM a\n\nRUN <<A <<B\na\nA\nb\n",
        3,
        "unterminated heredoc <<B",
    );
}

#[test]
fn error_lines_after_multiline_instructions() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nRUN a \\\n  b \\\n  # c\n\n  d\nCOPY x\n", 7, "COPY requires at least two arguments, got 1"),
        ("FROM a\nCOPY <<EOF /x\n1\n2\nEOF\nBAD\n", 6, "unknown instruction: BAD"),
    ];
    assert_errs(&cases);
    // A blank line does not end a continuation, so COPY joins the RUN.
    assert_eq!(
        one("RUN x \\\n\nCOPY\n"),
        InstructionKind::Run(RunArgs::plain(Command::Shell("x COPY".into())))
    );
}

/// Each Dockerfile fails on the given line with exactly the given message.
fn assert_errs(cases: &[(&str, usize, &str)]) {
    for &(text, line, message) in cases {
        assert_err(text, line, message);
    }
}
