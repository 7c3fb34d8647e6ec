//! COPY and ADD: sources matched in the context, an earlier stage, a base
//! image or a heredoc, then placed in the stage's filesystem model with
//! their owner and mode.

use super::archive::{self, ArchiveError};
use super::owner::resolve_owner;
use super::source::{
    apply_owner, context_node, hard_linked, parent_of, parse_chmod, stage_sources, Source,
};
use super::{is_dependency_path, url, BaseRef, BuildError, Builder, StageState};
use crate::context::untrusted::excerpt;
use crate::context::{BuildContext, ContextEntry, ContextError, EntryKind};
use crate::dockerfile::{self, CopyArgs, Instruction};
use crate::layer::FileSource;
use crate::rootfs::{basename, clean, FsError, Node, NodeKind};
use std::path::PathBuf;

impl Builder<'_> {
    pub(super) fn context(&mut self) -> Result<&BuildContext, BuildError> {
        if self.context.is_none() {
            let dockerfile = self.opts.dockerfile_ref();
            let ctx = BuildContext::open(&self.opts.context_dir, Some(&dockerfile))
                .map_err(BuildError::Context)?;
            self.context = Some(ctx);
        }
        self.context
            .as_ref()
            .ok_or_else(|| BuildError::Context(ContextError::NotFound { src: ".".into() }))
    }

    /// A fresh file in the build's staging folder (heredocs, archive members).
    pub(super) fn staging_dir(&mut self) -> Result<PathBuf, BuildError> {
        if self.staging.is_none() {
            let tmp = self.opts.cache_dir.join("tmp");
            let io_err = |source| BuildError::Staging {
                path: tmp.clone(),
                source,
            };
            std::fs::create_dir_all(&tmp).map_err(io_err)?;
            self.staging = Some(
                tempfile::Builder::new()
                    .prefix("build-")
                    .tempdir_in(&tmp)
                    .map_err(io_err)?,
            );
        }
        let dir = self
            .staging
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        self.staged_files += 1;
        let sub = dir.join(format!("s{}", self.staged_files));
        std::fs::create_dir_all(&sub).map_err(|source| BuildError::Staging {
            path: sub.clone(),
            source,
        })?;
        Ok(sub)
    }

    pub(super) fn copy(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Instruction,
        args: &CopyArgs,
        is_add: bool,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let verb = if is_add { "ADD" } else { "COPY" };
        let dest_raw = self.expand(line, &args.dest, &|n| state.lookup(n))?;
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = clean(&state.workdir(), &dest_raw);
        let owner = match &args.chown {
            Some(raw) => {
                let spec = self.expand(line, raw, &|n| state.lookup(n))?;
                Some(
                    resolve_owner(&spec, &state.fs, &self.bases)
                        .map_err(|e| self.fail(line, format!("{verb} --chown={spec}: {e}")))?,
                )
            }
            None => None,
        };
        let chmod = match &args.chmod {
            Some(raw) => {
                let text = self.expand(line, raw, &|n| state.lookup(n))?;
                let shown = excerpt(&text);
                let mode = parse_chmod(&text)
                    .map_err(|e| self.fail(line, format!("{verb} --chmod={shown}: {e}")))?;
                Some(mode)
            }
            None => None,
        };
        let apply = |node: Node| apply_owner(node, owner, chmod);
        let checksum = self.checksum(line, args, &|n| state.lookup(n))?;

        let mut sources: Vec<Source> = Vec::new();
        for raw in &args.sources {
            if let Some(doc) = args.heredocs.iter().find(|h| &h.name == raw) {
                let content = if doc.expand {
                    self.expand_heredoc(line, &doc.content, &|n| state.lookup(n))?
                } else {
                    doc.content.clone()
                };
                sources.push(self.heredoc_source(&doc.name, &content)?);
                continue;
            }
            let src = self.expand(line, raw, &|n| state.lookup(n))?;
            if let Some(kind) = url::remote_kind(&src) {
                let source = self.remote_source(line, is_add, kind, &src, checksum.as_deref())?;
                sources.push(source);
                continue;
            }
            match &args.from {
                Some(from) => {
                    // Borrowed, not cloned: a base image's model can be large.
                    let fs = match self.copy_from_ref(stage, ins, from)? {
                        BaseRef::Stage(i) => self.results[i].as_ref().map(|r| &r.fs),
                        BaseRef::Image(image) => {
                            let platform = state.image.platform();
                            let what = format!("{verb} --from={from}");
                            let key = self.load_image(line, &what, &image, &platform)?;
                            self.images.get(&key).map(|r| &r.fs)
                        }
                        BaseRef::Scratch => None,
                    };
                    let fs = fs.ok_or_else(|| {
                        self.fail(
                            line,
                            format!("{verb} --from={from}: that stage was not built"),
                        )
                    })?;
                    let found = stage_sources(fs, &src)
                        .map_err(|e| self.fail(line, format!("{verb} --from={from} {src}: {e}")))?;
                    sources.extend(found);
                }
                None => {
                    let entries = self
                        .context()?
                        .resolve_source(&src)
                        .map_err(|e| self.fail_because(line, e.to_string(), e))?;
                    for entry in entries {
                        sources.push(
                            self.context_source(is_add, entry)
                                .map_err(|e| self.fail(line, e))?,
                        );
                    }
                }
            }
        }

        if (args.sources.len() > 1 || sources.len() > 1) && !dest_is_dir {
            return Err(self.fail(
                line,
                format!("When using {verb} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let (puid, pgid) = owner.unwrap_or((0, 0));
        // Folders made for the destination take --chmod too (fsutil 183e7fb
        // "copy: fix custom chmod for parent directories", BuildKit v0.21.0);
        // an archive's are always 0755.
        let dir_mode = chmod.unwrap_or(0o755);
        let file = self.file.clone();
        let fs_err =
            |e: FsError| super::fail_because(&file, line, format!("{verb} to {dest_raw}: {e}"), e);
        let several = sources.len() > 1;
        // --split-layers: dependency paths first, as a layer of their own. Only
        // for plain trees (archives keep their place in the order), and each
        // destination path is classified on its own, so the union of the two
        // layers is exactly what one layer would hold.
        let split = self.opts.split_layers
            && sources.iter().all(|s| matches!(s, Source::Tree { .. }))
            && sources.iter().any(|s| match s {
                Source::Tree { root, children, .. } if root.is_dir() => {
                    children.iter().any(|(rel, node)| {
                        !hard_linked(node) && is_dependency_path(&clean(&dest, rel))
                    })
                }
                _ => false,
            });
        if split {
            for source in &sources {
                let Source::Tree { root, children, .. } = source else {
                    continue;
                };
                if !root.is_dir() {
                    continue;
                }
                let deps: Vec<&(String, Node)> = children
                    .iter()
                    .filter(|(rel, node)| {
                        !hard_linked(node) && is_dependency_path(&clean(&dest, rel))
                    })
                    .collect();
                if deps.is_empty() {
                    continue;
                }
                let dir = state
                    .fs
                    .mkdir_all(&dest, dir_mode, puid, pgid)
                    .map_err(fs_err)?;
                for (rel, node) in deps {
                    state
                        .fs
                        .insert(&clean(&dir, rel), apply(node.clone()))
                        .map_err(fs_err)?;
                }
            }
            let mut history = self.history(ins);
            history.created_by = Some(format!("{} # dependencies", ins.original));
            self.commit_with(state, line, history)?;
        }
        for source in sources {
            match source {
                Source::Archive { path, kind } => {
                    // --chown owns the folders this makes and every entry;
                    // --chmod is not used (BuildKit's `unpack`).
                    let dir = state
                        .fs
                        .mkdir_all(&dest, 0o755, puid, pgid)
                        .map_err(fs_err)?;
                    let staging = self.staging_dir()?;
                    archive::extract(&path, kind, &mut state.fs, &dir, owner, &staging)
                        .map_err(|e: ArchiveError| self.fail_because(line, e.to_string(), e))?;
                }
                Source::Tree { root, children, .. } if root.is_dir() => {
                    // Only the contents are copied: a missing destination is made like
                    // any other new folder (--chmod or 0755, --chown owner or root) and
                    // an existing one keeps its metadata; the source folder's own mode
                    // and owner are not carried over.
                    let dir = state
                        .fs
                        .mkdir_all(&dest, dir_mode, puid, pgid)
                        .map_err(fs_err)?;
                    for (rel, node) in children {
                        if split && !hard_linked(&node) && is_dependency_path(&clean(&dest, &rel)) {
                            continue;
                        }
                        state
                            .fs
                            .insert(&clean(&dir, &rel), apply(node))
                            .map_err(fs_err)?;
                    }
                }
                Source::Tree { name, root, .. } => {
                    let into_dir = dest_is_dir
                        || several
                        || state
                            .fs
                            .is_dir(&state.fs.resolve(&dest, true).map_err(fs_err)?);
                    // A destination that is a symlink (dangling or not) is written
                    // through, resolved inside the image, as fsutil's `Copy` does with
                    // continuity's `RootPath`; a name joined to a folder is not.
                    let target = if into_dir {
                        clean(&dest, &name)
                    } else {
                        state.fs.resolve(&dest, true).map_err(fs_err)?
                    };
                    let parent = state
                        .fs
                        .mkdir_all(parent_of(&target), dir_mode, puid, pgid)
                        .map_err(fs_err)?;
                    let path = clean(&parent, basename(&target));
                    if path.is_empty() {
                        return Err(self.fail(
                            line,
                            format!("{verb}: cannot copy a file onto the image root"),
                        ));
                    }
                    state.fs.insert(&path, apply(root)).map_err(fs_err)?;
                }
            }
        }
        Ok(())
    }

    fn expand_heredoc(
        &self,
        line: usize,
        content: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, BuildError> {
        dockerfile::expand_heredoc(content, lookup)
            .map_err(|e| self.fail(line, format!("heredoc: {e}")))
    }

    fn heredoc_source(&mut self, name: &str, content: &str) -> Result<Source, BuildError> {
        let dir = self.staging_dir()?;
        let path = dir.join("heredoc");
        std::fs::write(&path, content).map_err(|source| BuildError::Staging {
            path: path.clone(),
            source,
        })?;
        Ok(Source::Tree {
            name: name.to_string(),
            root: Node {
                kind: NodeKind::File {
                    source: FileSource::Path(path),
                    size: content.len() as u64,
                    link_key: None,
                },
                mode: 0o644,
                uid: 0,
                gid: 0,
            },
            children: Vec::new(),
        })
    }

    /// A context path as a source: an archive for ADD, else a file or a tree.
    fn context_source(&mut self, is_add: bool, entry: ContextEntry) -> Result<Source, String> {
        if is_add && entry.kind == EntryKind::File {
            if let Some(kind) = archive::detect(&entry.path).map_err(|e| e.to_string())? {
                return Ok(Source::Archive {
                    path: entry.path,
                    kind,
                });
            }
        }
        let name = basename(&entry.rel).to_string();
        let below = if entry.kind == EntryKind::Dir {
            let ctx = self.context().map_err(|e| e.to_string())?;
            ctx.walk(&entry).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        let has_socket = std::iter::once(&entry)
            .chain(&below)
            .any(|e| e.kind == EntryKind::Socket);
        let empty = if has_socket {
            self.empty_file().map_err(|e| e.to_string())?
        } else {
            PathBuf::new()
        };
        let prefix_len = if entry.rel.is_empty() {
            0
        } else {
            entry.rel.len() + 1
        };
        let children = below
            .iter()
            .map(|child| {
                (
                    child.rel.get(prefix_len..).unwrap_or_default().to_string(),
                    context_node(child, &empty),
                )
            })
            .collect();
        Ok(Source::Tree {
            name,
            root: context_node(&entry, &empty),
            children,
        })
    }

    /// An empty staged file, the content of a socket in the context.
    fn empty_file(&mut self) -> Result<PathBuf, BuildError> {
        let path = self.staging_dir()?.join("empty");
        std::fs::write(&path, b"").map_err(|source| BuildError::Staging {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }
}
