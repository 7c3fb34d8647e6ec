//! File helpers shared by the cache, the OCI layout, the registry client
//! and the service: writes that readers never see half done, and names
//! that are safe as one file name.

use std::io::{self, Write as _};
use std::path::Path;

/// What identifies a file's content without reading it: device, inode,
/// mtime and ctime in nanoseconds, and size. The layer cache maps it to the
/// file's sha256.
pub(crate) fn stat_key(md: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    format!(
        "{}:{}:{}.{}:{}.{}:{}",
        md.dev(),
        md.ino(),
        md.mtime(),
        md.mtime_nsec(),
        md.ctime(),
        md.ctime_nsec(),
        md.size()
    )
}

/// Starts writing `len` bytes at `offset` of `file` to disk without waiting,
/// so that the fsync before a big blob is committed finds little left to
/// write. A hint: errors are ignored. (std and rustix have no sync_file_range.)
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain syscall on an open descriptor; it touches no memory of ours.
    unsafe { libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
}

/// Writes `bytes` to `path` through a temporary file beside it, then renames
/// it into place, so readers see the old file or the new one, never half of
/// one. Creates the parent folder; the file gets mode 0600 (tempfile's).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    persist_beside(path, bytes, false)
}

/// [`write_atomic`] for a file that holds secrets: a new parent folder gets
/// mode 0700, the file mode 0600 whatever the umask, and the bytes reach the
/// disk before the rename.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut dirs = std::fs::DirBuilder::new();
    dirs.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        dirs.mode(0o700);
    }
    dirs.create(parent(path))?;
    persist_beside(path, bytes, true)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn persist_beside(path: &Path, bytes: &[u8], private: bool) -> io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(bytes)?;
    if private {
        temp.as_file().sync_all()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            // tempfile's 0600 is masked by the umask.
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `name` as one file name: every character but ASCII letters, digits, `.`
/// and `-` becomes `_`, so a registry host or `owner/repo` cannot name
/// another folder.
pub(crate) fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_whole_file_and_create_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("a").join("b.json");
        write_atomic(&path, b"first, longer").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[cfg(unix)]
    #[test]
    fn private_files_and_their_new_folder_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("new").join("config.json");
        write_private(&path, b"{}").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn file_names_keep_only_safe_characters() {
        assert_eq!(safe_file_name("127.0.0.1:5000"), "127.0.0.1_5000");
        assert_eq!(safe_file_name("owner/repo"), "owner_repo");
        assert_eq!(safe_file_name("../x"), ".._x");
        assert_eq!(safe_file_name("a-b.C"), "a-b.C");
    }
}
