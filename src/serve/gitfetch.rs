//! Fetching one commit of a repository with the `git` binary: a shallow
//! fetch of exactly that commit into a per-repository cache, then its tree
//! written into a fresh folder through a private index. No hook from the
//! repository ever runs, no submodule is fetched, and git never prompts.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::die_with_parent;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0:?} is not a commit id")]
    BadCommit(String),
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("git {what} failed: {stderr}")]
    Git { what: String, stderr: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

// git says why it failed only in its stderr (its exit codes do not tell
// causes apart), so the two checks below read git's own phrases; failures of
// our own file operations carry their `io::Error` instead.
impl FetchError {
    /// The git server could not be reached or dropped the connection: worth
    /// fetching again later (a missing commit or a bad URL is not).
    pub fn is_unavailable(&self) -> bool {
        let FetchError::Git { what, stderr } = self else {
            return false;
        };
        let stderr = stderr.to_ascii_lowercase();
        what == "fetch"
            && [
                "could not resolve host",
                "temporary failure in name resolution",
                "connection refused",
                "couldn't connect to server",
                "failed to connect",
                "unable to connect",
                "timed out",
                "connection reset",
                "the remote end hung up unexpectedly",
                "early eof",
                "rpc failed",
            ]
            .iter()
            .any(|needle| stderr.contains(needle))
    }

    /// git could not write because the disk (or the quota) is full: its
    /// message for ENOSPC or EDQUOT.
    pub fn git_found_disk_full(&self) -> bool {
        let FetchError::Git { stderr, .. } = self else {
            return false;
        };
        let stderr = stderr.to_ascii_lowercase();
        ["no space left on device", "disk quota exceeded"]
            .iter()
            .any(|needle| stderr.contains(needle))
    }
}

/// A git command that cannot run repository hooks or prompt for credentials.
fn git(git_dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-c")
        .arg("core.hooksPath=/dev/null")
        .arg("-c")
        .arg("protocol.file.allow=always")
        .arg("-c")
        .arg("submodule.recurse=false")
        .arg("-c")
        .arg("fetch.recurseSubmodules=false")
        .arg("-c")
        .arg("core.fsmonitor=false")
        .arg("--git-dir")
        .arg(git_dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(std::process::Stdio::null());
    // A fetch never outlives a server killed with -9 to race the fetch of
    // the build it re-queues (its locks are cleared at start-up, see
    // [`clear_stale_locks`]).
    die_with_parent(&mut cmd);
    cmd
}

/// Removes the `*.lock` files a killed git left in the repository caches
/// under `cache_root`. Only for start-up, when no fetch of ours can be
/// running (one server per state_dir, and its git children died with it).
pub fn clear_stale_locks(cache_root: &Path) -> usize {
    let stale = walkdir::WalkDir::new(cache_root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".lock"));
    let mut removed = 0;
    for entry in stale {
        if std::fs::remove_file(entry.path()).is_ok() {
            tracing::warn!(
                "removed {} left by an interrupted git",
                entry.path().display()
            );
            removed += 1;
        }
    }
    removed
}

fn run(mut cmd: Command, what: &str) -> Result<(), FetchError> {
    let out = cmd.output().map_err(FetchError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FetchError::Git {
            what: what.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn is_commit(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cache folder for a repository: `<cache_root>/<owner>__<name>.git`.
pub fn cache_path(cache_root: &Path, full_name: &str) -> PathBuf {
    let safe = crate::files::safe_file_name(full_name);
    cache_root.join(format!("{}.git", safe.trim_start_matches('.')))
}

/// Fetches `commit` from `url` into the bare cache at `cache` (callers
/// serialize fetches into one cache), then writes its files into `dest`,
/// which must not exist yet.
pub fn checkout(url: &str, commit: &str, cache: &Path, dest: &Path) -> Result<(), FetchError> {
    if !is_commit(commit) {
        return Err(FetchError::BadCommit(commit.to_string()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io { path, source }
    };
    if !cache.join("HEAD").is_file() {
        std::fs::create_dir_all(cache).map_err(io(cache))?;
        let mut init = git(cache);
        init.arg("init").arg("--bare").arg("--quiet").arg(cache);
        run(init, "init")?;
    }
    let mut fetch = git(cache);
    fetch
        .arg("fetch")
        .arg("--quiet")
        .arg("--no-tags")
        .arg("--no-recurse-submodules")
        .arg("--depth=1")
        .arg("--")
        .arg(url)
        .arg(commit);
    run(fetch, "fetch")?;

    std::fs::create_dir_all(dest).map_err(io(dest))?;
    // A private index per checkout, so concurrent builds never share one.
    let index = dest.with_extension("index");
    let mut read_tree = git(cache);
    read_tree
        .env("GIT_INDEX_FILE", &index)
        .arg("read-tree")
        .arg(commit);
    run(read_tree, "read-tree")?;
    let mut co = git(cache);
    co.env("GIT_INDEX_FILE", &index)
        .arg("--work-tree")
        .arg(dest)
        .arg("checkout-index")
        .arg("--all")
        .arg("--force")
        .arg("--quiet");
    let res = run(co, "checkout-index");
    let _ = std::fs::remove_file(&index);
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A repository under `dir/src` with one commit of `a.txt` = "one";
    /// returns its folder and that commit.
    fn repo_with_one_commit(dir: &Path) -> (PathBuf, String) {
        let src = dir.join("src");
        std::fs::create_dir(&src).unwrap();
        sh(&src, &["init", "-q", "-b", "main"]);
        std::fs::write(src.join("a.txt"), "one").unwrap();
        sh(&src, &["add", "."]);
        sh(&src, &["commit", "-qm", "one"]);
        let first = sh(&src, &["rev-parse", "HEAD"]);
        (src, first)
    }

    #[test]
    fn fetches_the_named_commit_without_running_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let (src, first) = repo_with_one_commit(dir.path());
        std::fs::write(src.join("a.txt"), "two").unwrap();
        std::fs::create_dir(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/b.txt"), "b").unwrap();
        sh(&src, &["add", "."]);
        sh(&src, &["commit", "-qm", "two"]);
        let url = format!("file://{}", src.display());
        let cache = cache_path(&dir.path().join("git"), "acme/app");
        // A hook in the cache must not run either.
        let out1 = dir.path().join("w1");
        checkout(&url, &first, &cache, &out1).unwrap();
        assert_eq!(std::fs::read_to_string(out1.join("a.txt")).unwrap(), "one");
        assert!(!out1.join("sub").exists());
        let hooks = cache.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        let marker = dir.path().join("hook-ran");
        let hook = hooks.join("post-checkout");
        std::fs::write(&hook, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let second = sh(&src, &["rev-parse", "HEAD"]);
        let out2 = dir.path().join("w2");
        checkout(&url, &second, &cache, &out2).unwrap();
        assert_eq!(std::fs::read_to_string(out2.join("a.txt")).unwrap(), "two");
        assert_eq!(
            std::fs::read_to_string(out2.join("sub/b.txt")).unwrap(),
            "b"
        );
        assert!(!marker.exists());
        assert!(!out2.join(".git").exists());
        assert!(matches!(
            checkout(&url, "--upload-pack=x", &cache, &dir.path().join("w3")),
            Err(FetchError::BadCommit(_))
        ));
        let missing = "0123456789012345678901234567890123456789";
        assert!(checkout(&url, missing, &cache, &dir.path().join("w4")).is_err());
    }

    #[test]
    fn a_lock_left_by_a_killed_git_is_cleared_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let (src, first) = repo_with_one_commit(dir.path());
        std::fs::write(src.join("a.txt"), "two").unwrap();
        sh(&src, &["commit", "-qam", "two"]);
        let second = sh(&src, &["rev-parse", "HEAD"]);
        let url = format!("file://{}", src.display());
        let root = dir.path().join("git");
        let cache = cache_path(&root, "acme/app");
        checkout(&url, &first, &cache, &dir.path().join("w1")).unwrap();
        // What a git fetch killed with -9 leaves behind.
        std::fs::write(cache.join("shallow.lock"), "").unwrap();
        let blocked = checkout(&url, &second, &cache, &dir.path().join("w2"));
        assert!(
            matches!(&blocked, Err(FetchError::Git { stderr, .. }) if stderr.contains("shallow.lock")),
            "{blocked:?}"
        );
        assert_eq!(clear_stale_locks(&root), 1);
        checkout(&url, &second, &cache, &dir.path().join("w3")).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("w3/a.txt")).unwrap(),
            "two"
        );
    }

    #[test]
    fn a_git_child_dies_with_the_thread_that_started_it() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut sleeper = Command::new("sleep");
        sleeper.arg("30");
        die_with_parent(&mut sleeper);
        let started = std::time::Instant::now();
        let mut child = std::thread::spawn(move || sleeper.spawn().unwrap())
            .join()
            .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
