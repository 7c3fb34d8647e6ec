//! Runs the built hello image with runc: the container must print exactly
//! what its CMD reads. umoci and runc must be installed; a missing tool fails.

mod common;

use common::{hello_context, require_tool, run_ok, umoci_unpack};
use serde_json::Value;
use std::process::Command;

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

    // Resource limits need cgroup and rlimit rights a test runner may lack,
    // and without a terminal the output comes back on our stdout.
    let config_path = bundle.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).expect("config.json");
    let process = config["process"].as_object_mut().expect("process");
    process.remove("rlimits");
    process.insert("terminal".into(), Value::Bool(false));
    if let Some(linux) = config["linux"].as_object_mut() {
        linux.remove("resources");
    }
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let id = format!("dockless-hello-{}", std::process::id());
    let out = run_ok(
        Command::new("runc")
            .arg("--root")
            .arg(tmp.path().join("runc-state"))
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(&id),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from dockless\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
