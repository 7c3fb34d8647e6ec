//! RUN on a Debian base (tests/common/debian.rs: mmdebstrap of Debian's
//! packages with python3 and pip, cached between runs), as real
//! Dockerfiles use it: `apt-get install` from Debian's mirror, `pip
//! install -r requirements.txt` of wheels in the context, `useradd`, and
//! the repository's own testdata/python-service; runc runs what each step
//! installed.

mod common;
mod regsupport;
mod run_support;

use common::debian::{cached_fixture, push_debian_base, recipe_key, SMALL_PACKAGE};
use common::*;
use run_support::Fixture;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn debian() -> Fixture {
    Fixture::with_base(push_debian_base)
}

/// Builds `ctx` (with `extra` arguments) into the layout `out` and returns
/// the built image's bundle, unpacked by umoci.
fn build_and_unpack(f: &Fixture, ctx: &Path, out: &str, extra: &[&str]) -> PathBuf {
    f.build_ok(ctx, out, extra);
    f.unpack(out).parent().unwrap().to_path_buf()
}

#[test]
fn apt_get_installs_a_package_from_debian_that_runs_under_runc() {
    let f = debian();
    let ctx = f.context(
        "apt",
        &format!(
            "FROM {{BASE}}\n\
             RUN apt-get update && apt-get install -y --no-install-recommends {SMALL_PACKAGE} \
             && rm -rf /var/lib/apt/lists/*\n\
             CMD [\"hello\"]\n"
        ),
        &[],
    );
    let bundle = build_and_unpack(&f, &ctx, "layout", &[]);
    assert!(
        !bundle.join("rootfs/var/lib/apt/lists/lock").exists(),
        "the step's cleanup is in the image"
    );
    assert_eq!(runc_run(&bundle, "dockless-apt"), "Hello, world!\n");
}

/// A pure-Python wheel made here, as `pip wheel` would make it: a
/// `greeting` module and its dist-info (RECORD without hashes, which pip
/// accepts).
fn greeting_wheel(dir: &Path) -> PathBuf {
    let src = dir.join("wheel-src");
    let files: [(&str, &str); 4] = [
        (
            "greeting/__init__.py",
            "def hello():\n    return 'hello from a wheel'\n",
        ),
        (
            "greeting-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: greeting\nVersion: 1.0\n",
        ),
        (
            "greeting-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: dockless-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            "greeting-1.0.dist-info/RECORD",
            "greeting/__init__.py,,\ngreeting-1.0.dist-info/METADATA,,\n\
             greeting-1.0.dist-info/WHEEL,,\ngreeting-1.0.dist-info/RECORD,,\n",
        ),
    ];
    for (name, body) in files {
        let path = src.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }
    let wheel = dir.join("greeting-1.0-py3-none-any.whl");
    run_ok(
        Command::new(require_tool("python3"))
            .args(["-m", "zipfile", "-c"])
            .arg(&wheel)
            .args(["greeting", "greeting-1.0.dist-info"])
            .current_dir(&src),
    );
    wheel
}

#[test]
fn pip_installs_the_requirements_from_a_wheel_in_the_context() {
    let f = debian();
    let wheel = fs::read(greeting_wheel(f.tmp.path())).unwrap();
    let ctx = f.context(
        "pip",
        "FROM {BASE}\nWORKDIR /app\nCOPY . /app\n\
         RUN pip install --no-index --find-links /app/wheels -r requirements.txt\n\
         CMD [\"python\", \"-c\", \"import greeting; print(greeting.hello())\"]\n",
        &[("requirements.txt", "greeting==1.0\n")],
    );
    fs::create_dir(ctx.join("wheels")).unwrap();
    fs::write(ctx.join("wheels/greeting-1.0-py3-none-any.whl"), wheel).unwrap();
    let bundle = build_and_unpack(&f, &ctx, "layout", &[]);
    assert_eq!(runc_run(&bundle, "dockless-pip"), "hello from a wheel\n");
}

#[test]
fn useradd_in_a_step_makes_a_user_that_owns_its_files() {
    let f = debian();
    let ctx = f.context(
        "useradd",
        "FROM {BASE}\n\
         RUN useradd --create-home --uid 1234 --shell /bin/sh appuser \
         && echo data > /home/appuser/file && chown appuser:appuser /home/appuser/file\n\
         USER appuser\n\
         CMD [\"sh\", \"-c\", \"id -un; stat -c '%U %u %G' $HOME/file; touch $HOME/new && echo writable\"]\n",
        &[],
    );
    let bundle = build_and_unpack(&f, &ctx, "layout", &[]);
    assert_eq!(
        runc_run(&bundle, "dockless-useradd"),
        "appuser\nappuser 1234 appuser\nwritable\n"
    );
}

/// The wheels testdata/python-service's requirements need, for Debian's
/// python3 on this architecture: downloaded once from PyPI on the host
/// and kept with the fixtures.
fn python_service_wheels() -> PathBuf {
    let requirements = testdata("python-service").join("requirements.txt");
    let wanted = fs::read_to_string(&requirements).unwrap();
    let platform = format!("manylinux2014_{}", std::env::consts::ARCH);
    let key = recipe_key(&["v1", &wanted, &platform]);
    cached_fixture(&format!("python-service-wheels-{key}"), |dir| {
        run_ok(
            Command::new(require_tool("python3"))
                .args(["-m", "pip", "download", "--only-binary=:all:"])
                .args(["--python-version", "3.11", "--implementation", "cp"])
                .args(["--platform", &platform, "-d"])
                .arg(dir)
                .arg("-r")
                .arg(&requirements),
        );
    })
}

#[test]
fn python_service_installs_its_requirements_and_its_app_answers() {
    let f = debian();
    // A base as a pip mirror behind a proxy would make it: the Debian base
    // with the service's wheels and pip told to take them, so the
    // service's own Dockerfile runs unchanged and pip needs no network.
    let offline = f.path("offline-base");
    fs::create_dir_all(&offline).unwrap();
    copy_tree(&python_service_wheels(), &offline.join("wheels"));
    fs::write(
        offline.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY wheels /wheels\nENV PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels\n",
            f.base
        ),
    )
    .unwrap();
    let base = format!("{}/base/python:offline", f.reg.addr());
    run_ok(dockless(&f.path("cache")).arg("push").arg(&offline).args([
        "-t",
        &base,
        "--insecure",
        "-q",
    ]));
    let bundle = build_and_unpack(
        &f,
        &testdata("python-service"),
        "layout",
        &["--build-arg", &format!("BASE={base}")],
    );
    let answer = runc_run_args(
        &bundle,
        "dockless-python-service",
        Some(&[
            "python",
            "-c",
            "import app; print(app.app.test_client().get('/').get_json())",
        ]),
    );
    assert_eq!(answer, "{'service': 'python-service', 'version': 'dev'}\n");
}
