//! Which host IDs a RUN step's user namespace maps its IDs to, and writing
//! those maps for the helper's process.
//!
//! - An unprivileged user with a range in `/etc/subuid` and `/etc/subgid`:
//!   container 0 is the user, 1.. the range, written by the setuid
//!   `newuidmap`/`newgidmap` (package `uidmap`), as rootless podman and
//!   BuildKit's rootlesskit do.
//! - root: its own entry in those files if it has one, else a fixed block of
//!   65536 IDs above what `useradd` hands out (so it collides with no user's
//!   range), written directly (root may write any map). A RUN step never runs
//!   as the host's root.
//! - Anyone else: the one user as container root, with a warning.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where root's IDs go when `/etc/subuid` has no entry for root: above
/// `SUB_UID_MAX` (600100000), the top of what `useradd` allocates.
pub const ROOT_DEFAULT_BASE: u32 = 1 << 30;
/// The size of a full range: every ID a Debian or Alpine image uses.
pub const FULL_RANGE: u32 = 65536;

/// Container IDs `container..container+size` are host IDs `host..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// How the maps get written for the namespace's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapWriter {
    /// Written to `/proc/PID/{uid,gid}_map` by the helper. An unprivileged
    /// user may map only itself and must deny `setgroups` first.
    Direct { deny_setgroups: bool },
    /// `newuidmap` / `newgidmap`, which check `/etc/subuid` and `/etc/subgid`.
    NewIdMap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
    pub writer: MapWriter,
}

/// Who runs dockless, as the mapping needs it.
#[derive(Debug, Clone)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
    pub name: Option<String>,
}

impl HostUser {
    pub fn current() -> HostUser {
        let uid = rustix::process::getuid().as_raw();
        let name = super::user::host_user_name(uid);
        HostUser {
            uid,
            gid: rustix::process::getgid().as_raw(),
            name,
        }
    }

    fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.uid.to_string())
    }
}

/// The mapping for `user`, and a warning to show once when it is degraded.
pub fn choose(
    user: &HostUser,
    subuid: &str,
    subgid: &str,
    have_newidmap: bool,
) -> (IdMapping, Option<String>) {
    let uid_ranges = subordinate_ranges(subuid, user.name.as_deref(), user.uid);
    let gid_ranges = subordinate_ranges(subgid, user.name.as_deref(), user.uid);
    if user.uid == 0 {
        return (root_mapping(&uid_ranges, &gid_ranges, subuid, subgid), None);
    }
    if !uid_ranges.is_empty() && !gid_ranges.is_empty() {
        if have_newidmap {
            let mapping = IdMapping {
                uids: with_self(user.uid, &uid_ranges),
                gids: with_self(user.gid, &gid_ranges),
                writer: MapWriter::NewIdMap,
            };
            return (mapping, None);
        }
        let warning = format!(
            "{} has subordinate IDs but newuidmap/newgidmap are not installed (Debian/Ubuntu package `uidmap`); \
             RUN steps see only root, so chown to other IDs and apt-get's `_apt` user will fail",
            user.label()
        );
        return (single(user), Some(warning));
    }
    (single(user), Some(no_range_warning(&user.label())))
}

fn no_range_warning(name: &str) -> String {
    format!(
        "{name} has no subordinate ID range in /etc/subuid and /etc/subgid: RUN steps see only root (uid 0), \
         so chown to other IDs, useradd'ed users and apt-get's `_apt` sandbox user will fail. \
         Add a range: `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {name}` \
         (pick a block no other user has; newuidmap comes with the package `uidmap`)"
    )
}

fn single(user: &HostUser) -> IdMapping {
    IdMapping {
        uids: vec![IdRange {
            container: 0,
            host: user.uid,
            size: 1,
        }],
        gids: vec![IdRange {
            container: 0,
            host: user.gid,
            size: 1,
        }],
        writer: MapWriter::Direct {
            deny_setgroups: true,
        },
    }
}

/// Container 0 is the user itself, 1.. its subordinate ranges in order.
fn with_self(own: u32, ranges: &[(u32, u32)]) -> Vec<IdRange> {
    let mut out = vec![IdRange {
        container: 0,
        host: own,
        size: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in ranges {
        out.push(IdRange {
            container: next,
            host: start,
            size: count,
        });
        next = next.saturating_add(count);
    }
    out
}

fn root_mapping(
    uid_ranges: &[(u32, u32)],
    gid_ranges: &[(u32, u32)],
    subuid: &str,
    subgid: &str,
) -> IdMapping {
    let own = |ranges: &[(u32, u32)]| {
        ranges.first().map(|&(start, count)| IdRange {
            container: 0,
            host: start,
            size: count,
        })
    };
    let fallback = IdRange {
        container: 0,
        host: free_block(subuid, subgid),
        size: FULL_RANGE,
    };
    IdMapping {
        uids: vec![own(uid_ranges).unwrap_or(fallback)],
        gids: vec![own(gid_ranges).unwrap_or(fallback)],
        writer: MapWriter::Direct {
            deny_setgroups: false,
        },
    }
}

/// The first block of [`FULL_RANGE`] IDs from [`ROOT_DEFAULT_BASE`] up that
/// no entry of either file overlaps.
fn free_block(subuid: &str, subgid: &str) -> u32 {
    let taken: Vec<(u64, u64)> = [subuid, subgid]
        .iter()
        .flat_map(|text| all_ranges(text))
        .map(|(start, count)| (u64::from(start), u64::from(start) + u64::from(count)))
        .collect();
    let mut base = u64::from(ROOT_DEFAULT_BASE);
    while let Some(&(_, end)) = taken
        .iter()
        .find(|&&(start, end)| start < base + u64::from(FULL_RANGE) && base < end)
    {
        base = end.next_multiple_of(u64::from(FULL_RANGE));
    }
    u32::try_from(base).unwrap_or(ROOT_DEFAULT_BASE)
}

fn parse_line(line: &str) -> Option<(&str, u32, u32)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split(':');
    let owner = fields.next()?;
    let start = fields.next()?.trim().parse().ok()?;
    let count: u32 = fields.next()?.trim().parse().ok()?;
    (count > 0).then_some((owner, start, count))
}

fn all_ranges(text: &str) -> impl Iterator<Item = (u32, u32)> + '_ {
    text.lines()
        .filter_map(parse_line)
        .map(|(_, start, count)| (start, count))
}

/// The `(start, count)` entries of `/etc/subuid`-format `text` that belong
/// to the user, named either way.
pub fn subordinate_ranges(text: &str, name: Option<&str>, uid: u32) -> Vec<(u32, u32)> {
    let uid_text = uid.to_string();
    text.lines()
        .filter_map(parse_line)
        .filter(|(owner, _, _)| Some(*owner) == name || *owner == uid_text)
        .map(|(_, start, count)| (start, count))
        .collect()
}

/// The mapping dockless uses for RUN steps run by this process's user, and a
/// warning when it is degraded.
pub fn for_current_user() -> (IdMapping, Option<String>) {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let have_tools = find_in_path("newuidmap").is_some() && find_in_path("newgidmap").is_some();
    choose(
        &HostUser::current(),
        &read("/etc/subuid"),
        &read("/etc/subgid"),
        have_tools,
    )
}

pub(crate) fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn lookup(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.container && id - r.container < r.size)
        .map(|r| r.host + (id - r.container))
}

impl IdMapping {
    /// The host uid that container uid `uid` is, if mapped.
    pub fn host_uid(&self, uid: u32) -> Option<u32> {
        lookup(&self.uids, uid)
    }

    pub fn host_gid(&self, gid: u32) -> Option<u32> {
        lookup(&self.gids, gid)
    }

    /// The range is the one user: only container root exists.
    pub fn is_single(&self) -> bool {
        self.uids.iter().map(|r| u64::from(r.size)).sum::<u64>() == 1
    }

    /// Writes the maps of process `pid`, which has just unshared its user
    /// namespace. Runs in the helper's mapper child, outside that namespace.
    pub(crate) fn apply(&self, pid: i32) -> Result<(), String> {
        match self.writer {
            MapWriter::Direct { deny_setgroups } => {
                let proc_dir = Path::new("/proc").join(pid.to_string());
                if deny_setgroups {
                    write_proc(&proc_dir.join("setgroups"), "deny")?;
                }
                write_proc(&proc_dir.join("uid_map"), &map_text(&self.uids))?;
                write_proc(&proc_dir.join("gid_map"), &map_text(&self.gids))
            }
            MapWriter::NewIdMap => {
                // Both at once: each is a setuid program's start-up.
                let uids = map_tool("newuidmap", pid, &self.uids)?;
                let gids = map_tool("newgidmap", pid, &self.gids)?;
                finish_map_tool("newuidmap", uids).and(finish_map_tool("newgidmap", gids))
            }
        }
    }
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.container, r.host, r.size))
        .collect()
}

fn write_proc(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn map_tool(tool: &str, pid: i32, ranges: &[IdRange]) -> Result<std::process::Child, String> {
    let mut cmd = std::process::Command::new(tool);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([r.container, r.host, r.size].map(|n| n.to_string()));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {tool}: {e}"))
}

fn finish_map_tool(tool: &str, child: std::process::Child) -> Result<(), String> {
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running {tool}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{tool} {}: {}",
        out.status,
        stderr.lines().next().unwrap_or("")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, name: &str) -> HostUser {
        HostUser {
            uid,
            gid: uid,
            name: Some(name.into()),
        }
    }

    #[test]
    fn a_user_with_a_range_maps_itself_then_the_range() {
        let (m, warning) = choose(
            &user(1000, "alice"),
            "bob:100000:65536\nalice:165536:65536\n",
            "1000:165536:65536\n",
            true,
        );
        assert_eq!(warning, None);
        assert_eq!(m.writer, MapWriter::NewIdMap);
        assert_eq!(m.host_uid(0), Some(1000));
        assert_eq!(m.host_uid(1), Some(165536));
        assert_eq!(m.host_uid(65536), Some(231071));
        assert_eq!(m.host_uid(65537), None);
        assert_eq!(m.host_gid(33), Some(165568));
    }

    #[test]
    fn a_user_without_a_range_is_root_alone_and_is_told_how_to_add_one() {
        let (m, warning) = choose(&user(1000, "alice"), "bob:100000:65536\n", "", true);
        assert!(m.is_single());
        assert_eq!(
            m.writer,
            MapWriter::Direct {
                deny_setgroups: true
            }
        );
        let warning = warning.unwrap();
        assert!(warning.contains("usermod --add-subuids"), "{warning}");
        assert!(warning.contains("alice"), "{warning}");
    }

    #[test]
    fn root_uses_its_own_entry_or_a_block_no_user_has() {
        let (m, _) = choose(
            &user(0, "root"),
            "root:200000:65536\n",
            "0:300000:70000\n",
            true,
        );
        assert_eq!(m.host_uid(0), Some(200000));
        assert_eq!(m.host_gid(0), Some(300000));
        assert_eq!(m.gids[0].size, 70000);

        let (m, warning) = choose(&user(0, "root"), "", "", false);
        assert_eq!(warning, None);
        assert_eq!(m.host_uid(0), Some(ROOT_DEFAULT_BASE));
        assert_eq!(m.host_uid(65535), Some(ROOT_DEFAULT_BASE + 65535));

        let taken = format!("carol:{}:100000\n", ROOT_DEFAULT_BASE + 10);
        let (m, _) = choose(&user(0, "root"), &taken, "", false);
        let base = m.host_uid(0).unwrap();
        assert!(base >= ROOT_DEFAULT_BASE + 100010 && base % FULL_RANGE == 0);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let text = "# comment\nalice\nalice:x:5\nalice:10:0\nalice:7:3\n";
        assert_eq!(subordinate_ranges(text, Some("alice"), 1), vec![(7, 3)]);
    }
}
