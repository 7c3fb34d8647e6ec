//! Files read from folders whose content the reader does not control (a
//! repository checkout, a build context), and how much of that content an
//! error may repeat.
//!
//! A path is resolved inside its root: symlinks are followed, but only
//! within the root, and only regular files are read, up to a size cap. The
//! walk is hand-written rather than taken from `cap-std` because the build
//! context needs the same walk with Docker's re-rooting of outward links and
//! `.dockerignore` applied at each link, which no crate offers.
//!
//! The walk and the open are separate steps, so a tree changed between them
//! could swap a checked directory for a symlink; the last component is
//! opened with `O_NOFOLLOW`. The trees read here are not changed while they
//! are read (a checkout the service made, a context the user owns).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

/// Same limit as Linux's ELOOP threshold, so loops fail the way a kernel would.
pub const MAX_SYMLINKS: u32 = 40;

/// What a symlink to an absolute path, or `..` above the root, means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outward {
    /// The root acts as `/` (Docker's rule for COPY sources).
    Reroot,
    /// The path is refused.
    Refuse,
}

/// Where a walk ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Walked {
    /// The real components below the root: none of them is a symlink.
    Found(Vec<OsString>),
    Missing,
    /// A symlink on the way is excluded (by `.dockerignore`).
    Excluded,
}

#[derive(Debug)]
pub enum WalkError {
    /// Only with [`Outward::Refuse`].
    Escapes,
    Loop,
    Io(PathBuf, io::Error),
}

/// Resolves `rel` below the real components `cur` of `root`, following
/// symlinks inside the root. `excluded` is asked about each symlink met (by
/// its real components); `links` counts the symlinks followed so far.
pub fn walk(
    root: &Path,
    mut cur: Vec<OsString>,
    rel: &Path,
    links: &mut u32,
    outward: Outward,
    excluded: &dyn Fn(&[OsString]) -> bool,
) -> Result<Walked, WalkError> {
    let mut todo = VecDeque::new();
    queue_front(&mut todo, rel, &mut cur, outward)?;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            if cur.pop().is_none() && outward == Outward::Refuse {
                return Err(WalkError::Escapes);
            }
            continue;
        }
        cur.push(c);
        let path = join(root, &cur);
        let md = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if is_missing(&e) => return Ok(Walked::Missing),
            Err(e) => return Err(WalkError::Io(path, e)),
        };
        if md.file_type().is_symlink() {
            if excluded(&cur) {
                return Ok(Walked::Excluded);
            }
            *links += 1;
            if *links > MAX_SYMLINKS {
                return Err(WalkError::Loop);
            }
            let target = fs::read_link(&path).map_err(|e| WalkError::Io(path, e))?;
            cur.pop();
            queue_front(&mut todo, &target, &mut cur, outward)?;
        } else if !todo.is_empty() && !md.is_dir() {
            return Ok(Walked::Missing);
        }
    }
    Ok(Walked::Found(cur))
}

/// Puts the components of `path` first in line; an absolute path restarts
/// from the root, or is refused.
fn queue_front(
    todo: &mut VecDeque<OsString>,
    path: &Path,
    cur: &mut Vec<OsString>,
    outward: Outward,
) -> Result<(), WalkError> {
    if path.has_root() {
        if outward == Outward::Refuse {
            return Err(WalkError::Escapes);
        }
        cur.clear();
    }
    let parts: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    for p in parts.into_iter().rev() {
        todo.push_front(p);
    }
    Ok(())
}

pub fn join(root: &Path, real: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(real);
    p
}

pub fn is_missing(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// A file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRef {
    /// `rel` resolved inside `root` (named `place` in errors); symlinks are
    /// followed only within it.
    Inside {
        root: PathBuf,
        place: &'static str,
        rel: PathBuf,
    },
    /// A path the user named themselves (`build -f`), read wherever it is.
    Given(PathBuf),
}

/// Why a file was not read: `{file}: {problem}`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct FileError {
    /// The path as named (relative to the root for [`FileRef::Inside`]).
    pub file: String,
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("leads out of {0} (through `..`, an absolute path or a symlink); only files inside it are read")]
    Escapes(&'static str),
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {}, the most that is read", size_text(*.0))]
    TooLarge(u64),
    #[error("not UTF-8 text")]
    NotText,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("{0}")]
    Io(io::Error),
}

impl FileError {
    pub fn is_missing(&self) -> bool {
        matches!(&self.problem, Problem::Io(e) if is_missing(e))
    }
}

/// `1 MiB`, `4 MiB`, or bytes when not a whole number of MiB.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl FileRef {
    /// `rel` inside `root`, which errors call `place` ("the repository").
    pub fn inside(root: &Path, place: &'static str, rel: impl Into<PathBuf>) -> FileRef {
        FileRef::Inside {
            root: root.to_path_buf(),
            place,
            rel: rel.into(),
        }
    }

    /// The path as named: relative to the root, or as given.
    pub fn name(&self) -> String {
        match self {
            FileRef::Inside { rel, .. } => rel.display().to_string(),
            FileRef::Given(p) => p.display().to_string(),
        }
    }

    /// Where the file is named on disk, before symlinks are resolved.
    pub fn nominal_path(&self) -> PathBuf {
        match self {
            FileRef::Inside { root, rel, .. } => root.join(rel),
            FileRef::Given(p) => p.clone(),
        }
    }

    /// The same file name with `suffix` appended (`Dockerfile.dockerignore`).
    pub fn with_suffix(&self, suffix: &str) -> FileRef {
        let add = |p: &Path| {
            let mut s = p.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        match self {
            FileRef::Inside { root, place, rel } => FileRef::Inside {
                root: root.clone(),
                place,
                rel: add(rel),
            },
            FileRef::Given(p) => FileRef::Given(add(p)),
        }
    }

    fn error(&self, problem: Problem) -> FileError {
        FileError {
            file: self.name(),
            problem,
        }
    }

    /// The real path of a regular file, symlink-free below the root.
    pub fn resolve(&self) -> Result<PathBuf, FileError> {
        let path = self.locate()?;
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_file() => Ok(path),
            Ok(_) => Err(self.error(Problem::NotRegular)),
            Err(e) => Err(self.error(Problem::Io(e))),
        }
    }

    fn locate(&self) -> Result<PathBuf, FileError> {
        let (root, place, rel) = match self {
            FileRef::Given(p) => return Ok(p.clone()),
            FileRef::Inside { root, place, rel } => (root, *place, rel),
        };
        let mut links = 0;
        match walk(root, Vec::new(), rel, &mut links, Outward::Refuse, &|_| {
            false
        }) {
            Ok(Walked::Found(real)) if real.is_empty() => Err(self.error(Problem::NotRegular)),
            Ok(Walked::Found(real)) => Ok(join(root, &real)),
            Ok(Walked::Missing | Walked::Excluded) => {
                Err(self.error(Problem::Io(io::Error::from_raw_os_error(libc::ENOENT))))
            }
            Err(WalkError::Escapes) => Err(self.error(Problem::Escapes(place))),
            Err(WalkError::Loop) => Err(self.error(Problem::Loop)),
            Err(WalkError::Io(_, e)) => Err(self.error(Problem::Io(e))),
        }
    }

    /// Reads a regular file of at most `cap` bytes.
    pub fn read(&self, cap: u64) -> Result<Vec<u8>, FileError> {
        let path = self.locate()?;
        let mut options = fs::OpenOptions::new();
        options.read(true);
        // Never block on a fifo; inside a root, a symlink that appeared since
        // the walk is not followed.
        let mut flags = libc::O_NONBLOCK;
        if matches!(self, FileRef::Inside { .. }) {
            flags |= libc::O_NOFOLLOW;
        }
        options.custom_flags(flags);
        let file = options.open(&path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                self.error(Problem::NotRegular)
            } else {
                self.error(Problem::Io(e))
            }
        })?;
        let md = file.metadata().map_err(|e| self.error(Problem::Io(e)))?;
        if !md.is_file() {
            return Err(self.error(Problem::NotRegular));
        }
        if md.len() > cap {
            return Err(self.error(Problem::TooLarge(cap)));
        }
        let mut bytes = Vec::with_capacity(md.len() as usize);
        // One byte more than the cap tells a file that grew past it.
        file.take(cap + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(Problem::Io(e)))?;
        if bytes.len() as u64 > cap {
            return Err(self.error(Problem::TooLarge(cap)));
        }
        Ok(bytes)
    }

    /// [`FileRef::read`] as UTF-8 text (a leading byte-order mark is kept).
    pub fn read_text(&self, cap: u64) -> Result<String, FileError> {
        String::from_utf8(self.read(cap)?).map_err(|_| self.error(Problem::NotText))
    }
}

/// Characters of file content an error may repeat.
const EXCERPT_CHARS: usize = 40;

/// At most 40 characters of `text`, with `…` when cut: what errors quote of
/// a value read from a file.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Longest keyword an error repeats.
const KEYWORD_CHARS: usize = 20;

/// The first word of a line, for "unknown instruction" errors: shown only
/// when it is made of letters (as every Dockerfile keyword is), and cut at 20
/// characters, so a file that is not a Dockerfile is not echoed.
pub fn keyword(word: &str) -> Option<String> {
    if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphabetic()) {
        return None;
    }
    Some(match word.get(..KEYWORD_CHARS) {
        Some(head) if head.len() < word.len() => format!("{head}…"),
        _ => word.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, PathBuf) {
        let td = tempfile::tempdir().unwrap();
        let root = td.path().join("root");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/file"), "inside").unwrap();
        fs::write(td.path().join("secret"), "SECRET").unwrap();
        symlink("b/file", root.join("a/rel")).unwrap();
        symlink("../a/b", root.join("a/up")).unwrap();
        symlink("../../secret", root.join("a/out")).unwrap();
        symlink(td.path().join("secret"), root.join("abs")).unwrap();
        symlink("/dev/zero", root.join("zero")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        (td, root)
    }

    fn read(root: &Path, rel: &str) -> Result<Vec<u8>, FileError> {
        FileRef::inside(root, "the root", rel).read(100)
    }

    #[test]
    fn symlinks_are_followed_inside_the_root_only() {
        let (_td, root) = tree();
        assert_eq!(read(&root, "a/b/file").unwrap(), b"inside");
        assert_eq!(read(&root, "a/rel").unwrap(), b"inside");
        assert_eq!(read(&root, "a/up/file").unwrap(), b"inside");
        assert_eq!(read(&root, "a/b/../b/file").unwrap(), b"inside");
        for out in [
            "a/out",
            "abs",
            "zero",
            "../secret",
            "/etc/passwd",
            "a/../../x",
        ] {
            let e = read(&root, out).unwrap_err();
            assert!(
                matches!(e.problem, Problem::Escapes("the root")),
                "{out}: {e}"
            );
            assert!(!e.to_string().contains("SECRET"));
        }
        let e = read(&root, "loop").unwrap_err();
        assert!(matches!(e.problem, Problem::Loop), "{e}");
        assert!(read(&root, "nope").unwrap_err().is_missing());
        assert!(read(&root, "a/b/file/x").unwrap_err().is_missing());
        for dir in ["a", ".", "a/up"] {
            let e = read(&root, dir).unwrap_err();
            assert!(matches!(e.problem, Problem::NotRegular), "{dir}: {e}");
        }
        let resolved = FileRef::inside(&root, "r", "a/up/../rel")
            .resolve()
            .unwrap();
        assert_eq!(resolved, root.join("a/b/file"));
    }

    #[test]
    fn only_regular_files_up_to_the_cap() {
        let (td, root) = tree();
        let e = FileRef::Given(PathBuf::from("/dev/zero"))
            .read(10)
            .unwrap_err();
        assert!(matches!(e.problem, Problem::NotRegular), "{e}");
        let e = FileRef::inside(&root, "r", "a/b/file").read(5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a/b/file: larger than 5 bytes, the most that is read"
        );
        let big = td.path().join("big");
        fs::write(&big, vec![b'x'; 2 << 20]).unwrap();
        let e = FileRef::Given(big).read(1 << 20).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("larger than 1 MiB, the most that is read"),
            "{e}"
        );
        // A user's own path may be a symlink anywhere.
        let given = FileRef::Given(root.join("abs"));
        assert_eq!(given.read(100).unwrap(), b"SECRET");
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for f in [FileRef::Given(fifo), FileRef::inside(&root, "r", "fifo")] {
            let e = f.read(100).unwrap_err();
            assert!(matches!(e.problem, Problem::NotRegular), "{e}");
        }
        fs::write(root.join("bin"), [0xff, 0xfe]).unwrap();
        let e = FileRef::inside(&root, "r", "bin")
            .read_text(10)
            .unwrap_err();
        assert!(matches!(e.problem, Problem::NotText), "{e}");
    }

    #[test]
    fn suffixes_and_names() {
        let f = FileRef::inside(Path::new("/r"), "r", "api/Dockerfile");
        assert_eq!(
            f.with_suffix(".dockerignore").name(),
            "api/Dockerfile.dockerignore"
        );
        assert_eq!(f.nominal_path(), Path::new("/r/api/Dockerfile"));
        let g = FileRef::Given(PathBuf::from("/x/D"));
        assert_eq!(g.with_suffix(".dockerignore").name(), "/x/D.dockerignore");
    }

    #[test]
    fn excerpts_and_keywords() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(50);
        assert_eq!(excerpt(&long), format!("{}…", "é".repeat(40)));
        assert_eq!(keyword("COPPY").as_deref(), Some("COPPY"));
        assert_eq!(
            keyword("ABCDEFGHIJKLMNOPQRSTUVWXYZ").as_deref(),
            Some("ABCDEFGHIJKLMNOPQRST…")
        );
        for not_word in ["PATH=/usr/bin", "root:x:0:0", "", "ab12cd", "é"] {
            assert_eq!(keyword(not_word), None, "{not_word}");
        }
    }
}
