//! `ADD` of a local tar archive, plain or compressed with gzip, bzip2, xz or
//! zstd: its entries become nodes of the stage's root filesystem model, as
//! BuildKit's unpack (`solver/llbsolver/file/unpack.go`, go-archive
//! `Unpack`) puts them on disk. Nothing is extracted by path on disk, so
//! `../`, absolute names and hostile symlinks cannot reach outside the image
//! root.

use crate::layer::FileSource;
use crate::rootfs::{basename, clean, FsError, Node, NodeKind, RootFs};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{archive}: {source}")]
    Io { archive: PathBuf, source: io::Error },
    #[error("{archive}: hard link {entry:?} targets {target:?}, which is not a file earlier in the archive")]
    BadHardLink {
        archive: PathBuf,
        entry: String,
        target: String,
    },
    #[error("{archive}: entry {entry:?}: unhandled tar header type {typeflag}")]
    UnhandledType {
        archive: PathBuf,
        entry: String,
        typeflag: u8,
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
    TarBz2,
    TarXz,
    TarZst,
}

/// The compression go-archive's `compression.Detect` finds in the first
/// bytes (checked in its order: bzip2, gzip, xz, zstd).
fn compression_of(head: &[u8]) -> ArchiveKind {
    let zstd_skippable = head
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0xFFFF_FFF0 == 0x184D_2A50)
        .unwrap_or(false);
    if head.starts_with(b"BZh") {
        ArchiveKind::TarBz2
    } else if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        ArchiveKind::TarGz
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        ArchiveKind::TarXz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) || zstd_skippable {
        ArchiveKind::TarZst
    } else {
        ArchiveKind::Tar
    }
}

/// The decompressed stream. Every decoder reads concatenated members or
/// streams to the end, as pigz, pbzip2 and `xz -T` write them.
/// bzip2: the `bzip2` crate (its default backend is pure Rust); xz:
/// `liblzma`, the maintained fork of `xz2` (xz itself, built from source);
/// zstd: the `zstd` crate the layers already use.
fn decoder(kind: ArchiveKind, file: File) -> io::Result<Box<dyn Read>> {
    let file = BufReader::new(file);
    Ok(match kind {
        ArchiveKind::Tar => Box::new(file),
        ArchiveKind::TarGz => Box::new(flate2::read::MultiGzDecoder::new(file)),
        ArchiveKind::TarBz2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        ArchiveKind::TarXz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(file)),
        ArchiveKind::TarZst => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// Tells whether `ADD` should extract a file, as BuildKit's `isArchivePath`
/// does, by content and never by name: once decompressed (when it is
/// compressed at all), it must start with a tar header. Anything else, a
/// compressed file that is not a tar included, is copied as it is.
pub fn detect(path: &Path) -> Result<Option<ArchiveKind>, ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        archive: path.to_path_buf(),
        source,
    };
    let mut head = [0u8; 10];
    let n = read_up_to(&mut File::open(path).map_err(io_err)?, &mut head).map_err(io_err)?;
    let kind = compression_of(&head[..n]);
    let Ok(mut stream) = decoder(kind, File::open(path).map_err(io_err)?) else {
        return Ok(None);
    };
    let mut block = [0u8; 512];
    // A stream that does not decode is not an archive, as in BuildKit.
    let m = read_up_to(&mut stream, &mut block).unwrap_or(0);
    Ok(is_tar_header(&block[..m]).then_some(kind))
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

/// A tar header block: its checksum matches, summed over unsigned or (as
/// some old tars wrote it) signed bytes, as Go's `archive/tar` accepts.
/// An all-zero block (an empty archive) is not one.
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        return false;
    }
    let stored = std::str::from_utf8(&block[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| i64::from_str_radix(s, 8).ok());
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored.is_some_and(|s| s == unsigned || s == signed)
}

/// `ADD --chown`'s owner: with it, every extracted entry gets this owner
/// (BuildKit v0.23.0, commit 46e52f472 "file: add chown to archive unpack
/// from copy"); without it, entries keep the tar's.
pub type Owner = Option<(u32, u32)>;

/// Extracts `archive` into `fs` below `dest`, writing file bodies to fresh
/// files in `staging`, as go-archive's `Unpack` in a chroot at `dest` does:
/// - names are rooted at `dest`: `../x`, `/x` and `a/../../x` are `dest/x`;
/// - the archive's own `./` entry leaves `dest` as it is;
/// - directories the archive implies without listing are root's, 0755;
/// - an entry replaces whatever is at its path, unless both are directories,
///   in which case the directory takes the entry's metadata;
/// - FIFOs are kept; devices are skipped (a rootless build cannot make
///   them), and so are global PAX headers.
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    fs: &mut RootFs,
    dest: &str,
    chown: Owner,
    staging: &Path,
) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        archive: archive.to_path_buf(),
        source,
    };
    let reader = decoder(kind, File::open(archive).map_err(io_err)?).map_err(io_err)?;
    let mut tar = tar::Archive::new(reader);
    for (n, entry) in tar.entries().map_err(io_err)?.enumerate() {
        let mut entry = entry.map_err(io_err)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header().clone();
        let fs_err = |source| ArchiveError::Fs {
            archive: archive.to_path_buf(),
            entry: name.clone(),
            source,
        };
        let rel = clean("", &name);
        let mode = header.mode().map_err(io_err)? & 0o7777;
        let (uid, gid) = match chown {
            Some(owner) => owner,
            None => (
                u32::try_from(header.uid().map_err(io_err)?).unwrap_or(u32::MAX),
                u32::try_from(header.gid().map_err(io_err)?).unwrap_or(u32::MAX),
            ),
        };
        let typeflag = header.as_bytes()[156];
        // Go's reader takes an old-style regular entry named `x/` for a directory.
        let is_dir = header.entry_type() == tar::EntryType::Directory
            || (typeflag == 0 && name.ends_with('/'));
        if rel.is_empty() {
            // `.` never touches the destination; a name that cleans to `/`
            // is not `.` to go-archive, so it sets the destination's metadata.
            if is_dir && name.starts_with('/') && !dest.is_empty() {
                fs.insert(dest, Node::dir(mode, uid, gid)).map_err(fs_err)?;
            }
            continue;
        }
        // Parents resolve through symlinks already there, with `dest` as the
        // root, as in BuildKit's chroot; implied directories are root's.
        let parent_rel = rel.rsplit_once('/').map_or("", |(p, _)| p);
        let parent = fs
            .mkdir_all_within(dest, parent_rel, Node::dir(0o755, 0, 0))
            .map_err(fs_err)?;
        let path = clean(&parent, basename(&rel));
        let kind = match header.entry_type() {
            _ if is_dir => NodeKind::Dir,
            tar::EntryType::Symlink => NodeKind::Symlink(link_name(&entry)),
            tar::EntryType::Fifo => NodeKind::Fifo,
            tar::EntryType::Link => {
                let target = link_name(&entry);
                let linked_path = fs.resolve_within(dest, &target, false).map_err(fs_err)?;
                let node = Node {
                    kind: NodeKind::Dir,
                    mode,
                    uid,
                    gid,
                };
                hard_link(fs, &linked_path, &path, node).map_err(|e| match e {
                    Some(source) => fs_err(source),
                    None => ArchiveError::BadHardLink {
                        archive: archive.to_path_buf(),
                        entry: name.clone(),
                        target: target.clone(),
                    },
                })?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::GNUSparse => {
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
            // Devices need root; a global PAX header is no file.
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::XGlobalHeader => {
                continue
            }
            _ => {
                return Err(ArchiveError::UnhandledType {
                    archive: archive.to_path_buf(),
                    entry: name.clone(),
                    typeflag,
                })
            }
        };
        fs.replace(
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

fn link_name(entry: &tar::Entry<impl Read>) -> String {
    entry
        .link_name_bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Makes `path` a second name of the file at `target`. The inode is shared,
/// so the link entry's mode and owner (in `meta`) apply to both names, as
/// go-archive's chown and chmod of the link do. `Err(None)` when `target`
/// is not a file.
fn hard_link(fs: &mut RootFs, target: &str, path: &str, meta: Node) -> Result<(), Option<FsError>> {
    let mut linked = fs.get(target).cloned().ok_or(None)?;
    let NodeKind::File { link_key, .. } = &mut linked.kind else {
        return Err(None);
    };
    // Both names share one key, so the layer writes a hard link as the tar had.
    link_key.get_or_insert_with(synthetic_link_key);
    linked.mode = meta.mode;
    linked.uid = meta.uid;
    linked.gid = meta.gid;
    fs.insert(target, linked.clone()).map_err(Some)?;
    if path != target {
        fs.replace(path, linked).map_err(Some)?;
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
        extract_into(bytes, RootFs::default(), None)
    }

    /// Extracts into `fs` below `dest` (made first, 0755 root), with `chown`.
    fn extract_into(bytes: &[u8], mut fs: RootFs, chown: Owner) -> Result<RootFs, ArchiveError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(detect(&path).unwrap(), Some(ArchiveKind::Tar));
        fs.mkdir_all("dest", 0o755, 0, 0).unwrap();
        extract(&path, ArchiveKind::Tar, &mut fs, "dest", chown, dir.path())?;
        Ok(fs)
    }

    fn meta(fs: &RootFs, path: &str) -> (u32, u32, u32) {
        let n = fs.get(path).unwrap_or_else(|| panic!("{path} missing"));
        (n.uid, n.gid, n.mode)
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

    /// go-archive `Unpack` skips an entry named `.` over the existing
    /// destination (a change from buildah 1.28, which applies it).
    #[test]
    fn root_entry_leaves_the_destination_as_it_is() {
        let t = tar_with(&[
            ("./", tar::EntryType::Directory, ""),
            ("f", tar::EntryType::Regular, "hi"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        assert_eq!(meta(&fs, "dest"), (0, 0, 0o755));
        // A name that cleans to `/` is not `.` there: it sets the destination.
        let t = tar_with(&[("/", tar::EntryType::Directory, "")]);
        assert_eq!(meta(&extract_bytes(&t).unwrap(), "dest"), (7, 8, 0o640));
    }

    /// Extraction is rooted at the destination, as BuildKit's chroot makes
    /// it (go-archive `chrootarchive.Untar`): climbing names, absolute names
    /// and hard-link targets all land inside.
    #[test]
    fn climbing_and_absolute_names_land_inside_the_destination() {
        let t = tar_with(&[
            ("../up.txt", tar::EntryType::Regular, "x"),
            ("/abs.txt", tar::EntryType::Regular, "x"),
            ("a/../../up2.txt", tar::EntryType::Regular, "x"),
            ("hl", tar::EntryType::Link, "../../abs.txt"),
            ("/etc/passwd", tar::EntryType::Regular, "x"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        for p in [
            "dest/up.txt",
            "dest/abs.txt",
            "dest/up2.txt",
            "dest/etc/passwd",
        ] {
            assert!(fs.get(p).is_some(), "{p}");
        }
        assert_eq!(
            fs.get("dest/hl").unwrap().kind,
            fs.get("dest/abs.txt").unwrap().kind
        );
        let outside: Vec<&String> = fs.paths().filter(|p| !p.starts_with("dest")).collect();
        assert!(outside.is_empty(), "{outside:?}");
    }

    #[test]
    fn writes_through_an_outward_symlink_stay_in_the_destination() {
        let t = tar_with(&[
            ("esc", tar::EntryType::Symlink, "/../../../../tmp"),
            ("esc/pwned", tar::EntryType::Regular, "x"),
            ("up", tar::EntryType::Symlink, "../../.."),
            ("up/pwned2", tar::EntryType::Regular, "x"),
        ]);
        let fs = extract_bytes(&t).unwrap();
        let paths: Vec<&String> = fs.paths().collect();
        assert!(fs.get("dest/tmp/pwned").is_some(), "{paths:?}");
        assert!(fs.get("dest/pwned2").is_some(), "{paths:?}");
        assert!(fs.get("tmp").is_none(), "{paths:?}");
    }

    /// go-archive `Unpack` removes whatever is at an entry's path unless both
    /// are directories; a directory entry over a directory sets its metadata.
    #[test]
    fn entries_replace_what_is_there_unless_both_are_directories() {
        let mut fs = RootFs::default();
        fs.mkdir_all("dest/dir/sub", 0o755, 0, 0).unwrap();
        fs.mkdir_all("dest/merged", 0o700, 0, 0).unwrap();
        fs.mkdir_all("dest/merged/kept", 0o755, 0, 0).unwrap();
        let t = tar_with(&[
            ("dir", tar::EntryType::Regular, "now a file"),
            ("merged/", tar::EntryType::Directory, ""),
        ]);
        let fs = extract_into(&t, fs, None).unwrap();
        assert!(!fs.get("dest/dir").unwrap().is_dir());
        assert!(fs.get("dest/dir/sub").is_none());
        assert_eq!(meta(&fs, "dest/merged"), (7, 8, 0o640));
        assert!(fs.get("dest/merged/kept").is_some());
    }

    /// With --chown every entry gets the owner (BuildKit v0.23.0, commit
    /// 46e52f472, test `testDockerfileAddChownArchive`), while directories
    /// the archive only implies are root's, 0755 (go-archive
    /// `createImpliedDirectories`); buildah 1.28 does both the other way.
    #[test]
    fn chown_owns_every_entry_but_implied_folders_are_roots() {
        let t = tar_with(&[
            ("implied/sub/f", tar::EntryType::Regular, "x"),
            ("listed/", tar::EntryType::Directory, ""),
            ("sl", tar::EntryType::Symlink, "/nowhere"),
        ]);
        let fs = extract_into(&t, RootFs::default(), Some((11, 12))).unwrap();
        assert_eq!(meta(&fs, "dest/implied"), (0, 0, 0o755));
        assert_eq!(meta(&fs, "dest/implied/sub"), (0, 0, 0o755));
        for p in ["dest/implied/sub/f", "dest/listed", "dest/sl"] {
            assert_eq!(meta(&fs, p), (11, 12, 0o640), "{p}");
        }
        let fs = extract_bytes(&t).unwrap();
        assert_eq!(meta(&fs, "dest/implied/sub/f"), (7, 8, 0o640));
    }

    #[test]
    fn fifos_are_kept_and_devices_skipped() {
        let t = tar_with(&[
            ("pipe", tar::EntryType::Fifo, ""),
            ("null", tar::EntryType::Char, ""),
        ]);
        let fs = extract_bytes(&t).unwrap();
        assert_eq!(fs.get("dest/pipe").unwrap().kind, NodeKind::Fifo);
        assert!(fs.get("dest/null").is_none());
        let t = tar_with(&[("odd", tar::EntryType::Continuous, "")]);
        let e = extract_bytes(&t).unwrap_err();
        assert!(
            e.to_string().contains("unhandled tar header type 55"),
            "{e}"
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

    fn compressed(kind: ArchiveKind, data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        match kind {
            ArchiveKind::Tar => data.to_vec(),
            ArchiveKind::TarGz => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveKind::TarBz2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), Default::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveKind::TarXz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            ArchiveKind::TarZst => zstd::encode_all(data, 3).unwrap(),
        }
    }

    /// BuildKit's `isArchivePath`: detected by content (go-archive
    /// `compression.Detect`), extracted when it decompresses to a tar,
    /// copied otherwise, however it is compressed.
    #[test]
    fn compressed_tars_are_extracted_and_other_compressed_files_copied() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_with(&[("f.txt", tar::EntryType::Regular, "inside")]);
        for kind in [
            ArchiveKind::Tar,
            ArchiveKind::TarGz,
            ArchiveKind::TarBz2,
            ArchiveKind::TarXz,
            ArchiveKind::TarZst,
        ] {
            let path = dir.path().join(format!("{kind:?}"));
            std::fs::write(&path, compressed(kind, &t)).unwrap();
            assert_eq!(detect(&path).unwrap(), Some(kind));
            let mut fs = RootFs::default();
            extract(&path, kind, &mut fs, "", None, dir.path()).unwrap();
            assert!(fs.get("f.txt").is_some(), "{kind:?}");
            std::fs::write(&path, compressed(kind, b"notes, not a tar\n")).unwrap();
            assert_eq!(detect(&path).unwrap(), None, "{kind:?} text");
        }
        // An empty tar (only zero blocks) is not an archive to Go's reader.
        let path = dir.path().join("empty.tar");
        std::fs::write(&path, [0u8; 1024]).unwrap();
        assert_eq!(detect(&path).unwrap(), None);
        // A zstd skippable frame before the data is still zstd.
        let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        skippable.extend(compressed(ArchiveKind::TarZst, &t));
        std::fs::write(&path, skippable).unwrap();
        assert_eq!(detect(&path).unwrap(), Some(ArchiveKind::TarZst));
    }

    /// Old tars summed the header as signed bytes; Go's reader takes both.
    #[test]
    fn signed_header_checksums_are_tars() {
        let mut t = tar_with(&[("\u{e9}t\u{e9}.txt", tar::EntryType::Regular, "x")]);
        let signed: i64 = t[..512]
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    i64::from(*b as i8)
                }
            })
            .sum();
        t[148..156].copy_from_slice(format!("{signed:06o}\0 ").as_bytes());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signed.tar");
        std::fs::write(&path, &t).unwrap();
        assert_eq!(detect(&path).unwrap(), Some(ArchiveKind::Tar));
    }
}
