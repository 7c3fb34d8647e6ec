//! Putting layers on disk: a layer blob unpacked into a folder of its own,
//! and layer folders copied onto a root with their whiteouts applied.
//!
//! Every write stays below the folder written to: an entry's parents are
//! checked with `lstat` and never followed when they are symbolic links
//! (a tar entry below one is refused; a layer folder's directory replaces
//! it, as overlayfs shows an upper directory over a lower symlink). Nothing
//! else writes these folders meanwhile (the step has ended or not begun).

use super::{DiskError, OpaqueXattr};
use crate::digest::HashingReader;
use crate::layer::OPAQUE_WHITEOUT;
use crate::rootfs::overlay::{image_path, layer_stream, WHITEOUT};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a whiteout in the layer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Whiteouts {
    /// Overlayfs form: a 0/0 character device, and the opaque xattr.
    Overlay(OpaqueXattr),
    /// Kept as the `.wh.` files they are in the tar (a layer folder for the
    /// copying fallback, whose filesystem may itself be overlayfs).
    Files,
    /// Applied: what they hide is removed (a layer folder copied onto a root).
    Apply,
}

/// Owner, mode and mtime of an entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
}

impl Meta {
    fn of(md: &fs::Metadata) -> Meta {
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: (md.mtime(), md.mtime_nsec()),
        }
    }
}

/// Writes entries below `root`.
pub(super) struct Applier {
    root: PathBuf,
    whiteouts: Whiteouts,
    /// Directories whose times are set last, once nothing is added to them.
    dirs: Vec<(PathBuf, Meta)>,
    /// Parents already known to be real directories (cleared on removals).
    checked: HashSet<PathBuf>,
    /// Regular files this apply wrote, for hard links to them.
    written: HashSet<String>,
    /// (device, inode) of a layer folder's file → where it went, to keep hard links.
    links: HashMap<(u64, u64), PathBuf>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad_entry(path: &str, problem: impl Into<String>) -> DiskError {
    DiskError::Entry {
        path: path.to_string(),
        problem: problem.into(),
    }
}

/// Removes whatever is at `path`, a whole tree too.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_times(path: &Path, (sec, nsec): (i64, i64)) -> io::Result<()> {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Metadata of a file or symlink just written.
fn finish(path: &Path, meta: Meta, symlink: bool) -> Result<(), DiskError> {
    set_owner_mode(path, &meta, symlink).map_err(io_at(path))?;
    set_times(path, meta.mtime).map_err(io_at(path))
}

/// Owner first: chown clears set-id bits, so the mode comes after.
fn set_owner_mode(path: &Path, meta: &Meta, symlink: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))?;
    if !symlink {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    }
    Ok(())
}

impl Applier {
    pub(super) fn new(root: &Path, whiteouts: Whiteouts) -> Applier {
        Applier {
            root: root.to_path_buf(),
            whiteouts,
            dirs: Vec::new(),
            checked: HashSet::new(),
            written: HashSet::new(),
            links: HashMap::new(),
        }
    }

    /// The host path of `rel`, with every parent a real directory (missing
    /// ones made 0755 root's, as runtimes make implied parents). A parent
    /// that is not a directory is an error, unless `replace` allows
    /// replacing it.
    fn place(&mut self, rel: &str, replace: bool) -> Result<PathBuf, DiskError> {
        let mut at = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            if i + 1 == parts.len() || self.checked.contains(&at) {
                continue;
            }
            match fs::symlink_metadata(&at) {
                Ok(md) if md.is_dir() => {}
                Ok(_) if replace => {
                    remove_any(&at).map_err(io_at(&at))?;
                    self.checked.clear();
                    fs::create_dir(&at).map_err(io_at(&at))?;
                }
                Ok(_) => {
                    return Err(bad_entry(
                        rel,
                        format!("its parent /{} is not a directory", parts[..=i].join("/")),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&at).map_err(io_at(&at))?;
                    fs::set_permissions(&at, fs::Permissions::from_mode(0o755))
                        .map_err(io_at(&at))?;
                }
                Err(e) => return Err(io_at(&at)(e)),
            }
            self.checked.insert(at.clone());
        }
        Ok(at)
    }

    /// The host path of `rel` if it and its parents exist without a
    /// symbolic link on the way (what a whiteout may remove).
    fn existing(&self, rel: &str) -> Option<PathBuf> {
        let mut at = self.root.clone();
        let parts: Vec<&str> = rel.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let md = fs::symlink_metadata(&at).ok()?;
            if i + 1 < parts.len() && !md.is_dir() {
                return None;
            }
        }
        Some(at)
    }

    /// Clears `rel` for a new entry; a directory stays for a directory.
    fn clear(&mut self, rel: &str, keep_dir: bool) -> Result<PathBuf, DiskError> {
        let path = self.place(rel, self.whiteouts == Whiteouts::Apply)?;
        match fs::symlink_metadata(&path) {
            Ok(md) if md.is_dir() && keep_dir => {}
            Ok(md) => {
                if md.is_dir() {
                    self.checked.clear();
                }
                remove_any(&path).map_err(io_at(&path))?;
                self.written.remove(rel);
            }
            Err(_) => {}
        }
        Ok(path)
    }

    fn dir(&mut self, rel: &str, meta: Meta) -> Result<(), DiskError> {
        let path = self.clear(rel, true)?;
        if !path.is_dir() {
            fs::create_dir(&path).map_err(io_at(&path))?;
        }
        set_owner_mode(&path, &meta, false).map_err(io_at(&path))?;
        self.dirs.push((path, meta));
        Ok(())
    }

    fn file(
        &mut self,
        rel: &str,
        meta: Meta,
        content: &mut dyn Read,
    ) -> Result<PathBuf, DiskError> {
        let path = self.clear(rel, false)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_at(&path))?;
        io::copy(content, &mut out).map_err(io_at(&path))?;
        drop(out);
        finish(&path, meta, false)?;
        self.written.insert(rel.to_string());
        Ok(path)
    }

    fn copy_file(&mut self, rel: &str, meta: Meta, from: &Path) -> Result<PathBuf, DiskError> {
        let path = self.clear(rel, false)?;
        // std's copy uses copy_file_range, which reflinks where the filesystem can.
        fs::copy(from, &path).map_err(io_at(&path))?;
        finish(&path, meta, false)?;
        Ok(path)
    }

    fn symlink(&mut self, rel: &str, meta: Meta, target: &Path) -> Result<(), DiskError> {
        let path = self.clear(rel, false)?;
        std::os::unix::fs::symlink(target, &path).map_err(io_at(&path))?;
        finish(&path, meta, true)
    }

    fn hard_link(&mut self, rel: &str, target: &Path) -> Result<(), DiskError> {
        let path = self.clear(rel, false)?;
        fs::hard_link(target, &path).map_err(io_at(&path))
    }

    /// A whiteout of `rel`, in this applier's form.
    fn whiteout(&mut self, rel: &str) -> Result<(), DiskError> {
        match self.whiteouts {
            Whiteouts::Apply => {
                if let Some(path) = self.existing(rel) {
                    remove_any(&path).map_err(io_at(&path))?;
                    self.checked.clear();
                }
                Ok(())
            }
            Whiteouts::Overlay(_) => {
                let path = self.clear(rel, false)?;
                use rustix::fs::{makedev, mknodat, FileType, Mode, CWD};
                mknodat(
                    CWD,
                    &path,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    makedev(0, 0),
                )
                .map_err(|e| io_at(&path)(e.into()))
            }
            Whiteouts::Files => unreachable!("whiteouts are files here"),
        }
    }

    /// An opaque whiteout of the folder `rel` ("" for the root).
    fn opaque(&mut self, rel: &str) -> Result<(), DiskError> {
        match self.whiteouts {
            Whiteouts::Apply => {
                let dir = if rel.is_empty() {
                    Some(self.root.clone())
                } else {
                    self.existing(rel)
                };
                if let Some(dir) = dir.filter(|d| d.is_dir() && !d.is_symlink()) {
                    for child in fs::read_dir(&dir).map_err(io_at(&dir))? {
                        let child = child.map_err(io_at(&dir))?.path();
                        remove_any(&child).map_err(io_at(&child))?;
                    }
                    self.checked.clear();
                }
                Ok(())
            }
            Whiteouts::Overlay(xattr) => {
                let dir = if rel.is_empty() {
                    self.root.clone()
                } else {
                    // Its own entry, before or after, gives it its metadata.
                    let path = self.clear(rel, true)?;
                    if !path.is_dir() {
                        fs::create_dir(&path).map_err(io_at(&path))?;
                    }
                    path
                };
                rustix::fs::setxattr(&dir, xattr.name(), b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| io_at(&dir)(e.into()))
            }
            Whiteouts::Files => unreachable!("whiteouts are files here"),
        }
    }

    /// Sets the directories' times, deepest first, once all is written.
    pub(super) fn done(mut self) -> Result<(), DiskError> {
        self.dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (path, meta) in &self.dirs {
            set_times(path, meta.mtime).map_err(io_at(path))?;
        }
        Ok(())
    }
}

/// Unpacks a layer blob into `dest` (fresh), checking its diff_id.
pub(super) fn unpack(
    blob: fs::File,
    diff_id: &str,
    dest: &Path,
    whiteouts: Whiteouts,
) -> Result<(), DiskError> {
    let read_err = |source| DiskError::Layer(format!("blob {diff_id}: {source}"));
    let stream = layer_stream(blob).map_err(read_err)?;
    let mut hashed = HashingReader::new(stream);
    let mut applier = Applier::new(dest, whiteouts);
    {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let Some(rel) = image_path(&name) else {
                continue;
            };
            unpack_entry(&mut applier, &rel, &mut entry)?;
        }
    }
    applier.done()?;
    let (actual, _) = hashed.finish().map_err(read_err)?;
    if actual != diff_id {
        return Err(DiskError::Layer(format!(
            "blob hashes to {actual}, but the image config says {diff_id}"
        )));
    }
    Ok(())
}

fn tar_meta<R: Read>(entry: &tar::Entry<'_, R>) -> io::Result<Meta> {
    let h = entry.header();
    Ok(Meta {
        mode: h.mode()? & 0o7777,
        uid: h.uid()? as u32,
        gid: h.gid()? as u32,
        mtime: (h.mtime()? as i64, 0),
    })
}

fn unpack_entry<R: Read>(
    applier: &mut Applier,
    rel: &str,
    entry: &mut tar::Entry<'_, R>,
) -> Result<(), DiskError> {
    let (dir, base) = rel.rsplit_once('/').unwrap_or(("", rel));
    if matches!(applier.whiteouts, Whiteouts::Overlay(_)) {
        if base == OPAQUE_WHITEOUT {
            return applier.opaque(dir);
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT) {
            let hidden = if dir.is_empty() {
                hidden.to_string()
            } else {
                format!("{dir}/{hidden}")
            };
            return applier.whiteout(&hidden);
        }
    }
    let meta = tar_meta(entry).map_err(|e| bad_entry(rel, e.to_string()))?;
    let link = || {
        entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    match entry.header().entry_type() {
        tar::EntryType::Directory => applier.dir(rel, meta),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            applier.file(rel, meta, entry).map(|_| ())
        }
        tar::EntryType::Symlink => applier.symlink(rel, meta, Path::new(&link())),
        tar::EntryType::Link => {
            let target = image_path(&link())
                .filter(|t| applier.written.contains(t))
                .ok_or_else(|| {
                    bad_entry(
                        rel,
                        "a hard link to a file this layer does not hold before it",
                    )
                })?;
            let target = applier.root.join(target);
            applier.hard_link(rel, &target)
        }
        // Devices and fifos: a rootless build cannot make them (BuildKit
        // skips them too); the layer blob keeps them for the image.
        _ => Ok(()),
    }
}

/// Copies layer folders (made with [`Whiteouts::Files`], bottom first) onto
/// `root`, applying their whiteouts.
pub(super) fn stack(layers: &[PathBuf], root: &Path) -> Result<(), DiskError> {
    fs::create_dir_all(root).map_err(io_at(root))?;
    for layer in layers {
        let mut applier = Applier::new(root, Whiteouts::Apply);
        let entries = walk(layer)?;
        // Whiteouts hide what is below; this layer's own entries come after.
        for (rel, _) in &entries {
            let (dir, base) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
            if base == OPAQUE_WHITEOUT {
                applier.opaque(dir)?;
            } else if let Some(hidden) = base.strip_prefix(WHITEOUT) {
                let hidden = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                applier.whiteout(&hidden)?;
            }
        }
        for (rel, md) in &entries {
            let base = rel.rsplit('/').next().unwrap_or(rel);
            if base.starts_with(WHITEOUT) {
                continue;
            }
            copy_entry(&mut applier, layer, rel, md)?;
        }
        applier.done()?;
    }
    Ok(())
}

fn copy_entry(
    applier: &mut Applier,
    layer: &Path,
    rel: &str,
    md: &fs::Metadata,
) -> Result<(), DiskError> {
    let from = layer.join(rel);
    let meta = Meta::of(md);
    let ft = md.file_type();
    if ft.is_dir() {
        applier.dir(rel, meta)
    } else if ft.is_symlink() {
        let target = fs::read_link(&from).map_err(io_at(&from))?;
        applier.symlink(rel, meta, &target)
    } else if ft.is_file() {
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(first) = applier.links.get(&key).cloned() {
                return applier.hard_link(rel, &first);
            }
        }
        let path = applier.copy_file(rel, meta, &from)?;
        if md.nlink() > 1 {
            applier.links.insert(key, path);
        }
        Ok(())
    } else {
        // Devices, fifos and sockets, as in `unpack_entry`.
        Ok(())
    }
}

/// Every path below `dir` (relative, parents first, sorted) with its lstat.
pub(super) fn walk(dir: &Path) -> Result<Vec<(String, fs::Metadata)>, DiskError> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| DiskError::Io {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into(),
        })?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let md = entry.metadata().map_err(|e| DiskError::Io {
            path: entry.path().to_path_buf(),
            source: e.into(),
        })?;
        out.push((rel.to_string_lossy().into_owned(), md));
    }
    Ok(out)
}
