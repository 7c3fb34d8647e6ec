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

/// A small file of the stage (`/etc/passwd`, say), read from wherever its
/// bytes are; None when the stage has no such regular file.
pub(super) fn read_stage_file(
    fs: &RootFs,
    lazy: &Bases,
    file: &str,
) -> Result<Option<Vec<u8>>, String> {
    let Ok(resolved) = fs.resolve(file, true) else {
        return Ok(None);
    };
    let Some(NodeKind::File { source, .. }) = fs.get(&resolved).map(|n| &n.kind) else {
        return Ok(None);
    };
    match source {
        FileSource::Path(path) => FileRef::Given(path.clone())
            .read(ID_FILE_MAX_BYTES)
            .map(Some)
            .map_err(|e| e.problem.to_string()),
        // The layer may still be in its registry.
        FileSource::Layer { blob, path } => {
            lazy.ensure(blob).map_err(|e| e.to_string()).and_then(|()| {
                overlay::read_member(blob, path, ID_FILE_MAX_BYTES).map_err(|e| e.to_string())
            })
        }
    }
}

/// Finds `name` in a passwd- or group-style file of the stage: (field `id_field`, next field).
fn lookup_id(
    fs: &RootFs,
    lazy: &Bases,
    file: &str,
    name: &str,
    id_field: usize,
) -> Option<(u32, Option<u32>)> {
    let bytes = match read_stage_file(fs, lazy, file) {
        Ok(found) => found?,
        Err(e) => {
            tracing::warn!("cannot read /{file} of the stage: {e}");
            return None;
        }
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
