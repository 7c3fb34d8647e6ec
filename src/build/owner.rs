//! `--chown` and `USER` names resolved in the stage's own `/etc/passwd`
//! and `/etc/group`.

use super::base::Bases;
use crate::context::untrusted::FileRef;
use crate::layer::FileSource;
use crate::rootfs::{overlay, NodeKind, RootFs};

/// `user[:group]` by number, or by name from the stage's /etc/passwd and /etc/group.
pub(super) fn resolve_owner(spec: &str, fs: &RootFs, lazy: &Bases) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err("empty user".into());
    }
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => lookup_id(fs, lazy, "etc/passwd", user, 2)
            .map(|(uid, gid)| (uid, gid.unwrap_or(uid)))
            .ok_or_else(|| {
                format!("unknown user {user:?} (no such entry in /etc/passwd of this stage)")
            })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup_id(fs, lazy, "etc/group", g, 2)
                .map(|(gid, _)| gid)
                .ok_or_else(|| {
                    format!("unknown group {g:?} (no such entry in /etc/group of this stage)")
                })?,
        },
    };
    Ok((uid, gid))
}

/// The most of a stage's `/etc/passwd` or `/etc/group` that is read.
const ID_FILE_MAX_BYTES: u64 = 1 << 20;

/// Finds `name` in a passwd- or group-style file of the stage: (field `id_field`, next field).
fn lookup_id(
    fs: &RootFs,
    lazy: &Bases,
    file: &str,
    name: &str,
    id_field: usize,
) -> Option<(u32, Option<u32>)> {
    let resolved = fs.resolve(file, true).ok()?;
    let NodeKind::File { source, .. } = &fs.get(&resolved)?.kind else {
        return None;
    };
    let bytes = match source {
        FileSource::Path(path) => FileRef::Given(path.clone()).read(ID_FILE_MAX_BYTES).ok()?,
        // The layer may still be in its registry.
        FileSource::Layer { blob, path } => match lazy
            .ensure(blob)
            .and_then(|()| Ok(overlay::read_member(blob, path, ID_FILE_MAX_BYTES)?))
        {
            Ok(found) => found?,
            Err(e) => {
                tracing::warn!("cannot read /{file} of the stage: {e}");
                return None;
            }
        },
    };
    String::from_utf8_lossy(&bytes).lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.first() != Some(&name) {
            return None;
        }
        let id = fields.get(id_field)?.parse().ok()?;
        let next = fields.get(id_field + 1).and_then(|f| f.parse().ok());
        Some((id, next))
    })
}
