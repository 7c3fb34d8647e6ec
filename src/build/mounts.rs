//! `RUN --mount`: each mount's values expanded and checked ([`Planned`],
//! with its part of the step's cache key) before the step's root exists,
//! then made ready for the sandbox ([`Builder::mount_ready`]).
//!
//! - `cache`: a folder `<cache>/run-cache/<sha256(id)>` kept between
//!   builds (owner and mode set when it is made, as BuildKit does);
//!   `sharing=locked` holds an exclusive `flock` on `<folder>.lock` for the
//!   step, `shared` a shared one, `private` takes a fresh folder when
//!   another build holds it.
//! - `secret`: from `--secret id=ID,src=FILE|env=VAR`, staged in a 0700
//!   folder outside the cache (a tmpfs when there is one) and removed after
//!   the step; its bytes never reach the key, the history or a log.
//! - `bind`: a stage, an image (their layers as an overlay with a
//!   throwaway upper folder, or a copy) or the context (a staged copy of
//!   what `.dockerignore` lets through); writes are discarded.
//! - `tmpfs`; `ssh` is refused.
//!
//! Mount points the sandbox makes are removed after the step, so no
//! target reaches the layer.

use super::workspace::{ChainLayer, Workspace};
use super::{BaseRef, BuildError, Builder, StageState};
use crate::cache::RUN_CACHE_DIR;
use crate::context::untrusted::excerpt;
use crate::context::EntryKind;
use crate::dockerfile::{CacheSharing, Instruction, MountType, RunMount};
use crate::rootfs::clean;
use crate::sandbox::{Mount, MountKind, TreeRoot};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Where `--secret` takes a secret's bytes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// Parses `id=ID,src=FILE` or `id=ID,env=VAR` (also `type=file|env`,
    /// `source=`), as `docker buildx build --secret`; `id=ID` alone takes
    /// the variable `ID` when it is set, else the file `ID`.
    pub fn parse(text: &str) -> Result<(String, SecretSource), String> {
        let mut id = None;
        let mut kind = None;
        let mut src = None;
        let mut env = None;
        for field in text.split(',').filter(|f| !f.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("--secret {text:?}: {field:?} is not key=value"))?;
            match key.to_ascii_lowercase().as_str() {
                "id" => id = Some(value.to_string()),
                "type" => kind = Some(value.to_string()),
                "src" | "source" => src = Some(value.to_string()),
                "env" => env = Some(value.to_string()),
                _ => {
                    return Err(format!(
                        "--secret {text:?}: unexpected key {key:?} (id, src, env or type)"
                    ))
                }
            }
        }
        let id = id
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("--secret {text:?}: needs id=ID"))?;
        let source = match (kind.as_deref(), src, env) {
            (_, Some(_), Some(_)) => {
                return Err(format!("--secret {text:?}: give src or env, not both"))
            }
            (Some("env"), Some(var), None) | (_, None, Some(var)) => SecretSource::Env(var),
            (Some("file") | None, Some(file), None) => SecretSource::File(file.into()),
            (Some("file"), None, None) => SecretSource::File(id.clone().into()),
            (Some("env"), None, None) => SecretSource::Env(id.clone()),
            (None, None, None) if std::env::var_os(&id).is_some() => SecretSource::Env(id.clone()),
            (None, None, None) => SecretSource::File(id.clone().into()),
            (Some(other), _, _) => {
                return Err(format!(
                    "--secret {text:?}: type must be file or env, not {other:?}"
                ))
            }
        };
        Ok((id, source))
    }

    /// The secret's bytes; an error names where they were looked for, never
    /// what they hold.
    fn read(&self, id: &str) -> Result<Vec<u8>, String> {
        match self {
            SecretSource::File(path) => std::fs::read(path)
                .map_err(|e| format!("secret {id:?}: reading {}: {e}", path.display())),
            SecretSource::Env(var) => std::env::var_os(var)
                .map(std::os::unix::ffi::OsStringExt::into_vec)
                .ok_or_else(|| format!("secret {id:?}: the variable {var} is not set")),
        }
    }
}

/// Container owner and mode: (uid, gid, mode).
type Owner = (u32, u32, u32);

/// What a bind mount shows.
pub(super) enum BindFrom {
    /// A staged copy of (part of) the context.
    Context(PathBuf),
    Layers(Vec<ChainLayer>),
}

/// A mount with its values expanded and checked.
pub(super) enum Planned {
    Cache {
        target: String,
        dir: PathBuf,
        sharing: CacheSharing,
        owner: Owner,
        readonly: bool,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
        owner: Owner,
        /// None: not given to this build and not required, so left out.
        source: Option<SecretSource>,
    },
    Bind {
        target: String,
        source: String,
        readonly: bool,
        from: BindFrom,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

/// What a step's mounts need while it runs: secrets' staging folders and
/// cache locks, released when dropped.
#[derive(Default)]
pub(super) struct Held {
    _secrets: Vec<tempfile::TempDir>,
    _locks: Vec<std::fs::File>,
}

/// The mounts of one step, ready for the sandbox.
pub(super) struct Ready {
    pub mounts: Vec<Mount>,
    /// `NAME=VALUE` of secrets given as variables.
    pub env: Vec<String>,
    pub held: Held,
}

fn number(key: &str, value: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(value, radix).map_err(|_| {
        format!(
            "RUN --mount: {key} must be a number{}, got {:?}",
            if radix == 8 { " in octal" } else { "" },
            excerpt(value)
        )
    })
}

/// Where secrets are staged: a tmpfs when the host has one for us.
fn secret_staging() -> std::io::Result<tempfile::TempDir> {
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
        Some(std::env::temp_dir()),
    ];
    let mut last = None;
    for dir in candidates.into_iter().flatten() {
        match tempfile::Builder::new()
            .prefix("dockless-secret-")
            .tempdir_in(&dir)
        {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no folder for secrets")))
}

impl Builder<'_> {
    /// The stages and images a RUN's bind mounts name with `from=`, for the plan.
    pub(super) fn mount_bases(
        &self,
        index: usize,
        ins: &Instruction,
        mounts: &[RunMount],
    ) -> Result<Vec<BaseRef>, BuildError> {
        mounts
            .iter()
            .filter(|m| m.kind == MountType::Bind)
            .filter_map(|m| m.from.as_deref().filter(|f| !f.is_empty()))
            .map(|from| self.base_ref(ins.line, from, index, "RUN --mount from="))
            .collect()
    }

    /// `RUN --mount=type=ssh` fails before anything runs.
    pub(super) fn check_mounts(
        &self,
        ins: &Instruction,
        mounts: &[RunMount],
    ) -> Result<(), BuildError> {
        for m in mounts {
            if m.kind == MountType::Ssh {
                return Err(self.fail(
                    ins.line,
                    format!(
                        "RUN --mount={}: type=ssh is not supported yet; fetch what needs SSH in \
                         the context, or pass a token with --mount=type=secret",
                        excerpt(&m.spec)
                    ),
                ));
            }
            if m.kind == MountType::Cache && m.from.is_some() {
                return Err(self.fail(
                    ins.line,
                    format!(
                        "RUN --mount={}: a cache mount with from= is not supported yet",
                        excerpt(&m.spec)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Expands and checks the step's mounts; also their part of the key.
    pub(super) fn plan_mounts(
        &mut self,
        stage: usize,
        state: &StageState,
        line: usize,
        mounts: &[RunMount],
    ) -> Result<(Vec<Planned>, serde_json::Value), BuildError> {
        let mut planned = Vec::new();
        let mut keys = Vec::new();
        for m in mounts {
            let (p, key) = self.plan_mount(stage, state, line, m)?;
            planned.push(p);
            keys.push(key);
        }
        Ok((planned, serde_json::Value::Array(keys)))
    }

    fn plan_mount(
        &mut self,
        stage: usize,
        state: &StageState,
        line: usize,
        m: &RunMount,
    ) -> Result<(Planned, serde_json::Value), BuildError> {
        let lookup = |n: &str| state.lookup(n);
        let expand = |raw: &Option<String>| -> Result<Option<String>, BuildError> {
            raw.as_ref()
                .map(|r| self.expand(line, r, &lookup))
                .transpose()
        };
        let bad = |e: String| self.fail(line, format!("RUN --mount={}: {e}", excerpt(&m.spec)));
        let workdir = state.workdir();
        let target = expand(&m.target)?.map(|t| format!("/{}", clean(&workdir, &t)));
        let owner = |default_mode: u32| -> Result<Owner, BuildError> {
            let num = |key, raw: &Option<String>, radix, default| match expand(raw)? {
                Some(v) => number(key, &v, radix).map_err(bad),
                None => Ok(default),
            };
            Ok((
                num("uid", &m.uid, 10, 0)?,
                num("gid", &m.gid, 10, 0)?,
                num("mode", &m.mode, 8, default_mode)?,
            ))
        };
        let readonly = m.readonly;
        match m.kind {
            MountType::Ssh => Err(bad("type=ssh is not supported yet".into())),
            MountType::Tmpfs => {
                let target = target.unwrap_or_default();
                let size = expand(&m.size)?
                    .map(|s| crate::cache::parse_size(&s.to_ascii_uppercase()).map_err(bad))
                    .transpose()?;
                let key = serde_json::json!({"type": "tmpfs", "target": target, "size": size});
                Ok((Planned::Tmpfs { target, size }, key))
            }
            MountType::Cache => {
                let target = target.unwrap_or_default();
                let id = expand(&m.id)?
                    .filter(|i| !i.is_empty())
                    .unwrap_or(target.clone());
                let owner = owner(0o755)?;
                let sharing = m.sharing.unwrap_or(CacheSharing::Shared);
                let hex = hex::encode(Sha256::digest(id.as_bytes()));
                let dir = self.opts.cache_dir.join(RUN_CACHE_DIR).join(hex);
                let key = serde_json::json!({
                    "type": "cache", "target": target, "id": id,
                    "sharing": format!("{sharing:?}"), "owner": owner,
                    "readonly": readonly == Some(true),
                });
                let readonly = readonly == Some(true);
                Ok((
                    Planned::Cache {
                        target,
                        dir,
                        sharing,
                        owner,
                        readonly,
                    },
                    key,
                ))
            }
            MountType::Secret => {
                let env = expand(&m.env)?.filter(|e| !e.is_empty());
                let id = match expand(&m.id)?.filter(|i| !i.is_empty()) {
                    Some(id) => id,
                    None => target
                        .as_deref()
                        .and_then(|t| t.rsplit('/').next())
                        .unwrap_or_default()
                        .to_string(),
                };
                let target = match (target, &env) {
                    (Some(t), _) => Some(t),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                let owner = owner(0o400)?;
                let source = self.opts.secrets.get(&id).cloned();
                if source.is_none() && m.required == Some(true) {
                    return Err(bad(format!(
                        "the secret {id:?} is required; give it with --secret id={id},src=FILE \
                         (or env=VAR)"
                    )));
                }
                let key = serde_json::json!({
                    "type": "secret", "id": id, "target": target, "env": env,
                    "owner": owner, "given": source.is_some(),
                });
                Ok((
                    Planned::Secret {
                        id,
                        target,
                        env,
                        owner,
                        source,
                    },
                    key,
                ))
            }
            MountType::Bind => {
                let target = target.unwrap_or_default();
                let source = expand(&m.source)?.unwrap_or_default();
                let readonly = readonly != Some(false);
                let (from, origin) = self.bind_from(stage, line, m, &source)?;
                let key = serde_json::json!({
                    "type": "bind", "target": target, "source": clean("", &source),
                    "readonly": readonly, "from": origin,
                });
                let source = match from {
                    // The staged copy holds only the source, as `tree`.
                    BindFrom::Context(_) => STAGED_TREE.to_string(),
                    BindFrom::Layers(_) => source,
                };
                Ok((
                    Planned::Bind {
                        target,
                        source,
                        readonly,
                        from,
                    },
                    key,
                ))
            }
        }
    }

    /// What a bind mount's `from` names, and what its content is for the key.
    fn bind_from(
        &mut self,
        stage: usize,
        line: usize,
        m: &RunMount,
        source: &str,
    ) -> Result<(BindFrom, serde_json::Value), BuildError> {
        let Some(from) = m.from.as_deref().filter(|f| !f.is_empty()) else {
            let (dir, digest) = self.stage_context(line, source)?;
            return Ok((
                BindFrom::Context(dir),
                serde_json::json!({"context": digest}),
            ));
        };
        let image = match self.base_ref(line, from, stage, "RUN --mount from=")? {
            BaseRef::Stage(i) => self.results[i]
                .as_ref()
                .map(|r| r.image.clone())
                .ok_or_else(|| self.fail(line, "internal: a mounted stage was not built first"))?,
            BaseRef::Image(image) => {
                let what = format!("RUN --mount from={from}");
                let key = self.load_image(line, &what, &image, &self.platform.clone())?;
                self.images[&key].image.clone()
            }
            BaseRef::Scratch => {
                return Err(self.fail(line, "RUN --mount from=scratch: scratch has no files"))
            }
        };
        let chain = self.chain_of(&image)?;
        let ids = image.config.rootfs.diff_ids.clone();
        Ok((BindFrom::Layers(chain), serde_json::json!({"layers": ids})))
    }

    /// Copies the context's `source` (what `.dockerignore` lets through) to
    /// a staging folder; the copy and the digest of what it holds.
    fn stage_context(
        &mut self,
        line: usize,
        source: &str,
    ) -> Result<(PathBuf, String), BuildError> {
        let src = if source.is_empty() { "." } else { source };
        let found = self
            .context()?
            .resolve_source(src)
            .map_err(|e| self.fail(line, format!("RUN --mount source={src}: {e}")))?;
        let entry = match found.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(self.fail(
                    line,
                    format!(
                        "RUN --mount source={src}: names {} paths, not one",
                        found.len()
                    ),
                ))
            }
        };
        let mut entries = vec![entry.clone()];
        entries.extend(
            self.context()?
                .walk(&entry)
                .map_err(|e| self.fail(line, format!("RUN --mount source={src}: {e}")))?,
        );
        let dir = self.staging_dir()?;
        let top = dir.join(STAGED_TREE);
        let mut hasher = Sha256::new();
        let mut dirs = Vec::new();
        for e in &entries {
            let rel = e
                .rel
                .strip_prefix(&entry.rel)
                .unwrap_or(&e.rel)
                .trim_start_matches('/');
            let dest = if rel.is_empty() {
                top.clone()
            } else {
                top.join(rel)
            };
            stage_entry(e, &dest).map_err(|err| {
                self.fail(
                    line,
                    format!("RUN --mount source={src}: staging {}: {err}", e.rel),
                )
            })?;
            hasher.update(format!("{rel}\0{:?}\0{:o}\0", e.kind, e.mode));
            if e.kind == EntryKind::Dir {
                dirs.push((dest.clone(), e.mode));
            }
            if e.kind == EntryKind::File {
                let mut file = std::fs::File::open(&dest).map_err(|err| {
                    self.fail(line, format!("RUN --mount source={src}: {}: {err}", e.rel))
                })?;
                std::io::copy(&mut file, &mut hasher).map_err(|err| {
                    self.fail(line, format!("RUN --mount source={src}: {}: {err}", e.rel))
                })?;
            }
        }
        // Folder modes last, so a read-only folder could still be filled.
        for (dir, mode) in dirs.iter().rev() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode))
                .map_err(|e| self.fail(line, format!("RUN --mount source={src}: {e}")))?;
        }
        Ok((dir, format!("sha256:{}", hex::encode(hasher.finalize()))))
    }

    /// The step's mounts ready for the sandbox, made with the workspace.
    pub(super) fn mount_ready(
        &self,
        ws: &mut Workspace,
        planned: &[Planned],
    ) -> Result<Ready, String> {
        let mut ready = Ready {
            mounts: Vec::new(),
            env: Vec::new(),
            held: Held::default(),
        };
        let ensure = |blob: &Path| self.bases.ensure(blob).map_err(|e| e.to_string());
        for p in planned {
            match p {
                Planned::Tmpfs { target, size } => ready.mounts.push(Mount {
                    target: target.clone(),
                    kind: MountKind::Tmpfs {
                        size: *size,
                        mode: 0o1777,
                    },
                }),
                Planned::Cache {
                    target,
                    dir,
                    sharing,
                    owner,
                    readonly,
                } => {
                    let (dir, lock) = cache_folder(ws, dir, *sharing, *owner)?;
                    ready.held._locks.extend(lock);
                    ready.mounts.push(Mount {
                        target: target.clone(),
                        kind: MountKind::Bind {
                            source: dir,
                            readonly: *readonly,
                        },
                    });
                }
                Planned::Secret {
                    id,
                    target,
                    env,
                    owner,
                    source,
                } => {
                    let Some(source) = source else { continue };
                    let bytes = source.read(id)?;
                    if let Some(var) = env {
                        ready
                            .env
                            .push(format!("{var}={}", String::from_utf8_lossy(&bytes)));
                    }
                    if let Some(target) = target {
                        let (staged, file) = stage_secret(ws, id, &bytes, *owner)?;
                        ready.held._secrets.push(staged);
                        ready.mounts.push(Mount {
                            target: target.clone(),
                            kind: MountKind::Bind {
                                source: file,
                                readonly: true,
                            },
                        });
                    }
                }
                Planned::Bind {
                    target,
                    source,
                    readonly,
                    from,
                } => {
                    let root = match from {
                        BindFrom::Context(dir) => {
                            for entry in walkdir::WalkDir::new(dir) {
                                let entry = entry.map_err(|e| e.to_string())?;
                                ws.give_to_root(entry.path())?;
                            }
                            TreeRoot::Dir(dir.clone())
                        }
                        BindFrom::Layers(chain) => ws.tree(chain, &ensure)?,
                    };
                    ready.mounts.push(Mount {
                        target: target.clone(),
                        kind: MountKind::Tree {
                            root,
                            source: source.clone(),
                            readonly: *readonly,
                        },
                    });
                }
            }
        }
        Ok(ready)
    }
}

/// The name of a context bind's staged source in its staging folder.
const STAGED_TREE: &str = "tree";

/// A cache mount's folder (made, owned and locked as its sharing says).
fn cache_folder(
    ws: &mut Workspace,
    dir: &Path,
    sharing: CacheSharing,
    owner: Owner,
) -> Result<(PathBuf, Option<std::fs::File>), String> {
    use rustix::fs::{flock, FlockOperation};
    let parent = dir.parent().unwrap_or(dir);
    ws.make_dir(parent)?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // The lock file's mtime says when the cache was last used (for prune).
    let _ = lock.set_modified(std::time::SystemTime::now());
    let locked = match sharing {
        CacheSharing::Shared => flock(&lock, FlockOperation::LockShared).is_ok(),
        CacheSharing::Locked => flock(&lock, FlockOperation::LockExclusive).is_ok(),
        CacheSharing::Private => flock(&lock, FlockOperation::NonBlockingLockExclusive).is_ok(),
    };
    if !locked && sharing == CacheSharing::Private {
        // Another build has it: this step gets a cache of its own.
        let fresh = ws.scratch_dir()?.join("cache");
        ws.own(&fresh, true, owner)?;
        return Ok((fresh, None));
    }
    if !dir.is_dir() {
        ws.own(dir, true, owner)?;
    }
    Ok((dir.to_path_buf(), Some(lock)))
}

/// Writes a secret into a fresh 0700 folder and gives it its owner and mode.
fn stage_secret(
    ws: &Workspace,
    id: &str,
    bytes: &[u8],
    owner: Owner,
) -> Result<(tempfile::TempDir, PathBuf), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let staged = secret_staging().map_err(|e| format!("secret {id:?}: staging: {e}"))?;
    let file = staged.path().join("secret");
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .map_err(|e| format!("secret {id:?}: staging: {e}"))?;
    out.write_all(bytes)
        .map_err(|e| format!("secret {id:?}: staging: {e}"))?;
    drop(out);
    ws.give_to_root(&file)?;
    ws.own(&file, false, owner)?;
    Ok((staged, file))
}

/// Copies one context entry to `dest` (its folder made first).
fn stage_entry(e: &crate::context::ContextEntry, dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match &e.kind {
        EntryKind::Dir => std::fs::create_dir_all(dest)?,
        EntryKind::File => {
            std::fs::copy(&e.path, dest)?;
        }
        EntryKind::Symlink(to) => std::os::unix::fs::symlink(to, dest)?,
        EntryKind::Fifo | EntryKind::Socket => {
            std::fs::write(dest, b"")?;
        }
    }
    if !matches!(e.kind, EntryKind::Symlink(_) | EntryKind::Dir) {
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(e.mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::SecretSource;

    #[test]
    fn secret_flags_read_as_buildx_reads_them() {
        let parse = |t: &str| SecretSource::parse(t);
        assert_eq!(
            parse("id=tok,src=/run/tok").unwrap(),
            ("tok".into(), SecretSource::File("/run/tok".into()))
        );
        assert_eq!(
            parse("id=tok,env=TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("type=env,id=tok,source=TOKEN").unwrap(),
            ("tok".into(), SecretSource::Env("TOKEN".into()))
        );
        assert_eq!(
            parse("type=file,id=npmrc").unwrap(),
            ("npmrc".into(), SecretSource::File("npmrc".into()))
        );
        assert!(parse("src=/x").unwrap_err().contains("needs id=ID"));
        assert!(parse("id=a,src=f,env=V").unwrap_err().contains("not both"));
        assert!(parse("id=a,kind=x").unwrap_err().contains("unexpected key"));
        assert!(parse("id=a,type=ssh").unwrap_err().contains("file or env"));
    }
}
