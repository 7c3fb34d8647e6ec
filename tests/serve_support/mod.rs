//! Helpers for the `dockless serve` tests: the real binary with a temp
//! config, a tiny HTTP/1.1 client, signed GitHub-shaped deliveries built
//! from testdata/webhooks, and a real git repository with a merge commit.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-webhook-secret";
pub const REPO: &str = "acme/shop";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GitHub fixture from testdata/webhooks.
pub fn fixture(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/webhooks")
        .join(name);
    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
}

/// The merged-PR fixture pointed at a commit.
pub fn merged_pr(merge_sha: &str, head_sha: &str) -> Value {
    let mut v = fixture("pull_request.closed.merged.json");
    v["pull_request"]["merge_commit_sha"] = merge_sha.into();
    v["pull_request"]["head"]["sha"] = head_sha.into();
    v
}

pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{e}"))
}

/// `http`, but a refused, reset or unanswered request is an Err (for
/// tests that kill the server under its clients).
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, String> {
    try_http_within(addr, method, path, headers, body, Duration::from_secs(120))
}

/// `try_http`, giving up on the answer after `limit` (GitHub waits 10 s).
pub fn try_http_within(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    limit: Duration,
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(limit)).map_err(|e| e.to_string())?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())
        .map_err(|e| format!("sending the request: {e}"))?;
    // The server may answer (401) before reading a large body and close.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Reply { status, body })
}

pub fn get(addr: &str, path: &str) -> Reply {
    http(addr, "GET", path, &[], b"")
}

/// A delivery as GitHub sends it: JSON body, event, delivery id, signature.
pub fn deliver(addr: &str, event: &str, delivery: &str, payload: &Value) -> Reply {
    let body = serde_json::to_vec(payload).unwrap();
    deliver_raw(
        addr,
        event,
        delivery,
        "application/json",
        &body,
        Some(SECRET),
    )
}

pub fn deliver_raw(
    addr: &str,
    event: &str,
    delivery: &str,
    content_type: &str,
    body: &[u8],
    secret: Option<&str>,
) -> Reply {
    let limit = Duration::from_secs(120);
    try_deliver_raw(addr, event, delivery, content_type, body, secret, limit)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A signed JSON delivery that may fail to get an answer.
pub fn try_deliver(
    addr: &str,
    event: &str,
    delivery: &str,
    payload: &Value,
) -> Result<Reply, String> {
    let body = serde_json::to_vec(payload).unwrap();
    try_deliver_raw(
        addr,
        event,
        delivery,
        "application/json",
        &body,
        Some(SECRET),
        Duration::from_secs(120),
    )
}

/// A delivery that may fail to get an answer within `limit`.
pub fn try_deliver_raw(
    addr: &str,
    event: &str,
    delivery: &str,
    content_type: &str,
    body: &[u8],
    secret: Option<&str>,
    limit: Duration,
) -> Result<Reply, String> {
    let sig = secret.map(|s| dockless::serve::webhook::sign(s.as_bytes(), body));
    let mut headers = vec![
        ("Content-Type", content_type),
        ("X-GitHub-Event", event),
        ("X-GitHub-Delivery", delivery),
        ("User-Agent", "GitHub-Hookshot/0000000"),
        ("X-GitHub-Hook-ID", "31337"),
    ];
    if let Some(sig) = &sig {
        headers.push(("X-Hub-Signature-256", sig.as_str()));
    }
    try_http_within(addr, "POST", "/hooks/github", &headers, body, limit)
}

/// A running `dockless serve`; killed on drop.
pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub config: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    /// Extra environment for the process (set before `spawn`).
    pub env: Vec<(String, String)>,
    /// The process's working folder, when not the test's.
    pub cwd: Option<PathBuf>,
}

pub struct ServerCfg<'a> {
    pub registry: String,
    pub clone_url: String,
    pub max_builds: usize,
    pub delay_ms: Option<u64>,
    pub extra: &'a str,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
}

impl ServerCfg<'static> {
    /// Builds from `clone_url` and pushes to `registry`, one build at a time.
    pub fn new(registry: String, clone_url: String) -> Self {
        ServerCfg {
            registry,
            clone_url,
            max_builds: 1,
            delay_ms: None,
            extra: "",
            env: Vec::new(),
        }
    }

    /// A server whose builds fail fast: the clone URL and registry lead nowhere.
    pub fn unbuildable(dir: &Path) -> Self {
        let missing = format!("file://{}/missing-repo", dir.display());
        ServerCfg::new("127.0.0.1:9".into(), missing)
    }
}

impl Server {
    /// Writes the config into `dir` and starts the server.
    pub fn start(dir: &Path, cfg: &ServerCfg<'_>) -> Server {
        Server::start_with(dir, cfg, false)
    }

    /// As `start`, but the config names `state_dir = "state"` and the
    /// server runs in `dir` with `--config dockless.toml`, as a user starts it.
    pub fn start_relative(dir: &Path, cfg: &ServerCfg<'_>) -> Server {
        Server::start_with(dir, cfg, true)
    }

    fn start_with(dir: &Path, cfg: &ServerCfg<'_>, relative: bool) -> Server {
        let port = free_port();
        let state = dir.join("state");
        let config = dir.join("dockless.toml");
        let state_text = if relative {
            "state".to_string()
        } else {
            state.display().to_string()
        };
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nregistry = \"{}\"\ninsecure_registry = true\nstate_dir = \"{}\"\nbranch = \"develop\"\nmax_concurrent_builds = {}\n{}\n[[repos]]\nfull_name = \"{REPO}\"\nclone_url = \"{}\"\n",
                cfg.registry,
                state_text,
                cfg.max_builds,
                cfg.extra,
                cfg.clone_url
            ),
        )
        .unwrap();
        let mut s = Server {
            child: None,
            addr: format!("127.0.0.1:{port}"),
            config: if relative {
                "dockless.toml".into()
            } else {
                config
            },
            state,
            log: dir.join("serve.log"),
            env: cfg.env.clone(),
            cwd: relative.then(|| dir.to_path_buf()),
        };
        s.spawn(cfg.delay_ms);
        s
    }

    /// (Re)starts the process with the same config.
    pub fn spawn(&mut self, delay_ms: Option<u64>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dockless"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("DOCKLESS_WEBHOOK_SECRET", SECRET)
            .env("DOCKLESS_LOG", "info")
            .env_remove("SOURCE_DATE_EPOCH")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match delay_ms {
            Some(ms) => cmd.env("DOCKLESS_TEST_BUILD_DELAY_MS", ms.to_string()),
            None => cmd.env_remove("DOCKLESS_TEST_BUILD_DELAY_MS"),
        };
        // An empty value removes the variable (DOCKLESS_LOG, to see the default).
        for (k, v) in &self.env {
            match v.is_empty() {
                true => cmd.env_remove(k),
                false => cmd.env(k, v),
            };
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        self.child = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect(&self.addr).is_ok() && get(&self.addr, "/healthz").status == 200 {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockless serve exited with {st}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "server did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A memory figure of the server process from /proc/PID/status, in
    /// KiB: `VmRSS` (now) or `VmHWM` (the peak so far).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.child.as_ref().expect("server running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn sigterm(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().unwrap();
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("server did not exit after SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls GET /builds/<id> until `done` says so.
    pub fn wait_build(&self, id: i64, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let r = get(&self.addr, &format!("/builds/{id}"));
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "build {id} still {v}\nserver log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_finished(&self, id: i64, timeout: Duration) -> Value {
        self.wait_build(id, timeout, |v| {
            matches!(v["status"].as_str(), Some("succeeded") | Some("failed"))
        })
    }

    /// Delivers a merged PR of `sha` (delivery `delivery-<sha>`), which
    /// must be accepted, and waits for its build to end: its id and state.
    pub fn build_merged(&self, sha: &str) -> (i64, Value) {
        let r = deliver(
            &self.addr,
            "pull_request",
            &format!("delivery-{sha}"),
            &merged_pr(sha, sha),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        let id = r.json()["build_id"].as_i64().unwrap();
        (id, self.wait_finished(id, Duration::from_secs(180)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Dana")
        .env("GIT_AUTHOR_EMAIL", "dana@example.com")
        .env("GIT_COMMITTER_NAME", "Lee")
        .env("GIT_COMMITTER_EMAIL", "lee@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A repository whose `develop` has the api service, and a feature branch
/// adding `worker`, an AMI entry and `extra` bytes of data, merged with a
/// merge commit. The PR's head alone has no merge: only the merge commit
/// has both services at their final versions.
pub struct GitRepo {
    pub dir: PathBuf,
    pub merge_sha: String,
    pub head_sha: String,
}

impl GitRepo {
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    pub fn create(parent: &Path) -> GitRepo {
        let dir = parent.join("shop");
        std::fs::create_dir_all(dir.join("api")).unwrap();
        git(&dir, &["init", "-q", "-b", "develop"]);
        std::fs::write(
            dir.join("api/Dockerfile"),
            "FROM scratch\nCOPY message.txt /srv/message.txt\nCMD [\"/srv/app\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("api/message.txt"), "api v1\n").unwrap();
        std::fs::write(
            dir.join("image.json"),
            r#"{"service_name": "api", "version": "1.3.0", "type": "Docker"}"#,
        )
        .unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-qm", "api service"]);
        git(&dir, &["checkout", "-qb", "feature/worker"]);
        std::fs::create_dir_all(dir.join("worker")).unwrap();
        std::fs::write(
            dir.join("worker/Dockerfile"),
            "FROM scratch\nCOPY . /opt/worker/\nENTRYPOINT [\"/opt/worker/run\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("worker/run"), "#!/bin/sh\necho work\n").unwrap();
        std::fs::write(
            dir.join("image.json"),
            r#"{"images": [
  {"service_name": "api", "version": "1.4.0", "type": "docker"},
  {"service_name": "worker", "version": "0.1.0", "type": "OCI"},
  {"service_name": "vm-base", "version": "2024.11", "type": "AMI"}
]}"#,
        )
        .unwrap();
        git(&dir, &["add", "."]);
        git(&dir, &["commit", "-qm", "worker service"]);
        let head_sha = git(&dir, &["rev-parse", "HEAD"]);
        git(&dir, &["checkout", "-q", "develop"]);
        // A change on develop after the branch point: only the merge has it.
        std::fs::write(dir.join("api/message.txt"), "api v2\n").unwrap();
        git(&dir, &["commit", "-qam", "api message"]);
        git(
            &dir,
            &[
                "merge",
                "-q",
                "--no-ff",
                "-m",
                "Merge pull request #12",
                "feature/worker",
            ],
        );
        let merge_sha = git(&dir, &["rev-parse", "HEAD"]);
        GitRepo {
            dir,
            merge_sha,
            head_sha,
        }
    }

    /// Lets `edit` change the work tree, commits everything on `develop`
    /// (symlinks as symlinks) and returns the commit's id.
    pub fn commit(&self, message: &str, edit: impl FnOnce(&Path)) -> String {
        edit(&self.dir);
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-qm", message]);
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    /// Commits api 3.0.0 with busybox (from busybox-static) and a RUN step
    /// that prints `said-by-the-step` and writes /srv/made; returns its id.
    pub fn commit_run_step(&self) -> String {
        let busybox = std::fs::read("/bin/busybox").expect("busybox-static is installed");
        self.commit("a RUN step", |dir| {
            use std::os::unix::fs::PermissionsExt as _;
            let bin = dir.join("api/busybox");
            std::fs::write(&bin, &busybox).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::write(
                dir.join("api/Dockerfile"),
                "FROM scratch\nCOPY busybox /bin/busybox\n\
                 RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo said-by-the-step; /bin/busybox mkdir -p /srv; echo made > /srv/made\"]\n",
            )
            .unwrap();
            std::fs::write(
                dir.join("image.json"),
                r#"{"service_name": "api", "version": "3.0.0", "type": "Docker"}"#,
            )
            .unwrap();
        })
    }

    /// Adds `n` commits on `develop`, each building two images whose
    /// versions name the commit: `api:2.0.K` and `worker:0.2.K` (K from
    /// `first`). Returns their ids in order.
    pub fn add_commits(&self, first: usize, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for k in first..first + n {
            std::fs::write(self.dir.join("api/message.txt"), format!("api build {k}\n")).unwrap();
            std::fs::write(
                self.dir.join("image.json"),
                format!(
                    r#"[{{"service_name": "api", "version": "2.0.{k}", "type": "Docker"}},
  {{"service_name": "worker", "version": "0.2.{k}", "type": "OCI"}}]"#
                ),
            )
            .unwrap();
            git(&self.dir, &["commit", "-qam", &format!("release {k}")]);
            out.push(git(&self.dir, &["rev-parse", "HEAD"]));
        }
        out
    }
}
