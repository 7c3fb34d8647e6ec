//! Runs the built hello image with runc: the container must print exactly
//! what its CMD reads. umoci and runc must be installed; a missing tool fails.

mod common;

use common::{hello_context, require_tool, run_ok, runc_run, umoci_unpack};

#[test]
fn runc_runs_the_hello_image() {
    require_tool("umoci");
    require_tool("runc");
    let tmp = tempfile::tempdir().unwrap();
    let ctx = hello_context(tmp.path());
    let layout = tmp.path().join("layout");
    run_ok(
        common::dockless(&tmp.path().join("cache"))
            .arg("build")
            .arg(&ctx)
            .args(["-t", "hello:runc", "-o"])
            .arg(format!("oci:{}", layout.display())),
    );
    let bundle = tmp.path().join("bundle");
    umoci_unpack(&layout, "hello:runc", &bundle);

    let printed = runc_run(&bundle, "dockless-hello");
    assert_eq!(printed, "hello from dockless\n");
}
