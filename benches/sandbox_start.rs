//! How long a RUN step's sandbox takes to start and finish on a busybox
//! rootfs: `Sandbox::run` of `/bin/true`, from the helper's spawn to the
//! reported exit (issue 14's target: under 50 ms a step). Run with
//! `cargo bench --bench sandbox_start` as root or as a user with user
//! namespaces.

#[path = "../tests/sandbox_support/mod.rs"]
mod sandbox_support;

use dockless::sandbox::{Isolation, Mode, Network, Sandbox, Spec, StepIo};
use std::process::Stdio;
use std::time::{Duration, Instant};

const STEPS: usize = 50;

fn median_ms(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(times[times.len() / 2]), ms(times[times.len() * 9 / 10]))
}

fn measure(sandbox: &Sandbox, spec: &Spec) -> Vec<Duration> {
    (0..STEPS)
        .map(|_| {
            let io = StepIo {
                stdout: Stdio::null(),
                stderr: Stdio::inherit(),
            };
            let start = Instant::now();
            let outcome = sandbox.run(spec, io).expect("the step runs");
            assert!(outcome.success());
            start.elapsed()
        })
        .collect()
}

fn main() {
    let sandbox = Sandbox::new(env!("CARGO_BIN_EXE_dockless"), Isolation::Userns);
    let Mode::Userns(mapping) = sandbox.check().expect("user namespaces work here").clone() else {
        unreachable!("Isolation::Userns")
    };
    let dir = tempfile::tempdir().unwrap();
    // Everything owned by container root: an unprivileged user may not
    // chown to its subordinate IDs from outside the namespace.
    let root = mapping.host_uid(0).expect("root is mapped");
    let rootfs = sandbox_support::busybox_rootfs(dir.path(), &|_| root);
    let mut spec = Spec::new(&rootfs, &["/bin/true"]);
    let writer = match mapping.writer {
        dockless::sandbox::idmap::MapWriter::NewIdMap => "newuidmap",
        _ => "direct",
    };
    for network in [Network::Host, Network::None] {
        spec.network = network;
        let (median, p90) = median_ms(measure(&sandbox, &spec));
        println!("sandbox start+exit of /bin/true, {STEPS} steps, network {network:?}, maps {writer}: median {median:.1} ms, p90 {p90:.1} ms");
    }
}
