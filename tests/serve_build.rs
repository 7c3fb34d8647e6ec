//! `dockless serve` end to end: a real docker-registry, a real git
//! repository served over file://, and a signed merged-PR delivery that
//! builds and pushes two images (checked with skopeo) while the AMI entry
//! fails alone; a redelivery returns the same build and builds nothing.
//! A committer's repository cannot make the service read files outside the
//! checkout, show them, or read unbounded files.
mod regsupport;
mod serve_support;
mod supply_support;

use regsupport::{Registry, RegistryCfg};
use serve_support::*;
use std::path::Path;
use std::time::Duration;

#[test]
fn merged_pr_builds_and_pushes_every_image() {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    // Images are signed with the key dockless.toml names (PKCS#8 PEM).
    let key = dir.path().join("sign.pem");
    let public = dir.path().join("sign.pub");
    let openssl = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .args(args)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args:?}");
    };
    let (key_s, public_s) = (key.to_str().unwrap(), public.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        key_s,
    ]);
    openssl(&["pkey", "-in", key_s, "-pubout", "-out", public_s]);
    let extra = format!("sign_key_file = \"{key_s}\"");
    let srv = Server::start(
        dir.path(),
        &ServerCfg {
            max_builds: 2,
            extra: &extra,
            ..ServerCfg::new(reg.addr(), repo.url())
        },
    );
    let payload = merged_pr(&repo.merge_sha, &repo.head_sha);
    let t0 = std::time::Instant::now();
    let r = deliver(
        &srv.addr,
        "pull_request",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &payload,
    );
    let ack = t0.elapsed();
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(ack < Duration::from_secs(2), "acknowledged after {ack:?}");
    let id = r.json()["build_id"].as_i64().unwrap();
    // The acknowledgement came before the build finished.
    let first = get(&srv.addr, &format!("/builds/{id}")).json();
    assert_ne!(first["status"], "succeeded");

    let b = srv.wait_finished(id, Duration::from_secs(180));
    // The AMI entry fails the build as a whole, but alone.
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["commit"], repo.merge_sha.as_str());
    assert_eq!(b["head_sha"], repo.head_sha.as_str());
    assert_eq!(b["error"], "1 of 3 images failed");
    assert!(b["started_at"].is_string() && b["finished_at"].is_string());
    let images = b["images"].as_array().unwrap();
    assert_eq!(images.len(), 3, "{b}");
    let vm = &images[2];
    assert_eq!(
        (vm["service_name"].as_str(), vm["status"].as_str()),
        (Some("vm-base"), Some("failed"))
    );
    assert!(
        vm["error"]
            .as_str()
            .unwrap()
            .contains("type \"AMI\" is not built by dockless"),
        "{vm}"
    );
    assert!(vm.get("reference").is_none());
    for (img, name, version) in [
        (&images[0], "api", "1.4.0"),
        (&images[1], "worker", "0.1.0"),
    ] {
        assert_eq!(img["service_name"], name);
        assert_eq!(img["version"], version);
        assert_eq!(img["status"], "succeeded", "{img}");
        let reference = img["reference"].as_str().unwrap();
        let prefix = format!("{}/{name}:{version}@sha256:", reg.addr());
        assert!(reference.starts_with(&prefix), "{reference}");
        let digest = reference.rsplit_once('@').unwrap().1;
        reg.verify(&format!("{name}:{version}"), digest, None);
        assert_attached(&reg, img, name, digest, &repo.merge_sha, &public);
    }
    // The merge commit was built, not the PR head: api has develop's later change.
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--config"])
        .arg(format!("docker://{}/worker:0.1.0", reg.addr()))
        .output()
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["config"]["Entrypoint"][0], "/opt/worker/run");
    let api_layer = layer_file(&reg, "api:1.4.0", "srv/message.txt");
    assert_eq!(api_layer, "api v2\n");

    // Redelivery: the same build id, nothing built again.
    let again = deliver(
        &srv.addr,
        "pull_request",
        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        &payload,
    );
    assert_eq!(again.status, 202);
    assert_eq!(again.json()["build_id"].as_i64(), Some(id));
    std::thread::sleep(Duration::from_millis(500));
    let after = get(&srv.addr, &format!("/builds/{id}")).json();
    assert_eq!(after["attempts"], 1);
    assert_eq!(after["finished_at"], b["finished_at"]);
    assert_eq!(
        get(&srv.addr, "/builds").json()["builds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let m = get(&srv.addr, "/metrics").body;
    assert!(
        m.contains("dockless_builds_total{outcome=\"failed\"} 1"),
        "{m}"
    );
    // The per-build log under state_dir names what happened.
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    assert!(log.contains("pushed ") && log.contains("AMI"), "{log}");
}

/// The build lists the SBOM, provenance and signature it pushed beside the
/// image, by digest, as the registry serves them; the provenance names the
/// merge commit; the signature verifies (`dockless verify`).
fn assert_attached(
    reg: &Registry,
    img: &serde_json::Value,
    name: &str,
    digest: &str,
    merge_sha: &str,
    public: &Path,
) {
    let attached = &img["attachments"][0];
    assert_eq!(attached["subject"], digest, "{img}");
    let stem = digest.replacen(':', "-", 1);
    for tag in [
        stem.clone(),
        format!("{stem}.sig"),
        format!("{stem}.att"),
        format!("{stem}.sbom"),
    ] {
        let listed = attached["tags"][&tag]
            .as_str()
            .unwrap_or_else(|| panic!("{tag}: {img}"));
        assert_eq!(
            reg.skopeo_manifest_digest(&format!("{name}:{tag}"), None)
                .unwrap(),
            listed
        );
    }
    let provenance = attached["referrers"]["application/vnd.dsse.envelope.v1+json"]
        .as_str()
        .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let fetched = supply_support::skopeo_fetch(reg, &format!("{name}@{provenance}"), dest.path());
    let manifest = fetched.named("x").unwrap();
    let envelope = fetched.json(manifest["layers"][0]["digest"].as_str().unwrap());
    use base64::Engine as _;
    let statement = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&statement).unwrap();
    let deps = &statement["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(deps[0]["digest"]["gitCommit"], merge_sha, "{statement}");
    let id = &statement["predicate"]["runDetails"]["metadata"]["invocationId"];
    assert!(
        id.as_str().unwrap().starts_with("dockless-serve-build-"),
        "{statement}"
    );
    let verified = std::process::Command::new(env!("CARGO_BIN_EXE_dockless"))
        .args([
            "verify",
            &format!("{}/{name}@{digest}", reg.addr()),
            "--insecure",
            "--key",
        ])
        .arg(public)
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// The content of one file from the image's single layer, via skopeo.
fn layer_file(reg: &Registry, repo_tag: &str, path: &str) -> String {
    let dest = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", reg.addr()))
        .arg(format!("dir:{}", dest.path().display()))
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dest.path().join("manifest.json")).unwrap()).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let hex = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let f = std::fs::File::open(dest.path().join(hex)).unwrap();
        let mut ar = tar::Archive::new(flate2::read::MultiGzDecoder::new(f));
        for entry in ar.entries().unwrap() {
            let mut e = entry.unwrap();
            if e.path().unwrap().to_string_lossy().trim_start_matches("./") == path {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                return s;
            }
        }
    }
    panic!("{path} not in {repo_tag}");
}

/// The first word of a file outside the checkout: what a leak would show.
const LEAKED: &str = "TOPSECRETWORD";

fn symlink(target: impl AsRef<Path>, link: &Path) {
    let _ = std::fs::remove_file(link);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn write(path: &Path, text: impl AsRef<[u8]>) {
    let _ = std::fs::remove_file(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// image.json listing these services, each with the default context and Dockerfile.
fn image_json(services: &[&str]) -> String {
    let entries: Vec<String> = services
        .iter()
        .map(|s| format!(r#"{{"service_name": "{s}", "version": "1.0.0", "type": "Docker"}}"#))
        .collect();
    format!("[{}]", entries.join(","))
}

/// A registry, the shop repository and a server building from it.
fn setup() -> (Registry, tempfile::TempDir, GitRepo, Server) {
    let reg = Registry::start(RegistryCfg::default());
    let dir = tempfile::tempdir().unwrap();
    let repo = GitRepo::create(dir.path());
    let srv = Server::start(dir.path(), &ServerCfg::new(reg.addr(), repo.url()));
    (reg, dir, repo, srv)
}

/// The error of the image named `name`.
fn image_error(build: &serde_json::Value, name: &str) -> String {
    let images = build["images"].as_array().unwrap();
    let image = images.iter().find(|i| i["service_name"] == name).unwrap();
    assert_eq!(image["status"], "failed", "{build}");
    image["error"].as_str().unwrap().to_string()
}

/// Neither the build's status (alone or listed) nor its log shows any of `needles`.
fn assert_not_shown(srv: &Server, build: &serde_json::Value, needles: &[&str]) {
    let id = build["build_id"].as_i64().unwrap();
    let shown = [
        (
            "GET /builds/<id>",
            get(&srv.addr, &format!("/builds/{id}")).body,
        ),
        ("GET /builds", get(&srv.addr, "/builds").body),
        (
            "the build log",
            std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap(),
        ),
    ];
    for (what, text) in &shown {
        for needle in needles {
            assert!(!text.contains(needle), "{what} shows {needle:?}:\n{text}");
        }
    }
}

#[test]
fn files_symlinked_out_of_the_checkout_are_refused_and_never_shown() {
    let (_reg, dir, repo, srv) = setup();
    // Outside the checkout: a Dockerfile, .dockerignore or image.json read
    // from here would put LEAKED in an error (unknown instruction, invalid
    // pattern, unknown type).
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, format!("{LEAKED} [unclosed\n")).unwrap();
    let secret_json = dir.path().join("secret.json");
    std::fs::write(
        &secret_json,
        format!(r#"{{"service_name": "api", "version": "1.0.0", "type": "{LEAKED}"}}"#),
    )
    .unwrap();

    let sha = repo.commit("links out", |tree| {
        symlink(&secret, &tree.join("leak/Dockerfile"));
        symlink("/proc/self/environ", &tree.join("environ/Dockerfile"));
        write(
            &tree.join("ignore/Dockerfile"),
            "FROM scratch\nCOPY . /app/\n",
        );
        write(&tree.join("ignore/app.txt"), "app\n");
        symlink(&secret, &tree.join("ignore/.dockerignore"));
        write(
            &tree.join("image.json"),
            image_json(&["api", "leak", "environ", "ignore"]),
        );
    });
    let (_, b) = srv.build_merged(&sha);
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(b["error"], "3 of 4 images failed", "{b}");
    assert_eq!(b["images"][0]["status"], "succeeded", "{b}");
    for name in ["leak", "environ"] {
        let e = image_error(&b, name);
        assert!(
            e.contains(&format!("{name}/Dockerfile: leads out of the repository")),
            "{e}"
        );
    }
    let e = image_error(&b, "ignore");
    assert!(
        e.contains(".dockerignore: leads out of the build context"),
        "{e}"
    );
    // The webhook secret is in the service's environment: not in any answer.
    assert_not_shown(&srv, &b, &[LEAKED, SECRET, "DOCKLESS_LOG"]);

    let sha = repo.commit("image.json links out", |tree| {
        symlink(&secret_json, &tree.join("image.json"));
    });
    let (_, b) = srv.build_merged(&sha);
    assert_eq!(b["status"], "failed", "{b}");
    let e = b["error"].as_str().unwrap();
    assert!(
        e.starts_with("cannot read image.json: leads out of the repository"),
        "{e}"
    );
    assert_not_shown(&srv, &b, &[LEAKED]);
}

#[test]
fn endless_or_huge_files_and_too_many_images_fail_cleanly() {
    let (_reg, _dir, repo, mut srv) = setup();

    let sha = repo.commit(".dockerignore on /dev/zero, and one too big", |tree| {
        for name in ["zero", "big"] {
            write(
                &tree.join(name).join("Dockerfile"),
                "FROM scratch\nCOPY . /app/\n",
            );
        }
        symlink("/dev/zero", &tree.join("zero/.dockerignore"));
        write(&tree.join("big/.dockerignore"), vec![b'#'; (1 << 20) + 1]);
        write(&tree.join("image.json"), image_json(&["zero", "big"]));
    });
    let (_, b) = srv.build_merged(&sha);
    assert_eq!(b["error"], "2 of 2 images failed", "{b}");
    let e = image_error(&b, "zero");
    assert!(
        e.contains(".dockerignore: leads out of the build context"),
        "{e}"
    );
    let e = image_error(&b, "big");
    assert!(
        e.contains(".dockerignore: larger than 1 MiB, the most that is read"),
        "{e}"
    );

    for (what, expected, edit) in [
        (
            "image.json on /dev/zero",
            "cannot read image.json: leads out of the repository",
            Box::new(|tree: &Path| symlink("/dev/zero", &tree.join("image.json")))
                as Box<dyn FnOnce(&Path)>,
        ),
        (
            "image.json too big",
            "cannot read image.json: larger than 1 MiB, the most that is read",
            Box::new(|tree: &Path| {
                let mut text = image_json(&["api"]).into_bytes();
                text.resize((1 << 20) + 1, b' ');
                write(&tree.join("image.json"), text);
            }),
        ),
    ] {
        let sha = repo.commit(what, edit);
        let (_, b) = srv.build_merged(&sha);
        assert_eq!(b["status"], "failed", "{what}: {b}");
        let e = b["error"].as_str().unwrap();
        assert!(e.starts_with(expected), "{what}: {e}");
        assert_eq!(b["images"].as_array().unwrap().len(), 0, "{what}: {b}");
    }
    // The same process served every build: nothing was killed for memory.
    assert!(srv.child.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_eq!(get(&srv.addr, "/healthz").status, 200);
}

#[test]
fn four_thousand_images_fail_at_once_with_the_cap() {
    let (_reg, _dir, repo, srv) = setup();
    let sha = repo.commit("4,000 images", |tree| {
        let names: Vec<String> = (0..4000).map(|i| format!("svc{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        write(&tree.join("image.json"), image_json(&names));
    });
    let (_, b) = srv.build_merged(&sha);
    assert_eq!(b["status"], "failed", "{b}");
    assert_eq!(
        b["error"],
        "image.json lists 4000 images; at most 100 are built for one commit"
    );
    assert_eq!(b["images"].as_array().unwrap().len(), 0, "{b}");
}

#[test]
fn run_steps_run_in_the_service_and_their_output_stays_in_the_build_log() {
    let (reg, _dir, repo, srv) = setup();
    let sha = repo.commit_run_step();
    let (_, b) = srv.build_merged(&sha);
    assert_eq!(b["status"], "succeeded", "{b}");
    let id = b["build_id"].as_i64().unwrap();
    let log = std::fs::read_to_string(srv.state.join(format!("logs/{id}.log"))).unwrap();
    assert!(
        log.contains("[3/3] RUN [\"/bin/busybox\", \"sh\", \"-c\"")
            && log.contains("\nsaid-by-the-step\n"),
        "{log}"
    );
    assert_eq!(layer_file(&reg, "api:3.0.0", "srv/made"), "made\n");
}
