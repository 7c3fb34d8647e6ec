//! `USER` as Docker resolves it: names looked up in the image's own
//! `/etc/passwd` and `/etc/group`, read without leaving the rootfs.

use std::path::{Component, Path, PathBuf};

/// Files bigger than this are not a passwd file (BuildKit's limit too).
const MAX_USER_FILE: u64 = 10 << 20;
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those in `/etc/group` that list the user.
    pub groups: Vec<u32>,
    /// From the passwd entry, `/` when there is none (Docker's default).
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("USER {spec}: no user {name:?} in the image's /etc/passwd; create it in an earlier RUN (useradd) or use a numeric uid")]
    NoSuchUser { spec: String, name: String },
    #[error("USER {spec}: no group {name:?} in the image's /etc/group; create it (groupadd) or use a numeric gid")]
    NoSuchGroup { spec: String, name: String },
    #[error("USER {spec}: the image's {file} cannot be read: {reason}")]
    Unreadable {
        spec: String,
        file: &'static str,
        reason: String,
    },
}

struct Entry<'a> {
    name: &'a str,
    id: u32,
    /// passwd: the primary gid; group: unused.
    gid: u32,
    /// passwd: the home directory; group: the member list.
    rest: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(Entry {
            name: f.first()?,
            id: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            rest: f.get(5).copied().unwrap_or(""),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some(Entry {
            name: f.first()?,
            id: f.get(2)?.parse().ok()?,
            gid: 0,
            rest: f.get(3).copied().unwrap_or(""),
        })
    })
}

/// Resolves `USER user[:group]` against the rootfs at `rootfs`. An empty
/// spec is root. A numeric uid needs no passwd entry; a name does.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserError> {
    resolve_user_with(spec, &|file| read_in_root(rootfs, file))
}

/// [`resolve_user`] with the image's files read by `read_file` (given
/// `/etc/passwd` or `/etc/group`; a missing file reads as empty).
pub fn resolve_user_with(
    spec: &str,
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<ResolvedUser, UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let read = |file: &'static str| {
        read_file(file).map_err(|reason| UserError::Unreadable {
            spec: spec.to_string(),
            file,
            reason,
        })
    };
    let passwd = read("/etc/passwd")?;
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(&passwd).find(|e| e.id == uid),
        Err(_) => Some(
            passwd_entries(&passwd)
                .find(|e| e.name == user)
                .ok_or_else(|| UserError::NoSuchUser {
                    spec: spec.to_string(),
                    name: user.to_string(),
                })?,
        ),
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| user.parse().unwrap_or(0), |e| e.id);
    let home = entry
        .as_ref()
        .map_or("/", |e| if e.rest.is_empty() { "/" } else { e.rest })
        .to_string();
    let mut resolved = ResolvedUser {
        uid,
        gid: entry.as_ref().map_or(0, |e| e.gid),
        groups: Vec::new(),
        home,
    };
    let needs_groups = group.is_some_and(|g| g.parse::<u32>().is_err()) || entry.is_some();
    let groups = if needs_groups {
        read("/etc/group")?
    } else {
        String::new()
    };
    match group {
        Some(g) => resolved.gid = group_id(&groups, g, spec)?,
        // Docker adds supplementary groups only when no group is given.
        None => {
            if let Some(e) = &entry {
                resolved.groups = group_entries(&groups)
                    .filter(|g| g.rest.split(',').any(|member| member == e.name))
                    .map(|g| g.id)
                    .collect();
            }
        }
    }
    Ok(resolved)
}

fn group_id(groups: &str, group: &str, spec: &str) -> Result<u32, UserError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    group_entries(groups)
        .find(|g| g.name == group)
        .map(|g| g.id)
        .ok_or_else(|| UserError::NoSuchGroup {
            spec: spec.to_string(),
            name: group.to_string(),
        })
}

/// Reads a file of the rootfs by its image path; a missing file reads as
/// empty (an image need not have an `/etc/group`).
fn read_in_root(rootfs: &Path, path: &str) -> Result<String, String> {
    let host = resolve_in_root(rootfs, path).map_err(|e| e.to_string())?;
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_USER_FILE {
        return Err(format!("larger than {MAX_USER_FILE} bytes"));
    }
    let bytes = std::fs::read(&host).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The host path of image path `path`, following symlinks as the kernel
/// would inside a chroot at `rootfs`: absolute targets and `..` stop at the
/// rootfs, never above it. Nothing runs in the rootfs while dockless reads
/// it, so a component-wise walk is enough (openat2's RESOLVE_IN_ROOT would
/// need Linux 5.6).
pub fn resolve_in_root(rootfs: &Path, path: &str) -> std::io::Result<PathBuf> {
    let mut resolved: Vec<String> = Vec::new();
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate: PathBuf = rootfs.join(resolved.join("/")).join(&part);
        match std::fs::read_link(&candidate) {
            Ok(target) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(std::io::Error::other(format!(
                        "too many levels of symbolic links at /{}",
                        resolved.join("/")
                    )));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                pending.extend(components(&target).into_iter().rev());
            }
            Err(_) => resolved.push(part),
        }
    }
    Ok(rootfs.join(resolved.join("/")))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The host's name for `uid` from `/etc/passwd`, to find its line in
/// `/etc/subuid` (which may name it either way).
pub(crate) fn host_user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let name = passwd_entries(&passwd)
        .find(|e| e.id == uid)
        .map(|e| e.name.to_string());
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nnohome:x:7:7:::\n",
        )
        .unwrap();
        std::fs::write(
            etc.join("group"),
            "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\naudio:x:29:app\nwheel:x:10:root\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_resolve_with_primary_and_supplementary_groups() {
        let dir = rootfs();
        let app = resolve_user(dir.path(), "app").unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1001));
        assert_eq!(app.groups, vec![50, 29]);
        assert_eq!(app.home, "/home/app");
        let root = resolve_user(dir.path(), "").unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.groups, vec![10]);
    }

    #[test]
    fn an_explicit_group_replaces_the_supplementary_ones() {
        let dir = rootfs();
        let u = resolve_user(dir.path(), "app:staff").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.len()), (1000, 50, 0));
        let u = resolve_user(dir.path(), "1000:7").unwrap();
        assert_eq!((u.uid, u.gid), (1000, 7));
    }

    #[test]
    fn numeric_ids_need_no_entry_but_names_do() {
        let dir = rootfs();
        let u = resolve_user(dir.path(), "4242").unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        assert_eq!(resolve_user(dir.path(), "7").unwrap().home, "/");
        let e = resolve_user(dir.path(), "ghost").unwrap_err();
        assert!(matches!(e, UserError::NoSuchUser { .. }));
        assert!(e.to_string().contains("useradd"), "{e}");
        let e = resolve_user(dir.path(), "app:ghosts").unwrap_err();
        assert!(matches!(e, UserError::NoSuchGroup { .. }));
    }

    #[test]
    fn symlinks_cannot_leave_the_rootfs() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("etc")).unwrap();
        std::fs::write(outside.path().join("etc/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        // An absolute link and a `..` climb both stay inside the rootfs.
        let abs = outside.path().join("etc");
        std::os::unix::fs::symlink(&abs, dir.path().join("etc")).unwrap();
        let e = resolve_user(dir.path(), "evil").unwrap_err();
        assert!(matches!(e, UserError::NoSuchUser { .. }), "{e:?}");
        std::fs::remove_file(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../../real", dir.path().join("etc")).unwrap();
        let host = resolve_in_root(dir.path(), "/etc/passwd").unwrap();
        assert_eq!(host, dir.path().join("real/passwd"));
    }
}
