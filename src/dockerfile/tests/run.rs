//! RUN's flags: mounts, network and security, also in ONBUILD triggers.

use super::*;

fn run_args(body: &str) -> RunArgs {
    match one(body) {
        InstructionKind::Run(args) => args,
        other => panic!("not RUN: {other:?}"),
    }
}

#[test]
fn mounts_parse_with_every_key_and_repeat() {
    let r = run_args(
        "RUN --mount=type=cache,target=/root/.cache,id=pip,sharing=locked,mode=0755,uid=0,gid=$GID \
         --mount=type=secret,id=ca,required --mount=target=/src,from=build,source=/out,rw \
         --network=none --security=sandbox pip install .\n",
    );
    assert_eq!(r.command, Command::Shell("pip install .".into()));
    assert_eq!(r.network, RunNetwork::None);
    assert_eq!(r.mounts.len(), 3);
    let cache = &r.mounts[0];
    assert_eq!(cache.kind, MountType::Cache);
    assert_eq!(cache.target.as_deref(), Some("/root/.cache"));
    assert_eq!(cache.id.as_deref(), Some("pip"));
    assert_eq!(cache.sharing, Some(CacheSharing::Locked));
    assert_eq!(cache.mode.as_deref(), Some("0755"));
    assert_eq!(
        cache.gid.as_deref(),
        Some("$GID"),
        "expanded when the step runs"
    );
    let secret = &r.mounts[1];
    assert_eq!(
        (secret.kind, secret.required),
        (MountType::Secret, Some(true))
    );
    let bind = &r.mounts[2];
    assert_eq!(bind.kind, MountType::Bind, "bind is the default type");
    assert_eq!(bind.from.as_deref(), Some("build"));
    assert_eq!(bind.readonly, Some(false));
    assert_eq!(bind.spec, "target=/src,from=build,source=/out,rw");
}

#[test]
fn a_quoted_mount_field_may_hold_a_comma() {
    let r = run_args("RUN --mount='type=tmpfs,\"target=/a,b\",size=64m' true\n");
    assert_eq!(r.mounts[0].target.as_deref(), Some("/a,b"));
    assert_eq!(r.mounts[0].size.as_deref(), Some("64m"));
}

#[test]
fn run_flags_parse_after_onbuild_too() {
    assert_eq!(
        one("ONBUILD RUN --mount=type=cache,target=/c --network=host make\n"),
        InstructionKind::Onbuild("RUN --mount=type=cache,target=/c --network=host make".into())
    );
    assert_err_contains(
        "FROM a\nONBUILD RUN --mount=type=nope,target=/c make\n",
        2,
        "invalid ONBUILD trigger: RUN --mount: unknown type \"nope\"",
    );
}

#[test]
fn malformed_run_flags_are_named() {
    #[rustfmt::skip]
    let cases = [
        ("FROM a\nRUN --security=insecure make\n", 2, "RUN --security=insecure is not supported"),
        ("FROM a\nRUN --security=other make\n", 2, "RUN --security=other: expected sandbox"),
        ("FROM a\nRUN --network=bridge make\n", 2, "RUN --network=bridge: expected default, none or host"),
        ("FROM a\nRUN --network=none --network=host make\n", 2, "duplicate flag for RUN: --network"),
        ("FROM a\nRUN --mount make\n", 2, "RUN flag --mount requires a value"),
        ("FROM a\nRUN --mount=type=cache make\n", 2, "RUN --mount type=cache needs a target"),
        ("FROM a\nRUN --mount=type=cache,target=/c,sharing=all make\n", 2, "sharing must be shared, private or locked"),
        ("FROM a\nRUN --mount=type=cache,target=/c,mode=999 make\n", 2, "mode must be an octal mode"),
        ("FROM a\nRUN --mount=type=bind,target=/c,uid=0 make\n", 2, "unexpected key \"uid\" for type bind"),
        ("FROM a\nRUN --mount=type=cache,target=/c,required make\n", 2, "unexpected key \"required\" for type cache"),
        ("FROM a\nRUN --mount=type=cache,target=/c,colour=red make\n", 2, "unknown key \"colour\""),
        ("FROM a\nRUN --mount=type=cache,target=/c,ro=maybe make\n", 2, "ro expects true or false"),
        ("FROM a\nRUN --mount=type=secret make\n", 2, "type=secret needs an id"),
        ("FROM a\nRUN --mount='type=tmpfs,\"target=/c' make\n", 2, "no closing quote"),
    ];
    for (text, line, needle) in cases {
        assert_err_contains(text, line, needle);
    }
}
