//! Build context: resolution of COPY/ADD sources that can never escape the
//! context directory, even through symlinks, with `.dockerignore`
//! (`dockerignore`) applied, and files read inside a root (`untrusted`).

mod dockerignore;
mod error;
pub mod untrusted;

#[cfg(test)]
mod tests;

pub use dockerignore::{DockerIgnore, IGNORE_MAX_BYTES, IGNORE_MAX_PATTERNS};
pub use error::ContextError;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use dockerignore::{compile_glob, translate_pattern};
use error::io_err;
use untrusted::{is_missing, FileRef, Outward, WalkError, Walked};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(PathBuf),
    /// A named pipe: copied as one, as BuildKit's context transfer keeps it.
    Fifo,
    /// A Unix socket: BuildKit's context transfer (fsutil `stat.go` `mkstat`
    /// clears the socket bit) turns it into an empty regular file with the
    /// socket's permissions.
    Socket,
}

#[derive(Debug, Clone)]
pub struct ContextEntry {
    pub rel: String,
    pub path: PathBuf,
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime: i64,
}

impl ContextEntry {
    /// None for devices, which a rootless build cannot make.
    fn from_metadata(
        rel: String,
        path: PathBuf,
        md: &fs::Metadata,
    ) -> Result<Option<Self>, ContextError> {
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            EntryKind::Symlink(fs::read_link(&path).map_err(|e| io_err(&path, e))?)
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else if ft.is_fifo() {
            EntryKind::Fifo
        } else if ft.is_socket() {
            EntryKind::Socket
        } else {
            return Ok(None);
        };
        Ok(Some(ContextEntry {
            rel,
            path,
            kind,
            mode: md.mode() & 0o7777,
            size: md.size(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            mtime: md.mtime(),
        }))
    }
}

/// Why a lookup found nothing; kept so errors can mention .dockerignore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Miss {
    NotFound,
    Excluded,
}

/// One partially resolved wildcard candidate.
#[derive(Clone)]
struct Cand {
    matched: Vec<String>,
    real: Vec<OsString>,
    links: u32,
}

pub struct BuildContext {
    root: PathBuf,
    ignore: DockerIgnore,
}

impl BuildContext {
    /// Loads `<dockerfile>.dockerignore` beside the Dockerfile if it exists
    /// (BuildKit's rule), else `<root>/.dockerignore`, else nothing. Both are
    /// read as the Dockerfile is (inside its root, unless the user named it),
    /// the second inside the context; regular files of at most 1 MiB.
    pub fn open(root: &Path, dockerfile: Option<&FileRef>) -> Result<BuildContext, ContextError> {
        // Canonical root so that returned paths and prefix checks are exact.
        let root = fs::canonicalize(root).map_err(|e| io_err(root, e))?;
        let md = fs::metadata(&root).map_err(|e| io_err(&root, e))?;
        if !md.is_dir() {
            return Err(ContextError::ContextNotDir { path: root });
        }
        let mut candidates: Vec<FileRef> = Vec::new();
        if let Some(df) = dockerfile {
            candidates.push(df.with_suffix(".dockerignore"));
        }
        candidates.push(FileRef::inside(&root, "the build context", ".dockerignore"));
        let mut ignore = DockerIgnore::default();
        for file in candidates {
            match file.read(IGNORE_MAX_BYTES) {
                Ok(bytes) => {
                    ignore = DockerIgnore::parse(&String::from_utf8_lossy(&bytes), &file.name())?;
                    break;
                }
                Err(e) if e.is_missing() => continue,
                Err(e) => return Err(ContextError::IgnoreFile(e)),
            }
        }
        Ok(BuildContext { root, ignore })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ignore(&self) -> &DockerIgnore {
        &self.ignore
    }

    fn disk_path(&self, real: &[OsString]) -> PathBuf {
        untrusted::join(&self.root, real)
    }

    /// Resolves one COPY/ADD source. The path is cleaned relative to the
    /// root (`..` above the root is refused; "." or "/" is the whole
    /// context), wildcard components are matched against visible entries,
    /// and symlinks anywhere in the path are followed with the root acting as
    /// `/`. Each result has `rel` = the path as matched and `path`/metadata of
    /// the resolved target; results are sorted by `rel`. A wildcard that
    /// matches nothing gives no result, but the folders before the first
    /// wildcard component must exist.
    pub fn resolve_source(&self, src: &str) -> Result<Vec<ContextEntry>, ContextError> {
        if src.is_empty() {
            return Err(ContextError::NotFound {
                src: src.to_string(),
            });
        }
        // Our own clean: unlike Go's, a rooted `/..` is refused, not dropped.
        let mut comps: Vec<&str> = Vec::new();
        for c in src.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if comps.pop().is_none() {
                        return Err(ContextError::OutsideContext {
                            src: src.to_string(),
                        });
                    }
                }
                _ => comps.push(c),
            }
        }

        let mut cands = vec![Cand {
            matched: Vec::new(),
            real: Vec::new(),
            links: 0,
        }];
        let mut wildcard_seen = false;
        let mut saw_excluded = false;
        let last = comps.len().saturating_sub(1);
        for (i, comp) in comps.iter().enumerate() {
            let is_last = i == last;
            let mut next = Vec::new();
            if has_wildcard(comp) {
                wildcard_seen = true;
                let g = compile_glob(&translate_pattern(comp)).map_err(|reason| {
                    ContextError::InvalidSource {
                        src: src.to_string(),
                        component: comp.to_string(),
                        reason,
                    }
                })?;
                for cand in &cands {
                    for name in self.list_dir(&cand.real)? {
                        if !g.is_match(name.to_string_lossy().as_ref()) {
                            continue;
                        }
                        match self.step(cand, &name, is_last, src)? {
                            Ok(c) => next.push(c),
                            Err(m) => saw_excluded |= m == Miss::Excluded,
                        }
                    }
                }
            } else {
                let name = OsString::from(*comp);
                for cand in &cands {
                    match self.step(cand, &name, is_last, src)? {
                        Ok(c) => next.push(c),
                        // Inside a wildcard expansion a missing path just
                        // means this branch doesn't match.
                        Err(m) if wildcard_seen => saw_excluded |= m == Miss::Excluded,
                        Err(Miss::Excluded) => {
                            return Err(ContextError::Excluded {
                                src: src.to_string(),
                            });
                        }
                        Err(Miss::NotFound) => {
                            return Err(ContextError::NotFound {
                                src: src.to_string(),
                            });
                        }
                    }
                }
            }
            cands = next;
        }

        let mut out = Vec::new();
        for cand in cands {
            let path = self.disk_path(&cand.real);
            let md = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(io_err(&path, e)),
            };
            let rel = cand.matched.join("/");
            match ContextEntry::from_metadata(rel, path.clone(), &md)? {
                Some(e) if matches!(e.kind, EntryKind::Symlink(_)) => {
                    // Swapped for a symlink after we resolved it: refuse.
                    continue;
                }
                Some(e) => out.push(e),
                None if wildcard_seen => continue,
                None => {
                    return Err(ContextError::Unsupported {
                        src: src.to_string(),
                        path,
                    });
                }
            }
        }
        // A wildcard that matches nothing is skipped once the folder it
        // searches exists (BuildKit: `AllowEmptyWildcard` in the frontend's
        // `dispatchCopy`, `solver/llbsolver/file/backend.go` `docopy`).
        if out.is_empty() && wildcard_seen {
            return Ok(out);
        }
        if out.is_empty() {
            return Err(if saw_excluded {
                ContextError::Excluded {
                    src: src.to_string(),
                }
            } else {
                ContextError::NotFound {
                    src: src.to_string(),
                }
            });
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    /// Sorted names of a directory given by real components; a vanished or
    /// non-directory path simply has no entries.
    fn list_dir(&self, real: &[OsString]) -> Result<Vec<OsString>, ContextError> {
        let path = self.disk_path(real);
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if is_missing(&e) => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path, e)),
        };
        let mut names = Vec::new();
        for ent in rd {
            names.push(ent.map_err(|e| io_err(&path, e))?.file_name());
        }
        names.sort();
        Ok(names)
    }

    /// Appends one source component to a candidate, following symlinks
    /// inside the context, and applies .dockerignore to what it lands on.
    fn step(
        &self,
        cand: &Cand,
        name: &OsStr,
        is_last: bool,
        src: &str,
    ) -> Result<Result<Cand, Miss>, ContextError> {
        let mut links = cand.links;
        let real = match self.follow(cand.real.clone(), name, &mut links, src)? {
            Ok(r) => r,
            Err(m) => return Ok(Err(m)),
        };
        let path = self.disk_path(&real);
        // lstat, never stat: `real` is symlink-free, so a link here means the
        // tree changed under us and following it could leave the context.
        let md = match fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_symlink() => m,
            Ok(_) => return Ok(Err(Miss::NotFound)),
            Err(e) if is_missing(&e) => return Ok(Err(Miss::NotFound)),
            Err(e) => return Err(io_err(&path, e)),
        };
        if !is_last && !md.is_dir() {
            return Ok(Err(Miss::NotFound));
        }
        // Intermediate directories are not checked: an excluded parent may
        // still hold re-included children, and the final check covers the rest.
        if is_last && !real.is_empty() {
            let rel = os_join(&real);
            if self.ignore.is_excluded(&rel) {
                let visible = md.is_dir() && self.ignore.may_reinclude_below(&rel) && {
                    let probe = ContextEntry::from_metadata(rel, path, &md)?;
                    match probe {
                        Some(p) => !self.walk(&p)?.is_empty(),
                        None => false,
                    }
                };
                if !visible {
                    return Ok(Err(Miss::Excluded));
                }
            }
        }
        let mut matched = cand.matched.clone();
        matched.push(name.to_string_lossy().into_owned());
        Ok(Ok(Cand {
            matched,
            real,
            links,
        }))
    }

    /// Scoped symlink resolution: the context root acts as `/`, so absolute
    /// targets are re-rooted and `..` stops at the root.
    fn follow(
        &self,
        cur: Vec<OsString>,
        name: &OsStr,
        links: &mut u32,
        src: &str,
    ) -> Result<Result<Vec<OsString>, Miss>, ContextError> {
        let excluded = |real: &[OsString]| self.ignore.is_excluded(&os_join(real));
        match untrusted::walk(
            &self.root,
            cur,
            Path::new(name),
            links,
            Outward::Reroot,
            &excluded,
        ) {
            Ok(Walked::Found(real)) => Ok(Ok(real)),
            Ok(Walked::Missing) => Ok(Err(Miss::NotFound)),
            Ok(Walked::Excluded) => Ok(Err(Miss::Excluded)),
            Err(WalkError::Loop) => Err(ContextError::SymlinkLoop {
                src: src.to_string(),
            }),
            // Re-rooting never escapes; kept total rather than panicking.
            Err(WalkError::Escapes) => Err(ContextError::OutsideContext {
                src: src.to_string(),
            }),
            Err(WalkError::Io(path, e)) => Err(io_err(&path, e)),
        }
    }

    /// All non-excluded entries below a resolved directory, depth-first with
    /// siblings sorted by name, symlinks not followed.
    ///
    /// `rel` of each result is `dir.rel` joined with the sub-path, so callers
    /// can strip `dir.rel`; .dockerignore is applied to the real location.
    /// An excluded directory is returned only when something re-included
    /// lives beneath it (the layer needs the parent).
    pub fn walk(&self, dir: &ContextEntry) -> Result<Vec<ContextEntry>, ContextError> {
        if dir.kind != EntryKind::Dir {
            return Ok(Vec::new());
        }
        // Canonicalize so a hand-made entry can't smuggle in an outside path.
        let base = fs::canonicalize(&dir.path).map_err(|e| io_err(&dir.path, e))?;
        let real_base = base
            .strip_prefix(&self.root)
            .map_err(|_| ContextError::NotInContext {
                path: dir.path.clone(),
                root: self.root.clone(),
            })?
            .to_path_buf();
        let real_rel = |sub: &Path| -> String {
            let joined = real_base.join(sub);
            joined.to_string_lossy().into_owned()
        };
        let walker = walkdir::WalkDir::new(&base)
            .min_depth(1)
            .follow_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                if !e.file_type().is_dir() {
                    return true;
                }
                let sub = e.path().strip_prefix(&base).unwrap_or(e.path());
                let rel = real_rel(sub);
                !self.ignore.is_excluded(&rel) || self.ignore.may_reinclude_below(&rel)
            });

        let mut out = Vec::new();
        // Excluded dirs we descended into, emitted only if a child survives.
        let mut pending: Vec<(usize, ContextEntry)> = Vec::new();
        for item in walker {
            let ent = item.map_err(|e| {
                let path = e.path().unwrap_or(&base).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error"));
                io_err(&path, source)
            })?;
            let depth = ent.depth();
            pending.retain(|(d, _)| *d < depth);
            let sub = ent.path().strip_prefix(&base).unwrap_or(ent.path());
            let sub_str = sub.to_string_lossy();
            let rel = if dir.rel.is_empty() {
                sub_str.into_owned()
            } else {
                format!("{}/{}", dir.rel, sub_str)
            };
            let md = ent.metadata().map_err(|e| {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("metadata error"));
                io_err(ent.path(), source)
            })?;
            let Some(entry) = ContextEntry::from_metadata(rel, ent.path().to_path_buf(), &md)?
            else {
                continue;
            };
            if self.ignore.is_excluded(&real_rel(sub)) {
                if entry.kind == EntryKind::Dir {
                    pending.push((depth, entry));
                }
                continue;
            }
            out.extend(pending.drain(..).map(|(_, e)| e));
            out.push(entry);
        }
        Ok(out)
    }
}

fn os_join(parts: &[OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Go's containsWildcards: an unescaped `*`, `?` or `[`.
fn has_wildcard(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}
