//! What a COPY or ADD source is once matched, and the small rules applied
//! to it (owner, mode, wildcards, dependency folders).

use super::archive;
use crate::context::untrusted::excerpt;
use crate::context::{ContextEntry, EntryKind};
use crate::layer::FileSource;
use crate::rootfs::{basename, clean, Node, NodeKind, RootFs};
use std::path::{Path, PathBuf};

/// Paths of an earlier stage or image, with wildcards, following symlinks inside it.
pub(super) fn stage_sources(fs: &RootFs, src: &str) -> Result<Vec<Source>, String> {
    let wanted = clean("", src);
    let paths: Vec<String> = if has_wildcard(&wanted) {
        let glob = globset::GlobBuilder::new(&wanted)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid wildcard: {e}"))?
            .compile_matcher();
        fs.paths()
            .filter(|p| glob.is_match(p.as_str()))
            .cloned()
            .collect()
    } else {
        vec![wanted.clone()]
    };
    if paths.is_empty() {
        // Skipped, as for the context, once the folder it searches exists.
        let searched = wildcard_base(&wanted);
        let found = fs.resolve(searched, true).map_err(|e| e.to_string())?;
        if !fs.is_dir(&found) {
            return Err(format!("/{searched}: no such file or directory"));
        }
        return Ok(Vec::new());
    }
    let mut sources = Vec::new();
    for path in paths {
        let resolved = fs.resolve(&path, true).map_err(|e| e.to_string())?;
        let root = if resolved.is_empty() {
            Node::dir(0o755, 0, 0)
        } else {
            fs.get(&resolved)
                .cloned()
                .ok_or_else(|| format!("/{path}: no such file or directory"))?
        };
        let children = if root.is_dir() {
            fs.children(&resolved)
        } else {
            Vec::new()
        };
        sources.push(Source::Tree {
            name: basename(&path).to_string(),
            root,
            children,
        });
    }
    Ok(sources)
}

/// The components before the first one with a wildcard (fsutil's
/// `splitWildcards`): the folder a wildcard source searches.
fn wildcard_base(path: &str) -> &str {
    let mut end = 0;
    for (i, part) in path.split('/').enumerate() {
        if has_wildcard(part) {
            break;
        }
        end = if i == 0 {
            part.len()
        } else {
            end + 1 + part.len()
        };
    }
    &path[..end]
}

/// One matched COPY/ADD source.
pub(super) enum Source {
    /// A file or directory with everything below it (paths relative to it).
    Tree {
        name: String,
        root: Node,
        children: Vec<(String, Node)>,
    },
    /// A local archive that ADD extracts.
    Archive {
        path: PathBuf,
        kind: archive::ArchiveKind,
    },
}

/// A context entry as a node; a socket becomes an empty file (`empty`, a
/// staged empty file), as BuildKit's context transfer makes it.
pub(super) fn context_node(entry: &ContextEntry, empty: &Path) -> Node {
    let kind = match &entry.kind {
        EntryKind::Dir => NodeKind::Dir,
        EntryKind::Symlink(target) => NodeKind::Symlink(target.to_string_lossy().into_owned()),
        EntryKind::File => NodeKind::File {
            source: FileSource::Path(entry.path.clone()),
            size: entry.size,
            link_key: (entry.nlink > 1).then_some((entry.dev, entry.ino)),
        },
        EntryKind::Fifo => NodeKind::Fifo,
        EntryKind::Socket => NodeKind::File {
            source: FileSource::Path(empty.to_path_buf()),
            size: 0,
            link_key: None,
        },
    };
    // The context never carries owners: files land as root unless --chown says otherwise.
    Node {
        kind,
        mode: entry.mode,
        uid: 0,
        gid: 0,
    }
}

/// Hard-linked files stay with the rest of a split COPY, so links are kept.
pub(super) fn hard_linked(node: &Node) -> bool {
    matches!(
        node.kind,
        NodeKind::File {
            link_key: Some(_),
            ..
        }
    )
}

pub(super) fn apply_owner(mut node: Node, owner: Option<(u32, u32)>, chmod: Option<u32>) -> Node {
    if let Some((uid, gid)) = owner {
        node.uid = uid;
        node.gid = gid;
    }
    if let Some(mode) = chmod {
        if !matches!(node.kind, NodeKind::Symlink(_)) {
            node.mode = mode;
        }
    }
    node
}

pub(super) fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

pub(super) fn has_wildcard(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// A numeric `--chmod`, as BuildKit's `dispatchCopy` reads it
/// (`strconv.ParseUint(s, 8, 32)`, at most 0o7777, any number of digits).
pub(super) fn parse_chmod(text: &str) -> Result<u32, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                format!(
                    "invalid chmod parameter: '{}'. it should be octal string and between 0 and 07777",
                    excerpt(text)
                )
            });
    }
    Err("expected an octal mode such as 755 (symbolic modes are not supported)".into())
}
