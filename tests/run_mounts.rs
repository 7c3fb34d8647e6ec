//! `RUN --mount` end to end on the busybox base: a cache mount keeps its
//! files between builds and never reaches the image; a secret is readable
//! in the step and nowhere else (no layer, config, history, log or cache
//! file holds its bytes, and its content is not in the step's key); binds
//! from a stage and from the context (what `.dockerignore` lets through,
//! writes discarded); a private cache another build holds is a fresh one;
//! tmpfs; `type=ssh` is refused naming the line.

mod common;
mod regsupport;
mod run_support;

use common::*;
use run_support::*;
use std::fs;
use std::io::Read as _;
use std::path::Path;

/// A file of the built image's rootfs (unpacked once per layout).
fn image_file(f: &Fixture, out: &str, path: &str) -> String {
    let rootfs = f.path(&format!("{out}-bundle/rootfs"));
    if !rootfs.is_dir() {
        f.unpack(out);
    }
    fs::read_to_string(rootfs.join(path)).unwrap_or_else(|e| panic!("/{path}: {e}"))
}

#[test]
fn a_cache_mount_keeps_its_files_between_builds_and_stays_out_of_the_image() {
    let f = Fixture::new();
    let ctx = f.context(
        "cache",
        "FROM {BASE}\n\
         RUN --mount=type=cache,target=/var/cache/app,id=app \\\n\
             echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /count\n\
         RUN --mount=type=cache,target=/owned,uid=1000,gid=1001,mode=0750 \\\n\
             stat -c '%u %g %a' /owned > /owned-stat\n",
        &[],
    );
    f.build_ok(&ctx, "one", &[]);
    assert_eq!(image_file(&f, "one", "count").trim(), "1");
    assert_eq!(image_file(&f, "one", "owned-stat"), "1000 1001 750\n");
    let (_, err) = f.build_ok(&ctx, "two", &["--no-cache"]);
    assert!(!err.contains("(cached)"), "{err}");
    assert_eq!(
        image_file(&f, "two", "count").trim(),
        "2",
        "the cache kept the first build's line"
    );
    let paths = layer_paths(&f.path("two"), 1);
    assert_eq!(paths, ["count", "owned-stat"], "no mount target in a layer");
    let caches: Vec<_> = fs::read_dir(f.path("cache/run-cache"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(caches.len(), 2, "one folder per cache id");
    // Pruning counts and removes them like the rest of the cache.
    run_ok(dockless(&f.path("cache")).args(["cache", "prune", "--max-size", "0"]));
    let left = fs::read_dir(f.path("cache/run-cache")).unwrap().count();
    assert_eq!(left, 0, "pruned");
}

#[test]
fn the_cache_mount_spec_is_in_the_key() {
    let f = Fixture::new();
    let df = |id: &str| {
        format!("FROM {{BASE}}\nRUN --mount=type=cache,target=/c,id={id} touch /c/x && echo done > /done\n")
    };
    let ctx = f.context("key", &df("one"), &[]);
    f.build_ok(&ctx, "a", &[]);
    let (_, err) = f.build_ok(&ctx, "b", &[]);
    assert!(err.contains("(cached)"), "same spec: cached\n{err}");
    let ctx = f.context("key", &df("two"), &[]);
    let (_, err) = f.build_ok(&ctx, "c", &[]);
    assert!(!err.contains("(cached)"), "another id runs again\n{err}");
}

const SECRET: &str = "s3cret-Bytes-4e7f1c9a";

/// Every file under `dir`, gzip members decompressed, that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(bytes) = fs::read(entry.path()) else {
            continue;
        };
        let mut plain = Vec::new();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut plain);
        }
        let holds = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle);
        if holds(&bytes) || holds(&plain) {
            found.push(entry.path().display().to_string());
        }
    }
    found
}

#[test]
fn a_secret_is_read_in_its_step_and_found_nowhere_else() {
    let f = Fixture::new();
    let secret_file = f.path("token.txt");
    fs::write(&secret_file, SECRET).unwrap();
    let ctx = f.context(
        "secret",
        "FROM {BASE}\nARG EXPECT\n\
         RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = \"$EXPECT\" \\\n\
             && stat -c '%a %u' /run/secrets/tok > /file-stat\n\
         RUN --mount=type=secret,id=tok,env=TOKEN,target=/etc/tok,mode=0440,uid=1000 \\\n\
             test \"$TOKEN\" = \"$(cat /etc/tok)\" && stat -c '%a %u' /etc/tok > /env-stat\n\
         RUN --mount=type=secret,id=absent ls /run/secrets > /listed 2>&1 || echo none > /listed\n",
        &[],
    );
    let sec = format!("id=tok,src={}", secret_file.display());
    let expect = format!("EXPECT={SECRET}");
    let out = f
        .command(&ctx, "layout", &["--secret", &sec, "--build-arg", &expect])
        .env("DOCKLESS_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains(SECRET.split_at(4).1),
        "the log holds the secret"
    );
    assert_eq!(image_file(&f, "layout", "file-stat"), "400 0\n");
    assert_eq!(image_file(&f, "layout", "env-stat"), "440 1000\n");
    let paths = layer_paths(&f.path("layout"), 1);
    assert_eq!(
        paths,
        ["file-stat", "env-stat", "listed"],
        "no mount target in a layer"
    );
    // The build arg EXPECT puts the value in the history on purpose; the
    // same build without it shows where the secret itself went.
    let ctx = f.context(
        "secret2",
        "FROM {BASE}\nRUN --mount=type=secret,id=tok,env=TOKEN cp /run/secrets/tok /dev/null; echo \"${#TOKEN}\" > /len\n",
        &[],
    );
    let out = f
        .command(&ctx, "clean", &["--secret", &sec])
        .env("DOCKLESS_LOG", "trace")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(SECRET), "the log holds the secret");
    assert_eq!(
        image_file(&f, "clean", "len").trim(),
        SECRET.len().to_string()
    );
    for dir in [f.path("clean"), f.path("cache")] {
        let holding = files_holding(&dir, SECRET.as_bytes());
        assert!(holding.is_empty(), "the secret is in {holding:?}");
    }
    // Its content is not in the key: another value, and the step is cached.
    fs::write(&secret_file, "another value").unwrap();
    let (_, err) = f.build_ok(&ctx, "again", &["--secret", &sec]);
    assert!(err.contains("(cached)"), "{err}");
}

#[test]
fn a_required_secret_not_given_fails_naming_the_line() {
    let f = Fixture::new();
    let ctx = f.context(
        "required",
        "FROM {BASE}\n\nRUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n",
        &[],
    );
    let out = f.build(&ctx, "layout", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(
            ":3: RUN --mount=type=secret,id=npmrc,required=true: the secret \"npmrc\" is required"
        ),
        "{stderr}"
    );
}

#[test]
fn binds_from_a_stage_and_from_the_context_show_their_files_and_keep_none() {
    let f = Fixture::new();
    let ctx = f.context(
        "bind",
        "FROM {BASE} AS tools\n\
         RUN mkdir -p /opt/tools && echo from-stage > /opt/tools/hello\n\
         FROM {BASE}\n\
         RUN --mount=type=bind,from=tools,source=/opt/tools,target=/mnt/tools \\\n\
             cat /mnt/tools/hello > /from-stage\n\
         RUN --mount=type=bind,target=/src \\\n\
             cat /src/input.txt > /from-context && ls /src > /listed\n\
         RUN --mount=type=bind,source=input.txt,target=/in.txt,rw \\\n\
             echo changed > /in.txt && cat /in.txt > /rw-seen\n\
         WORKDIR /w\n\
         RUN --mount=type=bind,from={BASE},source=/etc,target=image-etc \\\n\
             head -n 1 image-etc/passwd > /from-image\n",
        &[
            ("input.txt", "from-context\n"),
            (".dockerignore", "ignored.txt\n"),
            ("ignored.txt", "no\n"),
        ],
    );
    f.build_ok(&ctx, "layout", &[]);
    assert_eq!(image_file(&f, "layout", "from-stage"), "from-stage\n");
    assert_eq!(image_file(&f, "layout", "from-context"), "from-context\n");
    assert_eq!(
        image_file(&f, "layout", "listed"),
        "Dockerfile\ninput.txt\n"
    );
    assert_eq!(image_file(&f, "layout", "rw-seen"), "changed\n");
    assert_eq!(
        image_file(&f, "layout", "from-image"),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    assert_eq!(
        fs::read_to_string(ctx.join("input.txt")).unwrap(),
        "from-context\n"
    );
    let paths = layer_paths(&f.path("layout"), 1);
    assert_eq!(
        paths,
        [
            "from-stage",
            "from-context",
            "listed",
            "rw-seen",
            "w/",
            "from-image"
        ]
    );
    // What a context bind shows is in the key.
    let (_, err) = f.build_ok(&ctx, "again", &[]);
    assert_eq!(err.matches("(cached)").count(), 5, "{err}");
    fs::write(ctx.join("input.txt"), "edited\n").unwrap();
    let (_, err) = f.build_ok(&ctx, "edited", &[]);
    assert_eq!(err.matches("(cached)").count(), 2, "{err}");
    assert_eq!(image_file(&f, "edited", "from-context"), "edited\n");
    // Copying the layers instead of stacking them gives the same image.
    let (digest, _) = f.build_ok(&ctx, "stacked", &["--no-cache"]);
    let out = f
        .command(&ctx, "copied", &["--no-cache"])
        .env("DOCKLESS_RUN_ROOT", "copy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), digest);
}

#[test]
fn a_tmpfs_mount_is_a_size_capped_scratch_space_outside_the_layer() {
    let f = Fixture::new();
    let ctx = f.context(
        "tmpfs",
        "FROM {BASE}\n\
         RUN --mount=type=tmpfs,target=/scratch,size=1m \\\n\
             echo x > /scratch/small && ! dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null \\\n\
             && echo capped > /result\n",
        &[],
    );
    f.build_ok(&ctx, "layout", &[]);
    assert_eq!(image_file(&f, "layout", "result"), "capped\n");
    assert_eq!(layer_paths(&f.path("layout"), 1), ["result"]);
}

#[test]
fn an_ssh_mount_is_refused_naming_the_line_before_anything_runs() {
    let f = Fixture::new();
    let ctx = f.context(
        "ssh",
        "FROM {BASE}\nRUN echo must-not-run\nRUN --mount=type=ssh git clone git@example.com:x.git\n",
        &[],
    );
    let out = f.build(&ctx, "layout", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(":3: RUN --mount=type=ssh: type=ssh is not supported yet"),
        "{stderr}"
    );
    assert!(!stderr.contains("must-not-run"), "{stderr}");
}

/// Waits (up to a minute) for `path` to exist.
fn wait_for(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn a_private_cache_another_build_holds_is_a_fresh_one() {
    use sha2::{Digest as _, Sha256};
    let f = Fixture::new();
    // A holds the cache "p" until the test lets it go.
    let holder = f.context(
        "holder",
        "FROM {BASE}\n\
         RUN --mount=type=cache,id=p,sharing=private,target=/c \\\n\
             touch /c/held && until [ -e /c/release ]; do sleep 0.1; done && echo done > /held\n",
        &[],
    );
    let mut a = f
        .command(&holder, "a", &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = f
        .path("cache/run-cache")
        .join(hex::encode(Sha256::digest(b"p")));
    wait_for(&dir.join("held"));
    let other = f.context(
        "other",
        "FROM {BASE}\n\
         RUN --mount=type=cache,id=p,sharing=private,target=/c \\\n\
             ls -A /c > /seen && touch /c/mine\n",
        &[],
    );
    let b = f.build(&other, "b", &[]);
    fs::write(dir.join("release"), "").unwrap();
    assert!(a.wait().unwrap().success(), "the holder failed");
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(image_file(&f, "b", "seen"), "", "the held cache was shared");
    assert!(
        !dir.join("mine").exists(),
        "the second build wrote in the held cache"
    );
}
