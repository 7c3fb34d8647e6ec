//! A stage's root filesystem as metadata only: what each path is, who owns
//! it and where a file's bytes come from. Nothing is ever written to disk, so
//! a hostile symlink can only point somewhere inside this model.

pub mod disk;
pub mod overlay;

use crate::layer::{EntryData, FileSource, LayerEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File {
        source: FileSource,
        size: u64,
        /// (device, inode) of a source with several links, to keep hard links.
        link_key: Option<(u64, u64)>,
    },
    Symlink(String),
    /// A named pipe (no content).
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Node {
    pub fn dir(mode: u32, uid: u32, gid: u32) -> Node {
        Node {
            kind: NodeKind::Dir,
            mode,
            uid,
            gid,
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FsError {
    #[error("/{path} is not a directory")]
    NotADirectory { path: String },
    #[error("cannot replace directory /{path} with a file")]
    DirectoryInTheWay { path: String },
    #[error("too many levels of symbolic links at /{path}")]
    SymlinkLoop { path: String },
}

/// Joins and cleans an image path: no leading `/`, no `.`, and `..` stops at the root.
pub fn clean(base: &str, path: &str) -> String {
    let mut parts: Vec<&str> = if path.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

pub fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

const MAX_SYMLINK_HOPS: usize = 40;

#[derive(Debug, Clone, Default)]
pub struct RootFs {
    nodes: BTreeMap<String, Node>,
    /// Paths changed since the last `take_changes`, i.e. the next layer.
    changed: BTreeSet<String>,
}

impl RootFs {
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Root is always a directory; otherwise whatever is stored.
    pub fn is_dir(&self, path: &str) -> bool {
        path.is_empty() || self.nodes.get(path).is_some_and(Node::is_dir)
    }

    /// Follows symlinks in every component (and the last one when `follow_last`),
    /// resolving absolute targets from this root. Missing components are kept as they are.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, FsError> {
        self.resolve_within("", path, follow_last)
    }

    /// [`Self::resolve`] with the directory `root` (a resolved path) acting as
    /// `/`, as inside a chroot: absolute targets start there and `..` stops
    /// there. `path` is relative to `root`; the result is an image path.
    pub fn resolve_within(
        &self,
        root: &str,
        path: &str,
        follow_last: bool,
    ) -> Result<String, FsError> {
        let depth = root.split('/').filter(|p| !p.is_empty()).count();
        let mut pending: Vec<String> = clean("", path)
            .split('/')
            .rev()
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        let mut current = root.to_string();
        let mut hops = 0;
        while let Some(part) = pending.pop() {
            if part == ".." && current.split('/').filter(|p| !p.is_empty()).count() <= depth {
                continue;
            }
            let candidate = clean(&current, &part);
            let is_last = pending.is_empty();
            match self.nodes.get(&candidate).map(|n| &n.kind) {
                Some(NodeKind::Symlink(target)) if !is_last || follow_last => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(FsError::SymlinkLoop { path: candidate });
                    }
                    let (start, rest) = if target.starts_with('/') {
                        (root.to_string(), target.as_str())
                    } else {
                        (current.clone(), target.as_str())
                    };
                    current = start;
                    for p in rest.split('/').rev().filter(|p| !p.is_empty()) {
                        pending.push(p.to_string());
                    }
                }
                _ => current = candidate,
            }
        }
        Ok(current)
    }

    /// Creates each missing directory of `path` (resolved through symlinks) with the given owner.
    pub fn mkdir_all(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, FsError> {
        self.mkdir_all_within("", path, Node::dir(mode, uid, gid))
    }

    /// [`Self::mkdir_all`] for `path` below `root`, resolved with `root` as
    /// `/` (see [`Self::resolve_within`]); new directories are copies of `dir`.
    pub fn mkdir_all_within(
        &mut self,
        root: &str,
        path: &str,
        dir: Node,
    ) -> Result<String, FsError> {
        let resolved = self.resolve_within(root, path, true)?;
        let mut current = String::new();
        for part in resolved.split('/').filter(|p| !p.is_empty()) {
            current = clean(&current, part);
            match self.nodes.get(&current) {
                Some(node) if node.is_dir() => {}
                Some(_) => return Err(FsError::NotADirectory { path: current }),
                None => {
                    self.nodes.insert(current.clone(), dir.clone());
                    self.changed.insert(current.clone());
                }
            }
        }
        Ok(resolved)
    }

    /// Puts a node at `path` (whose parent must exist as a directory).
    /// A directory merges into an existing one, taking the new metadata.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<(), FsError> {
        let parent_path = parent(path);
        if !self.is_dir(parent_path) {
            return Err(FsError::NotADirectory {
                path: parent_path.into(),
            });
        }
        match self.nodes.get(path) {
            Some(existing) if existing.is_dir() && !node.is_dir() => {
                return Err(FsError::DirectoryInTheWay { path: path.into() })
            }
            Some(existing) if !existing.is_dir() && node.is_dir() => self.remove_tree(path),
            _ => {}
        }
        self.nodes.insert(path.to_string(), node);
        self.changed.insert(path.to_string());
        Ok(())
    }

    /// [`Self::insert`], but whatever is at `path` is replaced unless both
    /// are directories (which merge), as a tar extraction does. A directory
    /// tree replaced by a file needs no whiteout: the layer's entry replaces
    /// the lower directory when the layer is applied.
    pub fn replace(&mut self, path: &str, node: Node) -> Result<(), FsError> {
        if self.nodes.get(path).is_some_and(Node::is_dir) && !node.is_dir() {
            self.remove_tree(path);
        }
        self.insert(path, node)
    }

    /// Sets a node as a base layer does: whatever was there (a whole tree too)
    /// is replaced, missing parents appear as plain directories, and nothing
    /// counts as a change of the next layer.
    pub fn put_base(&mut self, path: &str, node: Node) {
        // Top-down: made bottom-up, replacing an ancestor would drop the
        // directories just made below it (and files a layer put there earlier).
        for (end, _) in path.match_indices('/') {
            let ancestor = &path[..end];
            if !self.is_dir(ancestor) {
                // Implied parents are root's, 0755, as Docker and umoci make them.
                self.remove_tree(ancestor);
                self.nodes
                    .insert(ancestor.to_string(), Node::dir(0o755, 0, 0));
            }
        }
        if !(node.is_dir() && self.is_dir(path)) {
            self.remove_tree(path);
        }
        self.nodes.insert(path.to_string(), node);
    }

    /// Removes a path and everything below it (a whiteout), untracked.
    pub fn remove_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.nodes
            .retain(|p, _| p != path && !p.starts_with(&prefix));
    }

    /// Everything below `dir` (not `dir` itself), sorted, as paths relative to it.
    pub fn children(&self, dir: &str) -> Vec<(String, Node)> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, n)| (p[prefix.len()..].to_string(), n.clone()))
            .collect()
    }

    /// All paths, for wildcard matching against an earlier stage.
    pub fn paths(&self) -> impl Iterator<Item = &String> {
        self.nodes.keys()
    }

    /// Removes what is below `dir` but keeps `dir` (an opaque whiteout), untracked.
    pub fn clear_dir(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .retain(|p, _| !p.starts_with(&prefix) || p == dir);
    }

    /// Drops the pending changes (after loading a base image).
    pub fn forget_changes(&mut self) {
        self.changed.clear();
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The entries of the next layer: every changed path plus its parent
    /// directories (as Docker's layers carry them), with hard links kept.
    pub fn take_changes(&mut self) -> Vec<LayerEntry> {
        let changed = std::mem::take(&mut self.changed);
        let mut paths = BTreeSet::new();
        for path in &changed {
            let mut p = path.as_str();
            while !p.is_empty() && paths.insert(p.to_string()) {
                p = parent(p);
            }
        }
        let mut first_link: HashMap<(u64, u64), String> = HashMap::new();
        paths
            .into_iter()
            .filter_map(|path| {
                let node = self.nodes.get(&path)?;
                let data = match &node.kind {
                    NodeKind::Dir => EntryData::Dir,
                    NodeKind::Symlink(t) => EntryData::Symlink(t.clone()),
                    NodeKind::Fifo => EntryData::Fifo,
                    NodeKind::File {
                        source,
                        size,
                        link_key,
                    } => match link_key {
                        Some(key) if changed.contains(&path) => match first_link.get(key) {
                            Some(target) => EntryData::HardLink(target.clone()),
                            None => {
                                first_link.insert(*key, path.clone());
                                file_data(source, *size)
                            }
                        },
                        _ => file_data(source, *size),
                    },
                };
                Some(LayerEntry {
                    path,
                    mode: node.mode,
                    uid: node.uid,
                    gid: node.gid,
                    mtime: None,
                    data,
                })
            })
            .collect()
    }
}

fn file_data(source: &FileSource, size: u64) -> EntryData {
    EntryData::File {
        source: source.clone(),
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u64) -> Node {
        Node {
            kind: NodeKind::File {
                source: FileSource::Path(format!("/src/{n}").into()),
                size: n,
                link_key: None,
            },
            mode: 0o644,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn clean_clamps_at_root() {
        assert_eq!(clean("app", "../../etc"), "etc");
        assert_eq!(clean("app", "./x/../y"), "app/y");
        assert_eq!(clean("app", "/abs"), "abs");
        assert_eq!(clean("", "/"), "");
    }

    #[test]
    fn resolve_follows_symlinks_inside_the_root_only() {
        let mut fs = RootFs::default();
        fs.mkdir_all("real/dir", 0o755, 0, 0).unwrap();
        fs.insert(
            "link",
            Node {
                kind: NodeKind::Symlink("/real".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        fs.insert(
            "up",
            Node {
                kind: NodeKind::Symlink("../../../real/dir".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        assert_eq!(fs.resolve("link/dir/x", true).unwrap(), "real/dir/x");
        assert_eq!(fs.resolve("up", true).unwrap(), "real/dir");
        assert_eq!(fs.resolve("up", false).unwrap(), "up");
        fs.insert(
            "loop",
            Node {
                kind: NodeKind::Symlink("loop".into()),
                mode: 0o777,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap();
        assert!(matches!(
            fs.resolve("loop", true),
            Err(FsError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn changes_include_parents_and_hard_links() {
        let mut fs = RootFs::default();
        fs.mkdir_all("a/b", 0o755, 0, 0).unwrap();
        fs.take_changes();
        let mut linked = file(3);
        if let NodeKind::File { link_key, .. } = &mut linked.kind {
            *link_key = Some((1, 2));
        }
        fs.insert("a/b/one", linked.clone()).unwrap();
        fs.insert("a/b/two", linked).unwrap();
        let entries = fs.take_changes();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["a", "a/b", "a/b/one", "a/b/two"]);
        assert_eq!(entries[3].data, EntryData::HardLink("a/b/one".into()));
        assert!(!fs.has_changes());
    }

    #[test]
    fn a_base_layer_without_directory_entries_gets_its_parents() {
        let mut fs = RootFs::default();
        fs.put_base("a/b/file", file(1));
        fs.put_base("a/b/c/deeper", file(2));
        fs.put_base("top", file(3));
        let paths: Vec<String> = fs.children("").into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            ["a", "a/b", "a/b/c", "a/b/c/deeper", "a/b/file", "top"]
        );
        for dir in ["a", "a/b", "a/b/c"] {
            assert_eq!(fs.get(dir), Some(&Node::dir(0o755, 0, 0)), "{dir}");
        }
        // A later layer's file under a path that was a file makes it a directory.
        fs.put_base("top/x", file(4));
        assert!(fs.is_dir("top"));
        assert!(fs.get("top/x").is_some());
    }

    #[test]
    fn file_cannot_replace_directory_but_dir_replaces_file() {
        let mut fs = RootFs::default();
        fs.mkdir_all("d", 0o755, 0, 0).unwrap();
        assert!(matches!(
            fs.insert("d", file(1)),
            Err(FsError::DirectoryInTheWay { .. })
        ));
        fs.insert("f", file(1)).unwrap();
        fs.insert("f", Node::dir(0o755, 0, 0)).unwrap();
        assert!(fs.is_dir("f"));
        assert!(matches!(
            fs.insert("f/x/y", file(1)),
            Err(FsError::NotADirectory { .. })
        ));
    }
}
