//! Structure, stages, directives, continuations, comments and heredocs.

use super::*;

#[test]
fn multi_stage_with_aliases_platform_and_global_args() {
    let d = ok(
            "ARG BASE=alpine:3.19\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN make\n\nfrom scratch\nCOPY --from=build /out /\n",
        );
    assert_eq!(d.escape, '\\');
    assert_eq!(d.syntax, None);
    assert_eq!(
        d.global_args,
        vec![
            ArgDecl {
                name: "BASE".into(),
                default: Some("alpine:3.19".into()),
                line: 1
            },
            ArgDecl {
                name: "V".into(),
                default: None,
                line: 2
            },
        ]
    );
    assert_eq!(d.stages.len(), 2);
    let first = &d.stages[0];
    assert_eq!(first.index, 0);
    assert_eq!(
        first.from,
        From {
            image: "${BASE}".into(),
            platform: Some("$BUILDPLATFORM".into()),
            alias: Some("build".into()),
            line: 3,
        }
    );
    assert_eq!(first.instructions.len(), 1);
    assert_eq!(d.stages[1].index, 1);
    assert_eq!(d.stages[1].from.image, "scratch");
    assert_eq!(d.stages[1].from.alias, None);
    let c = copy_args(d.stages[1].instructions[0].kind.clone());
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(d.stages[1].instructions[0].line, 7);
}

#[test]
fn directives_are_recorded() {
    let d = ok(
        "# syntax=docker/dockerfile:1\n# CHECK = skip=all\n#escape=`\nFROM a\nRUN echo `\n  hi\n",
    );
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.check.as_deref(), Some("skip=all"));
    assert_eq!(d.escape, '`');
    assert_eq!(
        d.stages[0].instructions[0].kind,
        InstructionKind::Run(RunArgs::plain(Command::Shell("echo   hi".into())))
    );
}

#[test]
fn directive_after_comment_or_blank_line_is_a_comment() {
    let d = ok("# hello\n# escape=`\nFROM a\nENV P \\\n\\go\n");
    assert_eq!(d.escape, '\\');
    let d = ok("\n# escape=`\nFROM a\n");
    assert_eq!(d.escape, '\\');
    // An unknown directive ends the header too.
    let d = ok("# foo=bar\n# escape=`\nFROM a\n");
    assert_eq!(d.escape, '\\');
}

#[test]
fn directive_with_leading_whitespace_counts() {
    let d = ok("  #  escape  =  `  \nFROM a\n");
    assert_eq!(d.escape, '`');
}

#[test]
fn backtick_escape_makes_backslash_ordinary() {
    let d = ok("# escape=`\nFROM a\nENV GOPATH `\n\\go\nWORKDIR C:\\dir\\\nRUN dir\n");
    let k: Vec<_> = d.stages[0]
        .instructions
        .iter()
        .map(|i| i.kind.clone())
        .collect();
    assert_eq!(
        k[0],
        InstructionKind::Env(vec![("GOPATH".into(), "\\go".into())])
    );
    assert_eq!(k[1], InstructionKind::Workdir("C:\\dir\\".into()));
    assert_eq!(
        k[2],
        InstructionKind::Run(RunArgs::plain(Command::Shell("dir".into())))
    );
}

#[test]
fn instruction_names_are_case_insensitive() {
    let k = kinds("run echo\nCoPy a b\nworkdir /x\n");
    assert_eq!(k.len(), 3);
    let i = instrs("run echo hi\n");
    assert_eq!(i[0].original, "RUN echo hi");
}

#[test]
fn crlf_and_bom_are_handled() {
    let d = ok("\u{feff}# escape=`\r\nFROM a\r\nRUN echo `\r\n  hi\r\nCMD [\"x\"]\r\n");
    assert_eq!(d.escape, '`');
    let k: Vec<_> = d.stages[0]
        .instructions
        .iter()
        .map(|i| i.kind.clone())
        .collect();
    assert_eq!(
        k[0],
        InstructionKind::Run(RunArgs::plain(Command::Shell("echo   hi".into())))
    );
    assert_eq!(k[1], InstructionKind::Cmd(Command::Exec(s(&["x"]))));
}

#[test]
fn continuation_skips_comments_and_blank_lines() {
    let i = instrs(
            "RUN apt-get update \\\n# a comment\n\n    # indented comment\n  && apt-get install -y x \\\n\n  && echo done\nCMD x\n",
        );
    assert_eq!(i.len(), 2);
    assert_eq!(i[0].line, 2);
    assert_eq!(
        i[0].kind,
        InstructionKind::Run(RunArgs::plain(Command::Shell(
            "apt-get update   && apt-get install -y x   && echo done".into()
        )))
    );
    assert_eq!(
        i[0].original,
        "RUN apt-get update   && apt-get install -y x   && echo done"
    );
    assert_eq!(i[1].line, 9);
}

#[test]
fn continuation_with_trailing_whitespace_after_escape() {
    let k = one("RUN echo hello \\  \t\nworld\n");
    assert_eq!(
        k,
        InstructionKind::Run(RunArgs::plain(Command::Shell("echo hello world".into())))
    );
}

#[test]
fn continuation_at_eof_is_fine() {
    let k = one("RUN something \\");
    assert_eq!(
        k,
        InstructionKind::Run(RunArgs::plain(Command::Shell("something".into())))
    );
    let k = one("RUN something \\\n\n# trailing comment\n");
    assert_eq!(
        k,
        InstructionKind::Run(RunArgs::plain(Command::Shell("something".into())))
    );
}

#[test]
fn escaped_escape_at_end_is_not_a_continuation() {
    let k = kinds("ENV C trailing\\\\\nENV D next\n");
    assert_eq!(
        k[0],
        InstructionKind::Env(vec![("C".into(), "trailing\\\\".into())])
    );
    assert_eq!(
        k[1],
        InstructionKind::Env(vec![("D".into(), "next".into())])
    );
}

#[test]
fn lone_escape_lines_inside_continuation() {
    let k = one("RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n");
    assert_eq!(
        k,
        InstructionKind::Run(RunArgs::plain(Command::Shell(
            "echo hi   world  goodnight".into()
        )))
    );
}

#[test]
fn comment_lines_are_dropped_and_hash_inside_args_kept() {
    let k = kinds("# comment\n   # indented\nRUN echo # not a comment\n");
    assert_eq!(
        k,
        vec![InstructionKind::Run(RunArgs::plain(Command::Shell(
            "echo # not a comment".into()
        )))]
    );
}

#[test]
fn copy_heredoc() {
    let i = instrs("COPY <<EOF /etc/app.conf\nkey = $VALUE\nsecond line\nEOF\nRUN next\n");
    assert_eq!(i.len(), 2);
    let c = copy_args(i[0].kind.clone());
    assert_eq!(c.sources, s(&["EOF"]));
    assert_eq!(c.dest, "/etc/app.conf");
    let expected = Heredoc {
        name: "EOF".into(),
        content: "key = $VALUE\nsecond line\n".into(),
        expand: true,
        chomp_tabs: false,
    };
    assert_eq!(c.heredocs, vec![expected.clone()]);
    assert_eq!(i[0].heredocs, vec![expected]);
    assert_eq!(i[0].original, "COPY <<EOF /etc/app.conf");
    assert_eq!(i[1].line, 6);
}

#[test]
fn run_heredoc_quoted_and_chomped() {
    let i = instrs("RUN <<-\"SCRIPT\" bash\n\t\techo $HOME\n\tdone\n\tSCRIPT\nUSER x\n");
    assert_eq!(
        i[0].kind,
        InstructionKind::Run(RunArgs::plain(Command::Shell("<<-\"SCRIPT\" bash".into())))
    );
    assert_eq!(
        i[0].heredocs,
        vec![Heredoc {
            name: "SCRIPT".into(),
            content: "echo $HOME\ndone\n".into(),
            expand: false,
            chomp_tabs: true,
        }]
    );
    assert_eq!(i[1].kind, InstructionKind::User("x".into()));
    let i = instrs("RUN cat <<'EOF' > /f\n  keep indent\nEOF\n");
    assert_eq!(i[0].heredocs[0].content, "  keep indent\n");
    assert!(!i[0].heredocs[0].expand);
    assert!(!i[0].heredocs[0].chomp_tabs);
}

#[test]
fn several_heredocs_in_one_instruction() {
    let i = instrs("COPY <<A <<B /dst/\na-content\nA\nb1\nb2\nB\nCMD [\"x\"]\n");
    let c = copy_args(i[0].kind.clone());
    assert_eq!(c.sources, s(&["A", "B"]));
    assert_eq!(c.heredocs.len(), 2);
    assert_eq!(c.heredocs[0].content, "a-content\n");
    assert_eq!(c.heredocs[1].content, "b1\nb2\n");
    assert_eq!(i[1].line, 8);
}

#[test]
fn heredoc_markers_elsewhere_are_not_heredocs() {
    let i = instrs(
        "RUN echo \"<<EOF\" a<<b 'x<<y'\nRUN [\"sh\", \"-c\", \"cat <<EOF\"]\nENV X <<EOF\n",
    );
    assert_eq!(i.len(), 3);
    assert!(i.iter().all(|i| i.heredocs.is_empty()));
}

#[test]
fn empty_heredoc() {
    let i = instrs("COPY <<EOF /empty\nEOF\n");
    assert_eq!(copy_args(i[0].kind.clone()).heredocs[0].content, "");
}
