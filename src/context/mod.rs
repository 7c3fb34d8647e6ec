//! Build context: `.dockerignore` parsing/matching (moby/patternmatcher
//! semantics) and resolution of COPY/ADD sources that can never escape the
//! context directory, even through symlinks.

pub mod untrusted;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

use crate::context::untrusted::{is_missing, FileError, FileRef, Outward, WalkError, Walked};

/// The most of a `.dockerignore` that is read.
pub const IGNORE_MAX_BYTES: u64 = 1 << 20;

/// Patterns a `.dockerignore` may hold: each is a compiled glob tried
/// against every path of the context, so their number bounds the memory
/// and time a hostile file can cost (75,000 took 2.3 GB and 22 s).
pub const IGNORE_MAX_PATTERNS: usize = 1000;

/// Longest pattern, in bytes: Linux's PATH_MAX; no longer path can match.
const IGNORE_MAX_PATTERN_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("{file}:{line}: invalid pattern {pattern:?}: {reason}")]
    InvalidPattern {
        file: String,
        line: usize,
        pattern: String,
        reason: String,
    },
    #[error("{file}: more than {IGNORE_MAX_PATTERNS} patterns, the most that is used; fold them with wildcards")]
    TooManyPatterns { file: String },
    #[error("COPY source {src:?} is outside the build context")]
    OutsideContext { src: String },
    #[error("COPY source {src:?}: no such file in the build context")]
    NotFound { src: String },
    #[error("COPY source {src:?}: no such file in the build context (excluded by .dockerignore)")]
    Excluded { src: String },
    #[error("COPY source {src:?}: invalid wildcard pattern {component:?}: {reason}")]
    InvalidSource {
        src: String,
        component: String,
        reason: String,
    },
    #[error("COPY source {src:?}: too many levels of symbolic links")]
    SymlinkLoop { src: String },
    #[error("COPY source {src:?}: {path} is a socket, fifo or device and cannot be copied")]
    Unsupported { src: String, path: PathBuf },
    #[error("build context {path:?} is not a directory")]
    ContextNotDir { path: PathBuf },
    #[error("{path:?} is not inside the build context {root:?}")]
    NotInContext { path: PathBuf, root: PathBuf },
    #[error("{0}")]
    IgnoreFile(FileError),
    #[error("{path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, source: io::Error) -> ContextError {
    ContextError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Per-component matcher used to decide whether an exception pattern could
/// re-include something below an excluded directory.
#[derive(Debug)]
enum CompMatch {
    /// A `**`-bearing component: can match any depth, so stay conservative.
    Any,
    Glob(GlobMatcher),
}

#[derive(Debug)]
struct Pattern {
    exclusion: bool,
    matcher: GlobMatcher,
    comps: Vec<CompMatch>,
}

impl Pattern {
    fn matches_or_parent(&self, comps: &[&str]) -> bool {
        // Docker's "parent paths excluded" rule: also try every ancestor.
        let mut prefix = String::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(c);
            if self.matcher.is_match(prefix.as_str()) {
                return true;
            }
        }
        false
    }

    /// True if this pattern could match `dir` itself, an ancestor, or
    /// anything below it. False negatives are not allowed; false positives
    /// only cost a needless directory scan.
    fn could_match_below(&self, dir: &[&str]) -> bool {
        for (i, d) in dir.iter().enumerate() {
            match self.comps.get(i) {
                None | Some(CompMatch::Any) => return true,
                Some(CompMatch::Glob(g)) => {
                    if !g.is_match(d) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Parsed `.dockerignore`.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    pub fn parse(text: &str, source_name: &str) -> Result<DockerIgnore, ContextError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            // Docker only treats '#' as a comment in column one (before trimming).
            if raw.starts_with('#') {
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: &str| ContextError::InvalidPattern {
                file: source_name.to_string(),
                line,
                pattern: untrusted::excerpt(trimmed),
                reason: reason.to_string(),
            };
            let (exclusion, body) = match trimmed.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, trimmed),
            };
            if body.is_empty() {
                return Err(bad("illegal exclusion pattern"));
            }
            if body.len() > IGNORE_MAX_PATTERN_LEN {
                return Err(bad("longer than 4096 bytes, the longest path Linux takes"));
            }
            if patterns.len() == IGNORE_MAX_PATTERNS {
                return Err(ContextError::TooManyPatterns {
                    file: source_name.to_string(),
                });
            }
            let mut cleaned = go_clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let glob = translate_pattern(&cleaned);
            let matcher = compile_glob(&glob).map_err(|e| bad(&e))?;
            let comps = glob
                .split('/')
                .map(|c| {
                    if c.contains("**") {
                        CompMatch::Any
                    } else {
                        // A component that fails on its own (e.g. a class
                        // spanning '/') just becomes conservative.
                        compile_glob(c).map_or(CompMatch::Any, CompMatch::Glob)
                    }
                })
                .collect();
            patterns.push(Pattern {
                exclusion,
                matcher,
                comps,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// rel_path: context-relative, '/'-separated, no leading '/'.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let cleaned = go_clean(rel_path);
        let cleaned = cleaned.trim_start_matches('/');
        if cleaned.is_empty() || cleaned == "." || cleaned == ".." || cleaned.starts_with("../") {
            // The root itself (or anything outside) is never excluded.
            return false;
        }
        let comps: Vec<&str> = cleaned.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            if p.matches_or_parent(&comps) {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether some `!` pattern might re-include a path at or below `dir`
    /// (so an excluded directory must still be scanned).
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let cleaned = go_clean(dir);
        let cleaned = cleaned.trim_start_matches('/');
        let comps: Vec<&str> = if cleaned.is_empty() || cleaned == "." {
            Vec::new()
        } else {
            cleaned.split('/').collect()
        };
        self.patterns
            .iter()
            .any(|p| p.exclusion && p.could_match_below(&comps))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn compile_glob(glob: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

/// Converts Go/patternmatcher syntax to globset syntax: braces are literal in
/// Go, and patternmatcher treats `**x` at a component start like `**/x`.
fn translate_pattern(pat: &str) -> String {
    let chars: Vec<char> = pat.chars().collect();
    let mut out = String::with_capacity(pat.len() + 4);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                    i += 1;
                }
            }
            '[' => {
                // Copy a class verbatim; braces inside it are already literal.
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!') | Some('^')) {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while chars.get(j).is_some_and(|&x| x != ']') {
                    j += 1;
                }
                let end = j.min(chars.len().saturating_sub(1));
                out.extend(chars.get(i..=end).unwrap_or_default());
                i = end;
            }
            '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                let at_start = i == 0 || chars.get(i - 1) == Some(&'/');
                out.push_str("**");
                i += 1;
                if at_start && chars.get(i + 1).is_some_and(|&n| n != '/' && n != '*') {
                    out.push('/');
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Lexical cleaning with Go's `path.Clean` rules.
fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            _ => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(PathBuf),
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
    /// None for sockets, fifos and devices, which a build never copies.
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
    /// the resolved target; results are sorted by `rel`.
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use tempfile::TempDir;

    fn ign(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text, ".dockerignore").expect("valid patterns")
    }

    /// Creates files (or dirs when the path ends in '/') under `root`.
    fn tree(root: &Path, paths: &[&str]) {
        for p in paths {
            let full = root.join(p);
            if p.ends_with('/') {
                fs::create_dir_all(&full).unwrap();
            } else {
                fs::create_dir_all(full.parent().unwrap()).unwrap();
                fs::write(&full, p.as_bytes()).unwrap();
            }
        }
    }

    fn ctx_with(paths: &[&str], ignore: Option<&str>) -> (TempDir, BuildContext) {
        let td = TempDir::new().unwrap();
        let root = td.path().join("ctx");
        fs::create_dir(&root).unwrap();
        tree(&root, paths);
        if let Some(text) = ignore {
            fs::write(root.join(".dockerignore"), text).unwrap();
        }
        let bc = BuildContext::open(&root, None).unwrap();
        (td, bc)
    }

    fn rels(v: &[ContextEntry]) -> Vec<&str> {
        v.iter().map(|e| e.rel.as_str()).collect()
    }

    fn walk_rels(bc: &BuildContext, src: &str) -> Vec<String> {
        let dir = bc.resolve_source(src).unwrap();
        bc.walk(&dir[0])
            .unwrap()
            .into_iter()
            .map(|e| e.rel)
            .collect()
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let i = ign("# comment\n\n   \n  foo.txt  \n#bar.txt\n");
        assert!(i.is_excluded("foo.txt"));
        assert!(!i.is_excluded("bar.txt"));
        assert!(!i.is_excluded("#bar.txt"));
        // Docker only honours '#' in column one.
        let i = ign("  #x\n");
        assert!(i.is_excluded("#x"));
    }

    #[test]
    fn bom_and_crlf() {
        let i = ign("\u{feff}a.txt\r\nb.txt\r\n");
        assert!(i.is_excluded("a.txt"));
        assert!(i.is_excluded("b.txt"));
    }

    #[test]
    fn parent_directory_rule() {
        let i = ign("build\n");
        assert!(i.is_excluded("build"));
        assert!(i.is_excluded("build/x/y"));
        assert!(!i.is_excluded("src/build"));
        assert!(!i.is_excluded("buildx"));
    }

    #[test]
    fn star_and_question_do_not_cross_slash() {
        let i = ign("*.md\nlog?\n");
        assert!(i.is_excluded("README.md"));
        assert!(!i.is_excluded("docs/README.md"));
        assert!(i.is_excluded("log1"));
        assert!(!i.is_excluded("log12"));
        assert!(i.is_excluded(".hidden.md"));
        let i = ign("*/*.o\n");
        assert!(i.is_excluded("a/x.o"));
        assert!(!i.is_excluded("a/b/x.o"));
    }

    #[test]
    fn double_star_start_middle_end() {
        let i = ign("**/*.pyc\n");
        assert!(i.is_excluded("x.pyc"));
        assert!(i.is_excluded("a/b/c/x.pyc"));
        assert!(!i.is_excluded("a/x.py"));

        let i = ign("a/**/z\n");
        assert!(i.is_excluded("a/z"));
        assert!(i.is_excluded("a/b/c/z"));
        assert!(i.is_excluded("a/b/z/inner"));
        assert!(!i.is_excluded("b/a/z"));

        let i = ign("logs/**\n");
        assert!(i.is_excluded("logs/a"));
        assert!(i.is_excluded("logs/a/b"));
        assert!(!i.is_excluded("logs"));

        let i = ign("**\n!keep\n");
        assert!(i.is_excluded("anything/at/all"));
        assert!(!i.is_excluded("keep"));
        assert!(!i.is_excluded("keep/inner"));

        // patternmatcher: `**x` at a component start behaves like `**/x`.
        let i = ign("**.log\n");
        assert!(i.is_excluded(".log"));
        assert!(i.is_excluded("a/.log"));
        assert!(!i.is_excluded("a.log"));
    }

    #[test]
    fn exceptions_last_match_wins() {
        let i = ign("*.md\n!README.md\n");
        assert!(i.is_excluded("CHANGES.md"));
        assert!(!i.is_excluded("README.md"));

        let i = ign("!README.md\n*.md\n");
        assert!(i.is_excluded("README.md"));

        let i = ign("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!i.is_excluded("README.md"));
        assert!(i.is_excluded("README-secret.md"));
    }

    #[test]
    fn reinclusion_under_excluded_dir() {
        let i = ign("docs\n!docs/README.md\n");
        assert!(i.is_excluded("docs"));
        assert!(i.is_excluded("docs/other.md"));
        assert!(!i.is_excluded("docs/README.md"));
        assert!(i.may_reinclude_below("docs"));
        assert!(!i.may_reinclude_below("src"));
        let i = ign("vendor\n!**/keep\n");
        assert!(i.may_reinclude_below("vendor/x/y"));
        let i = ign("vendor\n");
        assert!(!i.may_reinclude_below("vendor"));
    }

    #[test]
    fn leading_slash_dot_slash_trailing_slash_cleaning() {
        let i = ign("/abs\n./rel\ntrail/\na/../b\n!/abs/keep\n");
        assert!(i.is_excluded("abs"));
        assert!(i.is_excluded("abs/x"));
        assert!(!i.is_excluded("abs/keep"));
        assert!(i.is_excluded("rel"));
        assert!(i.is_excluded("trail"));
        assert!(i.is_excluded("trail/f"));
        assert!(i.is_excluded("b"));
        assert!(!i.is_excluded("a"));
        // Non-normalized query paths are cleaned too; the root never matches.
        assert!(i.is_excluded("./abs//x/"));
        assert!(!i.is_excluded(""));
        assert!(!i.is_excluded("."));
        assert!(!ign("*\n").is_excluded(""));
    }

    #[test]
    fn character_classes_braces_and_escapes() {
        let i = ign("file[0-9].txt\n[^a]x\n{a,b}\n\\*star\n");
        assert!(i.is_excluded("file3.txt"));
        assert!(!i.is_excluded("filex.txt"));
        assert!(i.is_excluded("bx"));
        assert!(!i.is_excluded("ax"));
        // Braces are literal in Go patterns.
        assert!(i.is_excluded("{a,b}"));
        assert!(!i.is_excluded("a"));
        assert!(i.is_excluded("*star"));
        assert!(!i.is_excluded("xstar"));
    }

    #[test]
    fn invalid_patterns_name_file_line_and_pattern() {
        let e = DockerIgnore::parse("# c\nok\n\n[a\n", ".dockerignore").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(".dockerignore:4: invalid pattern \"[a\""),
            "{msg}"
        );
        assert!(msg.contains("unclosed character class"), "{msg}");

        let e = DockerIgnore::parse("x\n!\n", "app.Dockerfile.dockerignore").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("app.Dockerfile.dockerignore:2: invalid pattern \"!\""));
        assert!(DockerIgnore::parse("trail\\", "f").is_err());
        assert!(DockerIgnore::parse("[z-a]", "f").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "[", "]", "[!", "[]", "\\", "**/**/**", "***", "/", "..", "!!", "a/[", "[/]", "\u{0}",
        ] {
            if let Ok(i) = DockerIgnore::parse(text, "f") {
                for p in ["", "/", "..", "a/../..", "[", "x//y", "\u{0}"] {
                    let _ = i.is_excluded(p);
                    let _ = i.may_reinclude_below(p);
                }
            }
        }
    }

    #[test]
    fn resolve_literal_and_whole_context() {
        let (_td, bc) = ctx_with(&["app/main.py", "README"], None);
        let v = bc.resolve_source("app/main.py").unwrap();
        assert_eq!(rels(&v), ["app/main.py"]);
        assert_eq!(v[0].kind, EntryKind::File);
        assert_eq!(v[0].size, "app/main.py".len() as u64);
        assert_eq!(v[0].path, bc.root().join("app/main.py"));

        for whole in [".", "/", "./", "app/.."] {
            let v = bc.resolve_source(whole).unwrap();
            assert_eq!(rels(&v), [""], "{whole}");
            assert_eq!(v[0].kind, EntryKind::Dir);
            assert_eq!(v[0].path, bc.root());
        }
        // Leading slash means the context root, and paths are cleaned.
        assert_eq!(
            rels(&bc.resolve_source("/app//./main.py").unwrap()),
            ["app/main.py"]
        );
        assert_eq!(rels(&bc.resolve_source("app/").unwrap()), ["app"]);
    }

    #[test]
    fn resolve_missing_and_parent_escape() {
        let (_td, bc) = ctx_with(&["app/main.py"], None);
        let e = bc.resolve_source("app/missing.txt").unwrap_err();
        assert_eq!(
            e.to_string(),
            "COPY source \"app/missing.txt\": no such file in the build context"
        );
        assert!(matches!(
            bc.resolve_source("app/main.py/x"),
            Err(ContextError::NotFound { .. })
        ));
        assert!(matches!(
            bc.resolve_source(""),
            Err(ContextError::NotFound { .. })
        ));
        for bad in ["../etc/passwd", "app/../../etc/passwd", "/../etc", ".."] {
            let e = bc.resolve_source(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("COPY source {bad:?} is outside the build context")
            );
        }
        // `..` that stays inside is fine.
        assert_eq!(
            rels(&bc.resolve_source("app/../app/main.py").unwrap()),
            ["app/main.py"]
        );
    }

    #[test]
    fn resolve_wildcards() {
        let (_td, bc) = ctx_with(
            &[
                "b.txt",
                "a.txt",
                "c.md",
                "src/x/f.txt",
                "src/y/f.txt",
                "src/z/g.txt",
                "lit*.txt",
                "q1",
                "q22",
            ],
            None,
        );
        assert_eq!(
            rels(&bc.resolve_source("*.txt").unwrap()),
            ["a.txt", "b.txt", "lit*.txt"]
        );
        assert_eq!(
            rels(&bc.resolve_source("src/*/f.txt").unwrap()),
            ["src/x/f.txt", "src/y/f.txt"]
        );
        assert_eq!(
            rels(&bc.resolve_source("src/[xz]").unwrap()),
            ["src/x", "src/z"]
        );
        assert_eq!(rels(&bc.resolve_source("q?").unwrap()), ["q1"]);
        // '*' never crosses '/'.
        assert!(bc.resolve_source("*/f.txt").is_err());
        // Escaped wildcard matches literally.
        assert_eq!(
            rels(&bc.resolve_source("lit\\*.t?t").unwrap()),
            ["lit*.txt"]
        );
        assert!(matches!(
            bc.resolve_source("*.none"),
            Err(ContextError::NotFound { .. })
        ));
        let e = bc.resolve_source("src/[x").unwrap_err();
        assert!(matches!(e, ContextError::InvalidSource { .. }), "{e}");
        assert!(e.to_string().contains("src/[x"));
    }

    #[test]
    fn excluded_files_invisible_to_resolve_and_walk() {
        let (_td, bc) = ctx_with(
            &[
                "app/a.py",
                "app/secret.key",
                "app/sub/b.py",
                "app/sub/c.key",
                "top.key",
                "logs/x.log",
            ],
            Some("**/*.key\nlogs\n"),
        );
        let e = bc.resolve_source("app/secret.key").unwrap_err();
        assert!(matches!(e, ContextError::Excluded { .. }));
        assert!(e.to_string().contains("excluded by .dockerignore"), "{e}");
        assert!(e.to_string().contains("app/secret.key"));
        assert!(matches!(
            bc.resolve_source("logs/x.log"),
            Err(ContextError::Excluded { .. })
        ));
        assert!(matches!(
            bc.resolve_source("logs"),
            Err(ContextError::Excluded { .. })
        ));
        assert!(matches!(
            bc.resolve_source("*.key"),
            Err(ContextError::Excluded { .. })
        ));
        assert_eq!(
            rels(&bc.resolve_source("app/*").unwrap()),
            ["app/a.py", "app/sub"]
        );
        assert_eq!(
            walk_rels(&bc, "app"),
            ["app/a.py", "app/sub", "app/sub/b.py"]
        );
        assert_eq!(
            walk_rels(&bc, "."),
            [
                ".dockerignore",
                "app",
                "app/a.py",
                "app/sub",
                "app/sub/b.py"
            ]
        );
    }

    #[test]
    fn walk_reincludes_under_excluded_dir() {
        let (_td, bc) = ctx_with(
            &[
                "docs/README.md",
                "docs/other.md",
                "docs/deep/keep.txt",
                "docs/deep/no.txt",
                "docs/empty/x",
                "src/m.rs",
            ],
            Some("docs\n!docs/README.md\n!docs/deep/keep.txt\n"),
        );
        assert_eq!(
            walk_rels(&bc, "."),
            [
                ".dockerignore",
                "docs",
                "docs/README.md",
                "docs/deep",
                "docs/deep/keep.txt",
                "src",
                "src/m.rs"
            ]
        );
        assert_eq!(
            rels(&bc.resolve_source("docs/README.md").unwrap()),
            ["docs/README.md"]
        );
        assert!(matches!(
            bc.resolve_source("docs/other.md"),
            Err(ContextError::Excluded { .. })
        ));
        // The excluded dir is still visible because it holds re-included files.
        assert_eq!(
            walk_rels(&bc, "docs"),
            ["docs/README.md", "docs/deep", "docs/deep/keep.txt"]
        );
        assert!(matches!(
            bc.resolve_source("docs/empty"),
            Err(ContextError::Excluded { .. })
        ));
    }

    #[test]
    fn walk_reincludes_with_double_star_exception() {
        let (_td, bc) = ctx_with(
            &["vendor/a/keep", "vendor/a/drop", "vendor/b/drop", "keep"],
            Some("vendor\n! **/keep\n"),
        );
        assert_eq!(
            walk_rels(&bc, "."),
            [
                ".dockerignore",
                "keep",
                "vendor",
                "vendor/a",
                "vendor/a/keep"
            ]
        );
        assert_eq!(
            rels(&bc.resolve_source("vendor/*/keep").unwrap()),
            ["vendor/a/keep"]
        );
        assert!(matches!(
            bc.resolve_source("vendor/b"),
            Err(ContextError::Excluded { .. })
        ));
    }

    #[test]
    fn walk_through_symlinked_dir_applies_ignore_to_real_paths() {
        let (_td, bc) = ctx_with(&["real/a.txt", "real/b.log"], Some("real/*.log\n"));
        symlink("real", bc.root().join("alias")).unwrap();
        assert_eq!(walk_rels(&bc, "alias"), ["alias/a.txt"]);
        assert!(matches!(
            bc.resolve_source("alias/b.log"),
            Err(ContextError::Excluded { .. })
        ));
    }

    #[test]
    fn walk_skips_excluded_dir_without_exceptions() {
        let (_td, bc) = ctx_with(&["node_modules/a/b.js", "index.js"], Some("node_modules\n"));
        // Make the excluded dir unreadable: it must not even be opened.
        let nm = bc.root().join("node_modules");
        let is_root = fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(true);
        fs::set_permissions(&nm, fs::Permissions::from_mode(0o000)).unwrap();
        let got = walk_rels(&bc, ".");
        fs::set_permissions(&nm, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(got, [".dockerignore", "index.js"], "root={is_root}");
    }

    #[test]
    fn symlink_to_absolute_outside_is_rerooted() {
        let (_td, bc) = ctx_with(&["etc/passwd", "x"], None);
        symlink("/etc/passwd", bc.root().join("pw")).unwrap();
        let v = bc.resolve_source("pw").unwrap();
        assert_eq!(rels(&v), ["pw"]);
        assert_eq!(v[0].path, bc.root().join("etc/passwd"));
        assert_eq!(v[0].kind, EntryKind::File);
        assert_eq!(fs::read_to_string(&v[0].path).unwrap(), "etc/passwd");

        // Without a context copy of the target it is simply missing.
        fs::remove_file(bc.root().join("etc/passwd")).unwrap();
        assert!(matches!(
            bc.resolve_source("pw"),
            Err(ContextError::NotFound { .. })
        ));
    }

    #[test]
    fn symlink_climbing_out_is_clamped_at_root() {
        let td = TempDir::new().unwrap();
        fs::write(td.path().join("outside"), "SECRET").unwrap();
        let root = td.path().join("ctx");
        tree(&root, &["a/b/"]);
        symlink("../../outside", root.join("a/esc")).unwrap();
        symlink("../../../../../../outside", root.join("a/b/esc2")).unwrap();
        let bc = BuildContext::open(&root, None).unwrap();
        assert!(matches!(
            bc.resolve_source("a/esc"),
            Err(ContextError::NotFound { .. })
        ));
        assert!(matches!(
            bc.resolve_source("a/b/esc2"),
            Err(ContextError::NotFound { .. })
        ));
        // A context-local file of that name is what gets reached instead.
        fs::write(root.join("outside"), "inside").unwrap();
        for s in ["a/esc", "a/b/esc2", "a/*", "a/b/esc*"] {
            for e in bc.resolve_source(s).unwrap() {
                assert!(e.path.starts_with(bc.root()), "{s}: {:?}", e.path);
                if e.kind == EntryKind::File {
                    assert_eq!(fs::read_to_string(&e.path).unwrap(), "inside");
                }
            }
        }
    }

    #[test]
    fn intermediate_symlinked_directories() {
        let td = TempDir::new().unwrap();
        tree(td.path(), &["outside/secret.txt"]);
        let root = td.path().join("ctx");
        tree(&root, &["real/dir/f.txt", "real/dir/g.txt"]);
        symlink("real/dir", root.join("rel_link")).unwrap();
        symlink("/real", root.join("abs_link")).unwrap();
        symlink(td.path().join("outside"), root.join("out_link")).unwrap();
        symlink("../outside", root.join("up_link")).unwrap();
        let bc = BuildContext::open(&root, None).unwrap();

        let v = bc.resolve_source("rel_link/f.txt").unwrap();
        assert_eq!(rels(&v), ["rel_link/f.txt"]);
        assert_eq!(v[0].path, bc.root().join("real/dir/f.txt"));
        let v = bc.resolve_source("abs_link/dir/*.txt").unwrap();
        assert_eq!(rels(&v), ["abs_link/dir/f.txt", "abs_link/dir/g.txt"]);
        assert!(v
            .iter()
            .all(|e| e.path.starts_with(bc.root().join("real/dir"))));
        // Final-component symlink to a dir resolves to the dir.
        let v = bc.resolve_source("rel_link").unwrap();
        assert_eq!(v[0].kind, EntryKind::Dir);
        assert_eq!(
            walk_rels(&bc, "rel_link"),
            ["rel_link/f.txt", "rel_link/g.txt"]
        );
        for s in ["out_link/secret.txt", "up_link/secret.txt"] {
            assert!(
                matches!(bc.resolve_source(s), Err(ContextError::NotFound { .. })),
                "{s}"
            );
        }
    }

    #[test]
    fn symlink_loops_error() {
        let (_td, bc) = ctx_with(&[], None);
        symlink("b", bc.root().join("a")).unwrap();
        symlink("a", bc.root().join("b")).unwrap();
        symlink("self/x", bc.root().join("self")).unwrap();
        assert!(matches!(
            bc.resolve_source("a"),
            Err(ContextError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            bc.resolve_source("self"),
            Err(ContextError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn excluded_symlink_or_target_is_invisible() {
        let (_td, bc) = ctx_with(
            &["secret.txt", "pub.txt"],
            Some("secret.txt\nhidden_link\n"),
        );
        symlink("secret.txt", bc.root().join("to_secret")).unwrap();
        symlink("pub.txt", bc.root().join("hidden_link")).unwrap();
        assert!(matches!(
            bc.resolve_source("to_secret"),
            Err(ContextError::Excluded { .. })
        ));
        assert!(matches!(
            bc.resolve_source("hidden_link"),
            Err(ContextError::Excluded { .. })
        ));
    }

    #[test]
    fn walk_keeps_inner_symlinks_as_symlinks() {
        let (_td, bc) = ctx_with(&["d/f.txt", "d/sub/g.txt"], None);
        symlink("/etc/passwd", bc.root().join("d/abs")).unwrap();
        symlink("sub", bc.root().join("d/dirlink")).unwrap();
        let dir = &bc.resolve_source("d").unwrap()[0];
        let v = bc.walk(dir).unwrap();
        assert_eq!(
            rels(&v),
            ["d/abs", "d/dirlink", "d/f.txt", "d/sub", "d/sub/g.txt"]
        );
        assert_eq!(v[0].kind, EntryKind::Symlink(PathBuf::from("/etc/passwd")));
        assert_eq!(v[1].kind, EntryKind::Symlink(PathBuf::from("sub")));
        assert_eq!(v[0].path, bc.root().join("d/abs"));
    }

    #[test]
    fn walk_order_is_depth_first_and_skips_fifos() {
        let (_td, bc) = ctx_with(&["a/b", "a-c", "a.d", "z/"], None);
        let fifo = bc.root().join("pipe");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .map(|s| s.success());
        assert_eq!(walk_rels(&bc, "."), ["a", "a/b", "a-c", "a.d", "z"]);
        if ok.unwrap_or(false) {
            assert!(matches!(
                bc.resolve_source("pipe"),
                Err(ContextError::Unsupported { .. })
            ));
            assert_eq!(
                rels(&bc.resolve_source("p*").unwrap_or_default()),
                Vec::<&str>::new()
            );
        }
        // Walking a file yields nothing.
        let f = &bc.resolve_source("a/b").unwrap()[0];
        assert!(bc.walk(f).unwrap().is_empty());
    }

    #[test]
    fn metadata_fields() {
        let (_td, bc) = ctx_with(&["f", "d/"], None);
        let f = bc.root().join("f");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
        fs::hard_link(&f, bc.root().join("d/h")).unwrap();
        let e = &bc.resolve_source("f").unwrap()[0];
        let h = &bc.resolve_source("d/h").unwrap()[0];
        assert_eq!(e.mode, 0o4751);
        assert_eq!(e.nlink, 2);
        assert_eq!((e.dev, e.ino), (h.dev, h.ino));
        assert!(e.mtime > 0);
    }

    #[test]
    fn walk_refuses_entry_outside_context() {
        let (td, bc) = ctx_with(&[], None);
        let mut fake = bc.resolve_source(".").unwrap().remove(0);
        fake.path = td.path().to_path_buf();
        assert!(matches!(
            bc.walk(&fake),
            Err(ContextError::NotInContext { .. })
        ));
    }

    #[test]
    fn dockerfile_specific_ignore_takes_precedence() {
        let td = TempDir::new().unwrap();
        let root = td.path().join("ctx");
        tree(&root, &["a.txt", "b.txt", "docker/app.Dockerfile"]);
        fs::write(root.join(".dockerignore"), "a.txt\n").unwrap();
        let df = FileRef::inside(&root, "the build context", "docker/app.Dockerfile");

        // Without a specific file the root one applies.
        let bc = BuildContext::open(&root, Some(&df)).unwrap();
        assert!(bc.ignore().is_excluded("a.txt"));
        assert!(!bc.ignore().is_excluded("b.txt"));

        fs::write(root.join("docker/app.Dockerfile.dockerignore"), "b.txt\n").unwrap();
        let bc = BuildContext::open(&root, Some(&df)).unwrap();
        assert!(!bc.ignore().is_excluded("a.txt"));
        assert!(bc.ignore().is_excluded("b.txt"));
        assert!(bc.resolve_source("a.txt").is_ok());

        // A Dockerfile outside the context can carry its own ignore file too.
        let ext = FileRef::Given(td.path().join("Other.Dockerfile"));
        fs::write(td.path().join("Other.Dockerfile.dockerignore"), "[bad\n").unwrap();
        let e = BuildContext::open(&root, Some(&ext)).err().unwrap();
        assert!(
            e.to_string()
                .contains("Other.Dockerfile.dockerignore:1: invalid pattern \"[bad\""),
            "{e}"
        );

        // No ignore file at all.
        fs::remove_file(root.join(".dockerignore")).unwrap();
        let bc = BuildContext::open(&root, None).unwrap();
        assert!(bc.ignore().is_empty());
    }

    #[test]
    fn open_errors_carry_path() {
        let td = TempDir::new().unwrap();
        let missing = td.path().join("nope");
        let e = BuildContext::open(&missing, None).err().unwrap();
        assert!(e.to_string().contains("nope"), "{e}");
        let f = td.path().join("file");
        fs::write(&f, "").unwrap();
        assert!(matches!(
            BuildContext::open(&f, None),
            Err(ContextError::ContextNotDir { .. })
        ));
    }

    #[test]
    fn ignore_files_are_read_inside_their_root_and_capped() {
        let td = TempDir::new().unwrap();
        let root = td.path().join("ctx");
        tree(&root, &["a.txt", "Dockerfile"]);
        fs::write(td.path().join("secret"), "TOPSECRET[\n").unwrap();
        let df = FileRef::inside(&root, "the build context", "Dockerfile");
        for target in [td.path().join("secret"), PathBuf::from("/dev/zero")] {
            for name in [".dockerignore", "Dockerfile.dockerignore"] {
                let _ = fs::remove_file(root.join(name));
                symlink(&target, root.join(name)).unwrap();
                let e = BuildContext::open(&root, Some(&df)).err().unwrap();
                let msg = e.to_string();
                assert!(
                    msg.starts_with(&format!("{name}: leads out of the build context")),
                    "{msg}"
                );
                assert!(!msg.contains("TOPSECRET"), "{msg}");
                fs::remove_file(root.join(name)).unwrap();
            }
        }
        // Inside the context a symlink is followed; a huge file is refused.
        fs::write(root.join("ignore.txt"), "a.txt\n").unwrap();
        symlink("ignore.txt", root.join(".dockerignore")).unwrap();
        assert!(BuildContext::open(&root, Some(&df))
            .unwrap()
            .ignore()
            .is_excluded("a.txt"));
        fs::write(
            root.join("ignore.txt"),
            vec![b'#'; IGNORE_MAX_BYTES as usize + 1],
        )
        .unwrap();
        let e = BuildContext::open(&root, Some(&df)).err().unwrap();
        assert_eq!(
            e.to_string(),
            ".dockerignore: larger than 1 MiB, the most that is read"
        );
        fs::remove_file(root.join(".dockerignore")).unwrap();
        fs::create_dir(root.join(".dockerignore")).unwrap();
        let e = BuildContext::open(&root, Some(&df)).err().unwrap();
        assert_eq!(e.to_string(), ".dockerignore: not a regular file");
        // What an invalid pattern quotes is cut short.
        fs::remove_dir(root.join(".dockerignore")).unwrap();
        fs::write(
            root.join(".dockerignore"),
            format!("[{}\n", "x".repeat(500)),
        )
        .unwrap();
        let e = BuildContext::open(&root, Some(&df)).err().unwrap();
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn ignore_patterns_are_bounded_in_number_and_length() {
        let many = |n: usize| (0..n).map(|i| format!("a{i}/**\n")).collect::<String>();
        assert!(DockerIgnore::parse(&many(IGNORE_MAX_PATTERNS), ".dockerignore").is_ok());
        // Comments and blank lines are not patterns.
        let padded = format!("# c\n\n{}", many(IGNORE_MAX_PATTERNS));
        assert!(DockerIgnore::parse(&padded, ".dockerignore").is_ok());
        let e = DockerIgnore::parse(&many(IGNORE_MAX_PATTERNS + 1), ".dockerignore").unwrap_err();
        assert_eq!(
            e.to_string(),
            ".dockerignore: more than 1000 patterns, the most that is used; fold them with wildcards"
        );
        let e = DockerIgnore::parse(&format!("ok\n{}\n", "a".repeat(4097)), "x").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("x:2: invalid pattern \"{}…\"", "a".repeat(40))),
            "{msg}"
        );
        assert!(
            msg.ends_with("longer than 4096 bytes, the longest path Linux takes"),
            "{msg}"
        );
    }
}
