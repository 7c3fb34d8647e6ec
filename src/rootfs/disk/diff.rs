//! What a step changed, as layer entries, from an overlayfs upper folder or
//! from a before/after walk of a copied root.
//!
//! Both give the same entries for the same change: what is new or changed,
//! with every parent folder (as Docker's layers carry them); a deletion as
//! a `.wh.NAME` whiteout; a folder that replaced a folder as opaque
//! (`.wh..wh..opq`) with all its content (a folder with another inode or
//! birth time replaced the one before). A folder is changed when its
//! mode, owner or mtime is (not its ctime: the sandbox's mount points
//! change it); a file or link also when its ctime, inode or size is, so a
//! same-size rewrite with the mtime put back is still seen (kaniko's
//! mtime-only snapshots miss it). mtimes later than SOURCE_DATE_EPOCH are
//! clamped to it, as BuildKit's rewrite-timestamp does.

use super::apply::walk;
use super::{DiskError, OpaqueXattr};
use crate::layer::{EntryData, FileSource, LayerEntry, OPAQUE_WHITEOUT};
use crate::rootfs::overlay::WHITEOUT;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The file a whiteout's (empty) body is read from.
const EMPTY: &str = "/dev/null";

/// What the before/after walk compares, per path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stat {
    dir: bool,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    /// A folder's birth time where the filesystem keeps one: an inode
    /// number can be reused at once (`rmdir d && mkdir d`), a birth time not.
    born: Option<(i64, u32)>,
    link: Option<PathBuf>,
}

impl Stat {
    fn of(path: &Path, md: &fs::Metadata) -> Stat {
        let link = md
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(path).unwrap_or_default());
        Stat {
            dir: md.is_dir(),
            mode: md.mode(),
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            born: md.is_dir().then(|| birth_time(path)).flatten(),
            link,
        }
    }

    /// Whether `after` is another folder at the same path.
    fn replaced_dir(&self, after: &Stat) -> bool {
        self.dir && after.dir && (self.ino != after.ino || self.born != after.born)
    }

    /// Whether `after` differs from this: a folder by mode, owner and mtime.
    fn changed(&self, after: &Stat) -> bool {
        if self.dir && after.dir {
            return (self.mode, self.uid, self.gid, self.mtime)
                != (after.mode, after.uid, after.gid, after.mtime);
        }
        self != after
    }
}

type Snapshot = BTreeMap<String, Stat>;

fn birth_time(path: &Path) -> Option<(i64, u32)> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let st = statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BTIME).ok()?;
    (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn take(root: &Path) -> Result<Snapshot, DiskError> {
    Ok(walk(root)?
        .into_iter()
        .map(|(rel, md)| {
            let stat = Stat::of(&root.join(&rel), &md);
            (rel, stat)
        })
        .collect())
}

/// Records the root's state before a step, for [`walk_entries`].
pub(super) fn save_snapshot(root: &Path, out: &Path) -> Result<(), DiskError> {
    let snapshot = take(root)?;
    let bytes = serde_json::to_vec(&snapshot).map_err(|e| io_at(out)(e.into()))?;
    fs::write(out, bytes).map_err(io_at(out))
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Builds the entries, keeping hard links and adding every parent folder.
struct Entries<'a> {
    root: &'a Path,
    epoch: u64,
    out: BTreeMap<String, LayerEntry>,
    links: HashMap<(u64, u64), String>,
}

impl<'a> Entries<'a> {
    fn new(root: &'a Path, epoch: u64) -> Entries<'a> {
        Entries {
            root,
            epoch,
            out: BTreeMap::new(),
            links: HashMap::new(),
        }
    }

    /// The path as it is on disk; devices, fifos and sockets are left out
    /// (a layer entry cannot hold them, and a rootless step cannot make devices).
    fn add(&mut self, rel: &str, md: &fs::Metadata) -> Result<(), DiskError> {
        let path = self.root.join(rel);
        let ft = md.file_type();
        let data = if ft.is_dir() {
            EntryData::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(io_at(&path))?;
            EntryData::Symlink(target.to_string_lossy().into_owned())
        } else if ft.is_file() {
            let key = (md.dev(), md.ino());
            match self.links.get(&key) {
                Some(first) if md.nlink() > 1 => EntryData::HardLink(first.clone()),
                _ => {
                    if md.nlink() > 1 {
                        self.links.insert(key, rel.to_string());
                    }
                    EntryData::File {
                        source: FileSource::Path(path),
                        size: md.size(),
                    }
                }
            }
        } else {
            return Ok(());
        };
        let mtime = u64::try_from(md.mtime()).unwrap_or(0).min(self.epoch);
        self.out.insert(
            rel.to_string(),
            LayerEntry {
                path: rel.to_string(),
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                data,
                mtime: Some(mtime),
            },
        );
        Ok(())
    }

    /// An empty marker file named `name` in `dir`.
    fn marker(&mut self, dir: &str, name: &str) {
        let rel = join(dir, name);
        self.out.insert(
            rel.clone(),
            LayerEntry {
                path: rel,
                mode: 0,
                uid: 0,
                gid: 0,
                data: EntryData::File {
                    source: FileSource::Path(EMPTY.into()),
                    size: 0,
                },
                mtime: None,
            },
        );
    }

    fn whiteout(&mut self, rel: &str) {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        self.marker(parent(rel), &format!("{WHITEOUT}{name}"));
    }

    /// The entries, sorted, with the parent folders of each (from `root`).
    fn finish(mut self) -> Result<Vec<LayerEntry>, DiskError> {
        let mut parents = BTreeSet::new();
        for rel in self.out.keys() {
            let mut p = parent(rel);
            while !p.is_empty() && parents.insert(p.to_string()) {
                p = parent(p);
            }
        }
        for dir in parents {
            if !self.out.contains_key(&dir) {
                let path = self.root.join(&dir);
                let md = fs::symlink_metadata(&path).map_err(io_at(&path))?;
                self.add(&dir, &md)?;
            }
        }
        Ok(self.out.into_values().collect())
    }
}

fn is_whiteout_device(md: &fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path, xattr: OpaqueXattr) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, xattr.name(), &mut value), Ok(1) if value[0] == b'y')
}

/// The folder at `rel` in the highest lower layer that has `rel`, if that is a folder.
fn lower_dir(lowers: &[PathBuf], rel: &str) -> Option<fs::Metadata> {
    lowers
        .iter()
        .find_map(|lower| fs::symlink_metadata(lower.join(rel)).ok())
        .filter(|md| md.is_dir() && !is_whiteout_device(md))
}

/// The entries of an overlayfs upper folder over `lowers` (top first).
pub(super) fn upper_entries(
    upper: &Path,
    lowers: &[PathBuf],
    opaque: OpaqueXattr,
    epoch: u64,
) -> Result<Vec<LayerEntry>, DiskError> {
    let all = walk(upper)?;
    let mut entries = Entries::new(upper, epoch);
    for (i, (rel, md)) in all.iter().enumerate() {
        if is_whiteout_device(md) {
            entries.whiteout(rel);
            continue;
        }
        if !md.is_dir() {
            entries.add(rel, md)?;
            continue;
        }
        let has_children = all
            .get(i + 1)
            .is_some_and(|(next, _)| next.starts_with(&format!("{rel}/")));
        let below = lower_dir(lowers, rel);
        // Opaque means something only over a lower folder.
        let replaced = below.is_some() && is_opaque(&upper.join(rel), opaque);
        let same = below.as_ref().is_some_and(|b| {
            (b.mode(), b.uid(), b.gid(), b.mtime(), b.mtime_nsec())
                == (md.mode(), md.uid(), md.gid(), md.mtime(), md.mtime_nsec())
        });
        // A folder copied up only for a mount point the sandbox made and
        // removed again is no change.
        if has_children || replaced || !same {
            entries.add(rel, md)?;
        }
        if replaced {
            entries.marker(rel, OPAQUE_WHITEOUT);
        }
    }
    entries.finish()
}

/// The entries of a root against its snapshot from before the step.
pub(super) fn walk_entries(
    root: &Path,
    snapshot: &Path,
    epoch: u64,
) -> Result<Vec<LayerEntry>, DiskError> {
    let bytes = fs::read(snapshot).map_err(io_at(snapshot))?;
    let before: Snapshot = serde_json::from_slice(&bytes).map_err(|e| io_at(snapshot)(e.into()))?;
    let after = walk(root)?;
    let mut entries = Entries::new(root, epoch);
    // Path → whether it is a folder now.
    let mut present = HashMap::new();
    // Folders that replaced a folder: everything below them is new.
    let mut replaced: Vec<String> = Vec::new();
    for (rel, md) in &after {
        present.insert(rel.as_str(), md.is_dir());
        if replaced.iter().any(|r| rel.starts_with(&format!("{r}/"))) {
            entries.add(rel, md)?;
            continue;
        }
        let now = Stat::of(&root.join(rel), md);
        match before.get(rel) {
            None => entries.add(rel, md)?,
            Some(was) if was.replaced_dir(&now) => {
                entries.add(rel, md)?;
                entries.marker(rel, OPAQUE_WHITEOUT);
                replaced.push(rel.clone());
            }
            Some(was) if was.changed(&now) => entries.add(rel, md)?,
            Some(_) => {}
        }
    }
    for rel in before.keys() {
        let gone = !present.contains_key(rel.as_str());
        // What was in a folder that is gone (or no folder now) goes with
        // it; a replaced folder's opaque marker covers what it held.
        let p = parent(rel);
        let covered = !p.is_empty() && present.get(p) != Some(&true)
            || replaced.iter().any(|r| rel.starts_with(&format!("{r}/")));
        if gone && !covered {
            entries.whiteout(rel);
        }
    }
    entries.finish()
}
