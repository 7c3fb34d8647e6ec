//! `ADD` of a local tar archive: its entries become nodes of the stage's
//! root filesystem model. Nothing is extracted by path on disk, so `../`,
//! absolute names and hostile symlinks cannot reach outside the image root.

use crate::layer::FileSource;
use crate::rootfs::{clean, FsError, Node, NodeKind, RootFs};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{archive}: {source}")]
    Io { archive: PathBuf, source: io::Error },
    #[error("{archive}: entry {entry:?} points outside the destination")]
    Breakout { archive: PathBuf, entry: String },
    #[error("{archive}: hard link {entry:?} targets {target:?}, which is not a file earlier in the archive")]
    BadHardLink {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("{archive}: {kind} archives are not supported yet (use tar or tar.gz)")]
    Unsupported {
        archive: PathBuf,
        kind: &'static str,
    },
    #[error("{archive}: entry {entry:?}: {source}")]
    Fs {
        archive: PathBuf,
        entry: String,
        source: FsError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
}

/// Tells whether `ADD` should extract a file, as Docker does by content, not by name.
pub fn detect(path: &Path) -> Result<Option<ArchiveKind>, ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        archive: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut head = [0u8; 512];
    let n = read_up_to(&mut file, &mut head).map_err(io_err)?;
    let head = &head[..n];
    let unsupported = |kind| {
        Err(ArchiveError::Unsupported {
            archive: path.to_path_buf(),
            kind,
        })
    };
    if head.starts_with(&[0x1f, 0x8b]) {
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let mut inner = [0u8; 512];
        let m = read_up_to(&mut MultiGzDecoder::new(file), &mut inner).unwrap_or(0);
        return Ok(is_tar_header(&inner[..m]).then_some(ArchiveKind::TarGz));
    }
    if head.starts_with(b"BZh") {
        return unsupported("bzip2");
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return unsupported("xz");
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return unsupported("zstd");
    }
    Ok(is_tar_header(head).then_some(ArchiveKind::Tar))
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A tar header block has a valid checksum (and usually the ustar magic).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                u32::from(b' ')
            } else {
                u32::from(*b)
            }
        })
        .sum();
    stored == Some(sum)
}

/// Owner from `--chown` for the folders an archive implies without listing them.
pub type Owner = Option<(u32, u32)>;

/// Extracts `archive` into `fs` below `dest`, writing file bodies to fresh
/// files in `staging`. Entries keep the owners and modes the tar gives them;
/// folders the archive needs but does not list are made 0755 and owned by
/// `implied_owner` (root when None), as buildah extracts with `ADD --chown`.
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    fs: &mut RootFs,
    dest: &str,
    implied_owner: Owner,
    staging: &Path,
) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        archive: archive.to_path_buf(),
        source,
    };
    let file = BufReader::new(File::open(archive).map_err(io_err)?);
    let reader: Box<dyn Read> = match kind {
        ArchiveKind::Tar => Box::new(file),
        // pigz and parallel gzip write several members; read them all.
        ArchiveKind::TarGz => Box::new(MultiGzDecoder::new(file)),
    };
    let mut tar = tar::Archive::new(reader);
    for (n, entry) in tar.entries().map_err(io_err)?.enumerate() {
        let mut entry = entry.map_err(io_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = relative_inside(&name).ok_or_else(|| ArchiveError::Breakout {
            archive: archive.to_path_buf(),
            entry: name.clone(),
        })?;
        let header = entry.header().clone();
        let mode = header.mode().map_err(io_err)? & 0o7777;
        let uid = u32::try_from(header.uid().map_err(io_err)?).unwrap_or(u32::MAX);
        let gid = u32::try_from(header.gid().map_err(io_err)?).unwrap_or(u32::MAX);
        let fs_err = |source| ArchiveError::Fs {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            source,
        };
        if rel.is_empty() {
            // The archive's own root entry sets the destination folder's mode and
            // owner, as buildah applies it; the image root itself has no node to change.
            if header.entry_type() == tar::EntryType::Directory && !dest.is_empty() {
                fs.insert(dest, Node::dir(mode, uid, gid)).map_err(fs_err)?;
            }
            continue;
        }
        let target_path = clean(dest, &rel);
        let parent = target_path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        // Parents resolve through symlinks already extracted, but only within the model.
        let parent = fs
            .mkdir_all(
                parent,
                0o755,
                implied_owner.map_or(0, |o| o.0),
                implied_owner.map_or(0, |o| o.1),
            )
            .map_err(fs_err)?;
        let path = clean(&parent, crate::rootfs::basename(&target_path));
        let kind = match header.entry_type() {
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                NodeKind::Symlink(target)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let bad = || ArchiveError::BadHardLink {
                    archive: archive.to_path_buf(),
                    entry: name.clone(),
                    target: target.clone(),
                };
                let inside = relative_inside(&target).ok_or_else(bad)?;
                let linked_path = clean(dest, &inside);
                let mut linked = fs.get(&linked_path).cloned().ok_or_else(bad)?;
                let NodeKind::File { link_key, .. } = &mut linked.kind else {
                    return Err(bad());
                };
                // Both names share one key, so the layer writes a hard link as the tar had.
                if link_key.is_none() {
                    *link_key = Some(synthetic_link_key());
                    fs.insert(&linked_path, linked.clone()).map_err(fs_err)?;
                }
                fs.insert(&path, linked).map_err(fs_err)?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let staged = staging.join(format!("add-{n}"));
                let mut out = File::create(&staged).map_err(io_err)?;
                let size = io::copy(&mut entry, &mut out).map_err(io_err)?;
                out.flush().map_err(io_err)?;
                NodeKind::File {
                    source: FileSource::Path(staged),
                    size,
                    link_key: None,
                }
            }
            // Devices, fifos and metadata records have no place in a rootless build.
            _ => continue,
        };
        fs.insert(
            &path,
            Node {
                kind,
                mode,
                uid,
                gid,
            },
        )
        .map_err(fs_err)?;
    }
    Ok(())
}

/// A (device, inode) pair no real file has, to tie together the names of
/// one extracted file: device u64::MAX with a counter as the inode.
fn synthetic_link_key() -> (u64, u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (u64::MAX, NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The entry name as a path below the destination, or None when it climbs out.
/// A leading `/` is dropped, as Docker does.
fn relative_inside(name: &str) -> Option<String> {
    let mut depth: i32 = 0;
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
                parts.pop();
            }
            p => {
                depth += 1;
                parts.push(p);
            }
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, body) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o640);
            h.set_uid(7);
            h.set_gid(8);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    // Write names raw: the tar crate refuses `..` in paths it writes.
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                    gnu.linkname[..body.len()].copy_from_slice(body.as_bytes());
                    h.set_cksum();
                    b.append(&h, io::empty()).unwrap();
                }
                _ => {
                    h.set_size(body.len() as u64);
                    let gnu = h.as_gnu_mut().unwrap();
                    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                    h.set_cksum();
                    b.append(&h, body.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn extract_bytes(bytes: &[u8]) -> Result<RootFs, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(detect(&path).unwrap(), Some(ArchiveKind::Tar));
        let mut fs = RootFs::default();
        fs.mkdir_all("dest", 0o755, 0, 0).unwrap();
        extract(&path, ArchiveKind::Tar, &mut fs, "dest", None, dir.path())?;
        Ok(fs)
    }

    #[test]
    fn extracts_files_links_and_owners() {
        let t = tar_with(&[
            ("d/", tar::EntryType::Directory, ""),
            ("d/f", tar::EntryType::Regular, "hi"),
            ("d/s", tar::EntryType::Symlink, "f"),
            ("d/h", tar::EntryType::Link, "d/f"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        let f = fs.get("dest/d/f").unwrap();
        assert_eq!((f.uid, f.gid, f.mode), (7, 8, 0o640));
        assert_eq!(
            fs.get("dest/d/s").unwrap().kind,
            NodeKind::Symlink("f".into())
        );
        assert_eq!(fs.get("dest/d/h").unwrap().kind, f.kind);
    }

    #[test]
    fn hard_links_stay_hard_links_in_the_layer() {
        let t = tar_with(&[
            ("f", tar::EntryType::Regular, "hi"),
            ("h", tar::EntryType::Link, "f"),
        ]);
        let mut fs = extract_bytes(&t).unwrap();
        let entries = fs.take_changes();
        let h = entries.iter().find(|e| e.path == "dest/h").unwrap();
        assert_eq!(h.data, crate::layer::EntryData::HardLink("dest/f".into()));
    }

    #[test]
    fn root_entry_sets_the_destination_folder() {
        let t = tar_with(&[
            ("./", tar::EntryType::Directory, ""),
            ("f", tar::EntryType::Regular, "hi"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        let d = fs.get("dest").unwrap();
        assert!(d.is_dir());
        assert_eq!((d.uid, d.gid, d.mode), (7, 8, 0o640));
    }

    #[test]
    fn dotdot_entries_are_refused() {
        let t = tar_with(&[("../evil", tar::EntryType::Regular, "x")]);
        assert!(matches!(
            extract_bytes(&t),
            Err(ArchiveError::Breakout { .. })
        ));
    }

    #[test]
    fn absolute_names_land_below_the_destination() {
        let t = tar_with(&[("/etc/passwd", tar::EntryType::Regular, "x")]);
        let fs = extract_bytes(&t).unwrap();
        assert!(fs.get("dest/etc/passwd").is_some());
        assert!(fs.get("etc/passwd").is_none());
    }

    #[test]
    fn writes_through_an_outward_symlink_stay_in_the_image() {
        let t = tar_with(&[
            ("esc", tar::EntryType::Symlink, "/../../../../tmp"),
            ("esc/pwned", tar::EntryType::Regular, "x"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        assert!(
            fs.get("tmp/pwned").is_some(),
            "{:?}",
            fs.paths().collect::<Vec<_>>()
        );
    }

    #[test]
    fn multi_member_gzip_is_read_to_the_end() {
        let t = tar_with(&[
            ("first", tar::EntryType::Regular, "1"),
            ("second", tar::EntryType::Regular, "2"),
        ]);
        // Two gzip members, as pigz writes them.
        let (a, b) = t.split_at(512);
        let mut gz = Vec::new();
        for part in [a, b] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut enc, part).unwrap();
            gz.extend(enc.finish().unwrap());
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.gz");
        std::fs::write(&path, gz).unwrap();
        assert_eq!(detect(&path).unwrap(), Some(ArchiveKind::TarGz));
        let mut fs = RootFs::default();
        extract(&path, ArchiveKind::TarGz, &mut fs, "", None, dir.path()).unwrap();
        assert!(fs.get("first").is_some() && fs.get("second").is_some());
    }

    #[test]
    fn plain_files_are_not_archives() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        std::fs::write(&path, "just text").unwrap();
        assert_eq!(detect(&path).unwrap(), None);
    }
}
