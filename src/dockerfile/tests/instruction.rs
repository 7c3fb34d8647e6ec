//! Each instruction's arguments and flags.

use super::*;

#[test]
fn env_legacy_form_keeps_rest_of_line() {
    assert_eq!(
        one("ENV PATH /usr/local/bin:$PATH  and more"),
        InstructionKind::Env(vec![(
            "PATH".into(),
            "/usr/local/bin:$PATH  and more".into()
        )])
    );
    assert_eq!(
        one("ENV\tA\t\"quoted value\""),
        InstructionKind::Env(vec![("A".into(), "\"quoted value\"".into())])
    );
}

#[test]
fn env_key_value_form_keeps_quotes_raw() {
    assert_eq!(
        one("ENV k1=v1 k2=\"v 2\" k3=v\\ 3 k4='a b' k5="),
        InstructionKind::Env(vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "\"v 2\"".into()),
            ("k3".into(), "v\\ 3".into()),
            ("k4".into(), "'a b'".into()),
            ("k5".into(), "".into()),
        ])
    );
}

#[test]
fn env_quotes_and_escapes_inside_values() {
    assert_eq!(
        one("ENV name=\"a\\\"b\" other='a\\'b''"),
        InstructionKind::Env(vec![
            ("name".into(), "\"a\\\"b\"".into()),
            ("other".into(), "'a\\'b''".into()),
        ])
    );
    // Expansion later removes the quotes.
    assert_eq!(x("\"a\\\"b\"", &[]).as_deref(), Ok("a\"b"));
}

#[test]
fn env_multiline_with_continuations() {
    assert_eq!(
        one("ENV a=1 \\\n    b=\"two \\\n       lines\" \\\n    c=3\n"),
        InstructionKind::Env(vec![
            ("a".into(), "1".into()),
            ("b".into(), "\"two        lines\"".into()),
            ("c".into(), "3".into()),
        ])
    );
}

#[test]
fn label_both_forms() {
    assert_eq!(
        one("LABEL a=b \"com.example.x\"=\"y z\""),
        InstructionKind::Label(vec![
            ("a".into(), "b".into()),
            ("\"com.example.x\"".into(), "\"y z\"".into()),
        ])
    );
    assert_eq!(
        one("LABEL maintainer Jane Doe <jane@example.com>"),
        InstructionKind::Label(vec![(
            "maintainer".into(),
            "Jane Doe <jane@example.com>".into()
        )])
    );
}

#[test]
fn arg_forms() {
    let i = instrs("\nARG a\nARG b=c d=\"e f\" g\n");
    assert_eq!(
        i[0].kind,
        InstructionKind::Arg(vec![ArgDecl {
            name: "a".into(),
            default: None,
            line: 3
        }])
    );
    assert_eq!(
        i[1].kind,
        InstructionKind::Arg(vec![
            ArgDecl {
                name: "b".into(),
                default: Some("c".into()),
                line: 4
            },
            ArgDecl {
                name: "d".into(),
                default: Some("\"e f\"".into()),
                line: 4
            },
            ArgDecl {
                name: "g".into(),
                default: None,
                line: 4
            },
        ])
    );
}

#[test]
fn copy_plain_and_original() {
    let i = instrs("COPY app /app\n");
    assert_eq!(i[0].original, "COPY app /app");
    let c = copy_args(i[0].kind.clone());
    assert_eq!(c.sources, s(&["app"]));
    assert_eq!(c.dest, "/app");
    assert_eq!(
        (c.from, c.chown, c.chmod, c.link),
        (None, None, None, false)
    );
}

#[test]
fn copy_flags() {
    let c = copy_args(one(
        "COPY --from=builder --chown=1000:1000 --chmod=0755 --link a b /dst/",
    ));
    assert_eq!(c.sources, s(&["a", "b"]));
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("builder"));
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link);
    let c = copy_args(one("COPY --link=false --chown=\"app user\" a b"));
    assert!(!c.link);
    assert_eq!(c.chown.as_deref(), Some("app user"));
    assert_eq!(
        instrs("COPY --link=true a b")[0].original,
        "COPY --link=true a b"
    );
}

#[test]
fn double_dash_ends_flags() {
    let c = copy_args(one("COPY -- --weird-name /dst"));
    assert_eq!(c.sources, s(&["--weird-name"]));
    assert_eq!(c.dest, "/dst");
}

#[test]
fn copy_and_add_json_form() {
    let c = copy_args(one("COPY [\"test file\", \"/tmp/dir with space/\"]"));
    assert_eq!(c.sources, s(&["test file"]));
    assert_eq!(c.dest, "/tmp/dir with space/");
    let k = one("ADD --chown=a [ \"x\", \"y\", \"/z\" ]");
    match k {
        InstructionKind::Add(c) => {
            assert_eq!(c.sources, s(&["x", "y"]));
            assert_eq!(c.chown.as_deref(), Some("a"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn add_with_url_and_link() {
    let c = copy_args(one("ADD --link https://example.com/a.tgz?x=1&y=2 /tmp/"));
    assert_eq!(c.sources, s(&["https://example.com/a.tgz?x=1&y=2"]));
    assert!(c.link);
    let c = copy_args(one("ADD --checksum=$SUM https://example.com/a.tgz /tmp/"));
    assert_eq!(c.checksum.as_deref(), Some("$SUM"));
}

#[test]
fn shell_instruction() {
    assert_eq!(
        one("SHELL [\"powershell\", \"-command\"]"),
        InstructionKind::Shell(s(&["powershell", "-command"]))
    );
}

#[test]
fn expose_volume_user_workdir_stopsignal_maintainer() {
    use InstructionKind::*;
    #[rustfmt::skip]
    let cases = [
        ("EXPOSE 80 443/tcp\t53/udp", Expose(s(&["80", "443/tcp", "53/udp"]))),
        ("VOLUME /a /b", Volume(s(&["/a", "/b"]))),
        ("VOLUME [\"/a b\", \" /c \"]", Volume(s(&["/a b", "/c"]))),
        ("USER app:app", User("app:app".into())),
        // BuildKit's `parseString`: the whole rest is the one argument.
        ("USER a b", User("a b".into())),
        ("STOPSIGNAL SIGTERM foo", StopSignal("SIGTERM foo".into())),
        ("WORKDIR /path with spaces/$X", Workdir("/path with spaces/$X".into())),
        ("STOPSIGNAL SIGTERM", StopSignal("SIGTERM".into())),
        ("MAINTAINER Jane <j@example.com>", Maintainer("Jane <j@example.com>".into())),
    ];
    for (text, kind) in cases {
        assert_eq!(one(text), kind, "{text:?}");
    }
}

#[test]
fn healthcheck_forms() {
    let none = Healthcheck {
        test: s(&["NONE"]),
        interval: None,
        timeout: None,
        start_period: None,
        start_interval: None,
        retries: None,
    };
    assert_eq!(
        one("HEALTHCHECK none"),
        InstructionKind::Healthcheck(none.clone())
    );
    assert_eq!(
            one(
                "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0s --start-interval=2.5s --retries=3 \\\n  CMD curl -f http://localhost/ || exit 1"
            ),
            InstructionKind::Healthcheck(Healthcheck {
                test: s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
                interval: Some(Duration::from_secs(90)),
                timeout: Some(Duration::from_millis(500)),
                start_period: Some(Duration::ZERO),
                start_interval: Some(Duration::from_millis(2500)),
                retries: Some(3),
            })
        );
    assert_eq!(
        one("HEALTHCHECK cmd [\"/bin/check\", \"-q\"]"),
        InstructionKind::Healthcheck(Healthcheck {
            test: s(&["CMD", "/bin/check", "-q"]),
            ..none
        })
    );
}

#[test]
fn onbuild_trigger() {
    assert_eq!(
        one("ONBUILD RUN [\"echo\", \"x\"]"),
        InstructionKind::Onbuild("RUN [\"echo\", \"x\"]".into())
    );
    assert_eq!(
        one("onbuild copy . /app"),
        InstructionKind::Onbuild("copy . /app".into())
    );
    assert_eq!(
        instrs("ONBUILD copy . /app")[0].original,
        "ONBUILD copy . /app"
    );
}

#[test]
fn go_durations() {
    #[rustfmt::skip]
    let valid = [
        ("30s", Duration::from_secs(30)),
        ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
        ("1.5h", Duration::from_secs(5400)),
        (".5s", Duration::from_millis(500)),
        ("10µs", Duration::from_micros(10)),
        ("0", Duration::ZERO),
        ("+2s", Duration::from_secs(2)),
    ];
    for (text, duration) in valid {
        assert_eq!(parse_go_duration(text), Ok(duration), "{text:?}");
    }
    let invalid = [
        "",
        "s",
        "10",
        "10x",
        "-1s",
        "1..5s",
        "99999999999999999999999h",
        "3000000h",
    ];
    for text in invalid {
        assert!(parse_go_duration(text).is_err(), "{text:?}");
    }
}
