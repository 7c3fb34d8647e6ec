//! The busybox fixture RUN tests share: a real registry holding a
//! busybox base the tests build, contexts FROM it, and `dockless build`
//! into an OCI layout.
#![allow(dead_code)]

use crate::common::*;
use crate::regsupport::{Registry, RegistryCfg};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A registry with the busybox base, and a work folder.
pub struct Fixture {
    pub reg: Registry,
    pub tmp: tempfile::TempDir,
    pub base: String,
}

impl Fixture {
    pub fn new() -> Fixture {
        let reg = Registry::start(RegistryCfg::default());
        let tmp = tempfile::tempdir().unwrap();
        let base = push_busybox_base(&reg.addr(), tmp.path());
        Fixture { reg, tmp, base }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// A context `name` holding `files`, its Dockerfile `FROM` the base.
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.path(name);
        fs::create_dir_all(&ctx).unwrap();
        let text = dockerfile.replace("{BASE}", &self.base);
        fs::write(ctx.join("Dockerfile"), text).unwrap();
        for (file, body) in files {
            fs::write(ctx.join(file), body).unwrap();
        }
        ctx
    }

    /// `dockless build` of `ctx` into the layout `out`, with the fixture's cache.
    pub fn command(&self, ctx: &Path, out: &str, extra: &[&str]) -> Command {
        let mut cmd = dockless(&self.path("cache"));
        cmd.arg("build")
            .arg(ctx)
            .args([
                "-t",
                "run:test",
                "--insecure-registry",
                &self.reg.addr(),
                "-o",
            ])
            .arg(format!("oci:{}", self.path(out).display()))
            .args(extra);
        cmd
    }

    pub fn build(&self, ctx: &Path, out: &str, extra: &[&str]) -> Output {
        self.command(ctx, out, extra).output().unwrap()
    }

    pub fn build_ok(&self, ctx: &Path, out: &str, extra: &[&str]) -> (String, String) {
        let o = self.build(ctx, out, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (stdout(&o), String::from_utf8_lossy(&o.stderr).into_owned())
    }

    /// The built image's root filesystem, unpacked by umoci.
    pub fn unpack(&self, out: &str) -> PathBuf {
        umoci_unpack(
            &self.path(out),
            "run:test",
            &self.path(&format!("{out}-bundle")),
        )
    }
}

/// Every path in the image's layers above the base, as the tar names them.
pub fn layer_paths(layout: &Path, skip: usize) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut paths = Vec::new();
    for layer in manifest["layers"].as_array().unwrap().iter().skip(skip) {
        let file = fs::File::open(blob(layer["digest"].as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
        for entry in archive.entries().unwrap() {
            paths.push(entry.unwrap().path().unwrap().display().to_string());
        }
    }
    paths
}
