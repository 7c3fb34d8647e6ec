//! Test harness: a real `docker-registry` per test, generated certificates,
//! small OCI images built on the fly, and skopeo checks.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dockless::remote::{LocalBlob, PushImage};
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};

/// Tests that change process-wide env (DOCKER_CONFIG, PATH) hold this for
/// their whole run (async-aware: it is held across awaits on purpose).
pub static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn env_lock() -> tokio::sync::MutexGuard<'static, ()> {
    ENV_LOCK.lock().await
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "registry=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn certs_script() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for cand in [here.join("certs/generate.sh")] {
        if cand.exists() {
            return cand;
        }
    }
    panic!("certs/generate.sh not found");
}

/// A CA + server certificate for localhost/127.0.0.1.
pub struct Certs {
    pub dir: tempfile::TempDir,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("bash")
            .arg(certs_script())
            .arg(dir.path())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "generate.sh failed");
        // skopeo's --cert-dir treats *.key as client keys: give it the CA alone.
        let sk = dir.path().join("skopeo");
        std::fs::create_dir(&sk).unwrap();
        std::fs::copy(dir.path().join("ca.crt"), sk.join("ca.crt")).unwrap();
        Certs { dir }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn skopeo_dir(&self) -> PathBuf {
        self.dir.path().join("skopeo")
    }
}

pub struct TokenAuthCfg {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub rootcertbundle: PathBuf,
}

#[derive(Default)]
pub struct RegistryCfg<'a> {
    pub certs: Option<&'a Certs>,
    /// (user, password) for an htpasswd file.
    pub htpasswd: Option<(&'a str, &'a str)>,
    pub token: Option<TokenAuthCfg>,
}

/// A running docker-registry; killed on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tls: bool,
    pub skopeo_cert_dir: Option<PathBuf>,
}

impl Registry {
    pub fn start(cfg: RegistryCfg<'_>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(c) = cfg.certs {
            yml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.cert().display(),
                c.key().display()
            ));
        }
        if let Some((user, pass)) = cfg.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .unwrap();
            assert!(out.status.success());
            let hp = dir.path().join("htpasswd");
            std::fs::write(&hp, &out.stdout).unwrap();
            yml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                hp.display()
            ));
        } else if let Some(t) = &cfg.token {
            yml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.realm,
                t.service,
                t.issuer,
                t.rootcertbundle.display()
            ));
        }
        let conf = dir.path().join("config.yml");
        std::fs::write(&conf, yml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry on PATH");
        let reg = Registry {
            child,
            dir,
            port,
            tls: cfg.certs.is_some(),
            skopeo_cert_dir: cfg.certs.map(|c| c.skopeo_dir()),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Process id, so another thread can `kill -9` it mid-request.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Start the registry again on the same port and storage (after a kill).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .unwrap();
        self.child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("docker-registry on PATH");
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not restart");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn skopeo_tls_args(&self, prefix: &str) -> Vec<String> {
        match &self.skopeo_cert_dir {
            Some(d) => vec![format!("--{prefix}cert-dir={}", d.display())],
            None => vec![format!("--{prefix}tls-verify=false")],
        }
    }

    /// `skopeo inspect --raw`: sha256 of the manifest the registry serves.
    pub fn skopeo_manifest_digest(
        &self,
        repo_tag: &str,
        creds: Option<&str>,
    ) -> Result<String, String> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect")
            .arg("--raw")
            .args(self.skopeo_tls_args(""));
        creds_args(&mut cmd, creds, "");
        cmd.arg(format!("docker://{}/{repo_tag}", self.addr()));
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(&out.stdout))
        ))
    }

    /// `skopeo inspect` (parsed): the registry's own digest for the tag.
    pub fn skopeo_reported_digest(&self, repo_tag: &str, creds: Option<&str>) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect").args(self.skopeo_tls_args(""));
        creds_args(&mut cmd, creds, "");
        cmd.arg(format!("docker://{}/{repo_tag}", self.addr()));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Digest"].as_str().unwrap().to_string()
    }

    /// `skopeo copy` to a dir: (re)verifies every blob digest.
    pub fn skopeo_copy_ok(&self, repo_tag: &str, creds: Option<&str>) {
        let dest = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("skopeo");
        cmd.arg("copy").args(self.skopeo_tls_args("src-"));
        creds_args(&mut cmd, creds, "src-");
        cmd.arg(format!("docker://{}/{repo_tag}", self.addr()))
            .arg(format!("dir:{}", dest.path().display()));
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dest.path().join("manifest.json").exists());
    }

    /// The digests of the layers of the manifest under `repo_tag`, as
    /// `skopeo inspect --raw` reads it.
    pub fn layer_digests(&self, repo_tag: &str) -> Vec<String> {
        let out = Command::new("skopeo")
            .args(["inspect", "--raw"])
            .args(self.skopeo_tls_args(""))
            .arg(format!("docker://{}/{repo_tag}", self.addr()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    }

    /// Full verification after a successful push.
    pub fn verify(&self, repo_tag: &str, digest: &str, creds: Option<&str>) {
        assert_eq!(
            self.skopeo_manifest_digest(repo_tag, creds).unwrap(),
            digest
        );
        assert_eq!(self.skopeo_reported_digest(repo_tag, creds), digest);
        self.skopeo_copy_ok(repo_tag, creds);
    }

    /// True when the tag does not exist (or cannot be read).
    pub fn tag_absent(&self, repo_tag: &str, creds: Option<&str>) -> bool {
        self.skopeo_manifest_digest(repo_tag, creds).is_err()
    }
}

fn creds_args(cmd: &mut Command, creds: Option<&str>, prefix: &str) {
    match creds {
        Some(c) => cmd.arg(format!("--{prefix}creds={c}")),
        None => cmd.arg(format!("--{prefix}no-creds")),
    };
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Deterministic incompressible bytes (xorshift), so gzip can't shrink big layers.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Build a one-layer OCI image into `dir`. `extra` bytes of noise make the
/// layer big (for chunking tests).
pub fn build_image(dir: &Path, label: &str, extra: usize) -> PushImage {
    let mut files = vec![(
        "hello.txt".to_string(),
        format!("hello from {label}\n").into_bytes(),
    )];
    if extra > 0 {
        files.push((
            "noise.bin".to_string(),
            noise(label.len() as u64 + 7, extra),
        ));
    }
    build_image_of(dir, label, &files)
}

/// A one-layer OCI image whose layer holds exactly these regular files
/// (mode 0644), in this order, with no directory entries at all.
pub fn build_image_of(dir: &Path, label: &str, files: &[(String, Vec<u8>)]) -> PushImage {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        b.finish().unwrap();
    }
    let diff_id = sha256_hex(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let layer_digest = sha256_hex(&layer);
    let layer_path = dir.join(format!("{label}-layer.tar.gz"));
    std::fs::write(&layer_path, &layer).unwrap();

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/hello"] , "Labels": { "test": label } },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "dockless test" }]
    }))
    .unwrap();
    let config_digest = sha256_hex(&config);
    let config_path = dir.join(format!("{label}-config.json"));
    std::fs::write(&config_path, &config).unwrap();

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .unwrap();

    PushImage {
        manifest,
        manifest_media_type: OCI_MANIFEST.into(),
        config: LocalBlob {
            digest: config_digest,
            size: config.len() as u64,
            media_type: "application/vnd.oci.image.config.v1+json".into(),
            path: config_path,
            source: None,
            mount_from: vec![],
        },
        layers: vec![LocalBlob {
            digest: layer_digest,
            size: layer.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            path: layer_path,
            source: None,
            mount_from: vec![],
        }],
    }
}

/// Same image, with every blob offered for mounting from `from`.
pub fn with_mount_from(img: &PushImage, from: &str) -> PushImage {
    let mut i = img.clone();
    i.config.mount_from = vec![from.into()];
    for l in &mut i.layers {
        l.mount_from = vec![from.into()];
    }
    i
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn all_digests(img: &PushImage) -> Vec<String> {
    let mut v: Vec<String> = std::iter::once(&img.config)
        .chain(img.layers.iter())
        .map(|b| b.digest.clone())
        .collect();
    v.sort();
    v
}

/// Write a docker config.json into a new dir and point DOCKER_CONFIG at it.
/// Caller must hold [`env_lock`].
pub fn docker_config(json: serde_json::Value) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("config.json"), json.to_string()).unwrap();
    std::env::set_var("DOCKER_CONFIG", d.path());
    d
}

/// The usual start of an anonymous push test: tracing, the env lock, an
/// empty docker config and a plain-HTTP registry.
pub async fn anonymous_registry() -> (
    tokio::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    Registry,
) {
    init_tracing();
    let g = env_lock().await;
    let cfg = docker_config(serde_json::json!({}));
    (g, cfg, Registry::start(RegistryCfg::default()))
}

pub fn basic_b64(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// The shared push scenario: first push uploads everything and verifies with
/// skopeo; a repeat push uploads nothing; a push to another repository of the
/// same registry mounts every blob.
pub async fn push_scenario(
    reg: &Registry,
    opts: &dockless::remote::Options,
    creds: Option<&str>,
    label: &str,
) {
    let work = tempfile::tempdir().unwrap();
    let img = build_image(work.path(), label, 0);

    let target =
        dockless::name::Reference::parse_tag(&format!("{}/team/{label}:v1", reg.addr())).unwrap();
    let out = dockless::remote::push(&img, &target, opts)
        .await
        .expect("first push");
    assert_eq!(sorted(out.uploaded.clone()), all_digests(&img));
    assert!(out.mounted.is_empty() && out.skipped.is_empty());
    reg.verify(&format!("team/{label}:v1"), &out.manifest_digest, creds);

    let again = dockless::remote::push(&img, &target, opts)
        .await
        .expect("second push");
    assert!(
        again.uploaded.is_empty(),
        "second push uploaded {:?}",
        again.uploaded
    );
    assert!(again.mounted.is_empty());
    assert_eq!(sorted(again.skipped.clone()), all_digests(&img));
    assert_eq!(again.manifest_digest, out.manifest_digest);

    let other =
        dockless::name::Reference::parse_tag(&format!("{}/other/{label}:v2", reg.addr())).unwrap();
    let mounted = dockless::remote::push(
        &with_mount_from(&img, &format!("team/{label}")),
        &other,
        opts,
    )
    .await
    .expect("push to second repo");
    assert!(
        mounted.uploaded.is_empty(),
        "expected mounts, uploaded {:?}",
        mounted.uploaded
    );
    assert_eq!(sorted(mounted.mounted.clone()), all_digests(&img));
    reg.verify(
        &format!("other/{label}:v2"),
        &mounted.manifest_digest,
        creds,
    );
}
