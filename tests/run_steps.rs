//! RUN end to end, FROM a busybox base the tests build from Debian's
//! busybox-static and push to a real docker-registry: what RUN installs
//! runs under runc; a failing step names its line and leaves no image; the
//! step cache (a second build runs nothing; ENV, ARG, the command or an
//! earlier COPY run it again; a proxy variable does not); isolation; no
//! mount placeholder in a layer; multi-stage builds run only the stages
//! the target needs; a cache on overlayfs falls back to copying.
//! (RUN compared file by file with buildah: tests/buildah_compare.rs.)

mod common;
mod regsupport;
mod run_support;

use common::*;
use run_support::*;
use std::fs;

use std::process::Command;

#[test]
fn what_run_installs_runs_under_runc() {
    let f = Fixture::new();
    let ctx = f.context(
        "app",
        "FROM {BASE}\n\
         RUN mkdir -p /usr/local/bin \\\n\
          && printf '#!/bin/sh\\necho installed by RUN for $(id -un)\\n' > /usr/local/bin/hello \\\n\
          && chmod 755 /usr/local/bin/hello\n\
         USER app\n\
         CMD [\"hello\"]\n",
        &[],
    );
    f.build_ok(&ctx, "layout", &[]);
    let rootfs = f.unpack("layout");
    let bundle = rootfs.parent().unwrap();
    assert_eq!(
        runc_run(bundle, "dockless-run"),
        "installed by RUN for app\n"
    );
}

#[test]
fn a_failing_step_names_its_line_and_leaves_no_image_and_no_tag() {
    let f = Fixture::new();
    let good = f.context("good", "FROM {BASE}\nRUN echo fine > /fine\n", &[]);
    f.build_ok(&good, "layout", &[]);
    let index_before = fs::read(f.path("layout/index.json")).unwrap();
    let bad = f.context(
        "bad",
        "FROM {BASE}\nRUN echo first > /first\n\nRUN echo before-failure && exit 7\nRUN echo never\n",
        &[],
    );
    let out = dockless(&f.path("cache"))
        .arg("build")
        .arg(&bad)
        .args([
            "-t",
            "run:broken",
            "--insecure-registry",
            &f.reg.addr(),
            "-o",
        ])
        .arg(format!("oci:{}", f.path("layout").display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(out.stdout.is_empty(), "no image line");
    assert!(
        stderr.contains("[3/4] RUN echo before-failure && exit 7\nbefore-failure\n"),
        "{stderr}"
    );
    let dockerfile = bad.join("Dockerfile");
    assert!(
        stderr.contains(&format!(
            "{}:4: RUN echo before-failure && exit 7: exit status 7",
            dockerfile.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("never"), "{stderr}");
    assert_eq!(
        fs::read(f.path("layout/index.json")).unwrap(),
        index_before,
        "the layout is as it was: no image, no run:broken tag"
    );
}

#[test]
fn a_second_build_runs_nothing_and_each_input_of_the_key_runs_the_step_again() {
    let f = Fixture::new();
    let dockerfile = "FROM {BASE}\nCOPY input.txt /input.txt\nARG FLAVOR=plain\nENV MODE=one\n\
                      RUN echo step-ran-$MODE-$FLAVOR && cat /input.txt > /copied\n";
    let ctx = f.context("app", dockerfile, &[("input.txt", "v1\n")]);
    let ran = |stderr: &str| stderr.contains("\nstep-ran-");
    let (first, err) = f.build_ok(&ctx, "layout", &[]);
    assert!(err.contains("step-ran-one-plain"), "{err}");

    let (again, err) = f.build_ok(&ctx, "layout", &[]);
    assert!(!ran(&err), "a second build ran the step:\n{err}");
    assert!(
        err.contains("[3/3] RUN echo step-ran-$MODE-$FLAVOR && cat /input.txt > /copied (cached)"),
        "{err}"
    );
    assert_eq!(again, first, "same image");

    // Proxy variables reach the step but are not part of its key.
    let (proxied, err) = f.build_ok(
        &ctx,
        "layout",
        &["--build-arg", "HTTP_PROXY=http://proxy.invalid:3128"],
    );
    assert!(!ran(&err), "a proxy variable ran the step again:\n{err}");
    assert_eq!(proxied, first);

    let (_, err) = f.build_ok(&ctx, "layout", &["--build-arg", "FLAVOR=fancy"]);
    assert!(err.contains("step-ran-one-fancy"), "an ARG:\n{err}");

    // The Dockerfile with one edit.
    let edited = |from: &str, to: &str| {
        let text = dockerfile.replace(from, to).replace("{BASE}", &f.base);
        fs::write(ctx.join("Dockerfile"), text).unwrap();
        f.build_ok(&ctx, "layout", &[]).1
    };
    let err = edited("MODE=one", "MODE=two");
    assert!(err.contains("step-ran-two-plain"), "an ENV:\n{err}");
    let err = edited("> /copied", ">  /copied");
    assert!(err.contains("step-ran-one-plain"), "the command:\n{err}");

    fs::write(ctx.join("input.txt"), "v2\n").unwrap();
    let (changed, err) = f.build_ok(&ctx, "layout", &[]);
    assert!(
        err.contains("step-ran-one-plain"),
        "an earlier COPY:\n{err}"
    );
    assert_ne!(changed, first);
    let (_, err) = f.build_ok(&ctx, "layout", &["--no-cache"]);
    assert!(err.contains("step-ran-one-plain"), "--no-cache:\n{err}");
    assert_eq!(
        fs::read_to_string(f.unpack("layout").join("copied")).unwrap(),
        "v2\n"
    );
}

/// `sleep <marker>` processes on this machine.
fn sleepers(marker: &str) -> usize {
    let wanted = format!("sleep\0{marker}\0");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
        .count()
}

#[test]
fn a_step_sees_no_host_file_or_process_and_leaves_no_process() {
    let f = Fixture::new();
    let marker = format!("{}", 40_000 + std::process::id() % 10_000);
    let host_file = f.path("host-secret");
    fs::write(&host_file, "secret").unwrap();
    let ctx = f.context(
        "isolated",
        &format!(
            "FROM {{BASE}}\n\
             RUN (sleep {marker} &) ; \
             if cat {host} 2>/dev/null; then echo seen; else echo hidden; fi > /host-file; \
             ps -o comm | sort | uniq | tr '\\n' ' ' > /processes; \
             ls /sys/class/net > /host-net\n\
             RUN --network=none ls /sys/class/net > /own-net\n",
            host = host_file.display()
        ),
        &[],
    );
    f.build_ok(&ctx, "layout", &[]);
    assert_eq!(
        sleepers(&marker),
        0,
        "the step's background sleep outlived it"
    );
    let rootfs = f.unpack("layout");
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("host-file"), "hidden\n");
    // Its own PID namespace: init (dockless), the shell, the pipeline and
    // the sleep it started. dockless runs its helper as /proc/self/exe, so
    // under load ps has once caught it as "exe" before it renamed itself.
    let processes = read("processes");
    for name in processes.split_whitespace() {
        assert!(
            ["COMMAND", "dockless", "exe", "sh", "ps", "sort", "uniq", "tr", "sleep"]
                .contains(&name),
            "a host process is visible: {processes}"
        );
    }
    assert_eq!(read("own-net"), "lo\n", "--network=none has only loopback");
    assert_ne!(
        read("host-net"),
        "lo\n",
        "the default is the host's network"
    );
}

#[test]
fn no_mount_point_of_the_sandbox_reaches_a_layer() {
    let f = Fixture::new();
    // A root with no /proc, /sys, /dev, /etc or /tmp: the sandbox makes
    // its mount points and takes them away again.
    let ctx = f.context(
        "bare",
        "FROM {BASE} AS base\nFROM scratch\nCOPY --from=base /bin /bin\n\
         RUN mkdir /made && ls /proc/self /sys/class /dev/null /etc/hosts /etc/resolv.conf > /made/seen\n",
        &[],
    );
    f.build_ok(&ctx, "layout", &[]);
    assert_eq!(layer_paths(&f.path("layout"), 1), ["made/", "made/seen"]);
}

#[test]
fn only_the_stages_the_target_needs_run() {
    let f = Fixture::new();
    let ctx = f.context(
        "stages",
        "FROM {BASE} AS build\nRUN echo built-in-stage > /out\n\
         FROM {BASE} AS unused\nRUN echo unused-stage-ran\n\
         FROM scratch\nCOPY --from=build /out /out\n",
        &[],
    );
    let (_, err) = f.build_ok(&ctx, "layout", &[]);
    assert!(
        err.contains("[build 2/2] RUN echo built-in-stage > /out"),
        "{err}"
    );
    assert!(!err.contains("unused-stage-ran"), "{err}");
    assert_eq!(layer_paths(&f.path("layout"), 0), ["out"]);
    let (_, err) = f.build_ok(&ctx, "unused", &["--target", "unused"]);
    assert!(err.contains("unused-stage-ran"), "{err}");
}

#[test]
fn a_user_the_image_does_not_have_is_named_with_its_line() {
    let f = Fixture::new();
    let ctx = f.context("ghost", "FROM {BASE}\nUSER ghost\nRUN true\n", &[]);
    let out = f.build(&ctx, "layout", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(":3: USER ghost: no user \"ghost\" in the image's /etc/passwd"),
        "{stderr}"
    );
}

#[test]
fn a_cache_on_overlayfs_makes_run_copy_the_layers_and_gives_the_same_image() {
    let f = Fixture::new();
    let ctx = f.context(
        "copy",
        "FROM {BASE}\nRUN echo one > /one && rm /bin/ls\nRUN rm -rf /var && mkdir /var && echo two > /var/two\n",
        &[],
    );
    let (on_disk, _) = f.build_ok(&ctx, "layout", &[]);
    // The cache on an overlay mount (as inside Docker), seen only by this
    // dockless (its own mount namespace): overlayfs cannot stack on it.
    let over = f.path("over");
    for sub in ["lower", "upper", "work", "cache"] {
        fs::create_dir_all(over.join(sub)).unwrap();
    }
    let mount = format!(
        "mount -t overlay overlay -o lowerdir={o}/lower,upperdir={o}/upper,workdir={o}/work {o}/cache && exec \"$@\"",
        o = over.display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &mount,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_dockless"))
        .arg("build")
        .arg(&ctx)
        .args(["-t", "run:test", "--insecure-registry", &f.reg.addr(), "-o"])
        .arg(format!("oci:{}", f.path("copied").display()))
        .env("DOCKLESS_CACHE_DIR", over.join("cache"))
        .env("DOCKLESS_LOG", "info")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("overlayfs cannot stack the layers here"),
        "{stderr}"
    );
    assert_eq!(stdout(&out), on_disk, "the same image either way");
}
