//! A stage's root filesystem on disk, for RUN: layers unpacked once per
//! diff_id into folders of their own (`apply`), stacked for a step by
//! overlayfs or, where the kernel will not, copied onto one root; and what
//! a step changed, written as a layer (`diff`).
//!
//! The work is done by the sandbox helper inside the step's user namespace
//! ([`run`]), where files carry container IDs: unpacked files get their
//! image owners, and a diff reads files only their (mapped) owners may read
//! and sees container IDs, with nothing to map back. The builder sends a
//! [`Task`] and gets a [`Done`].

mod apply;
mod diff;

use crate::layer::{LayerCompression, LayerInfo, LayerOptions};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The xattr that marks an overlayfs directory opaque: `user.` when the
/// overlay is mounted with `userxattr` (in a user namespace), else `trusted.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpaqueXattr {
    User,
    Trusted,
}

impl OpaqueXattr {
    pub fn name(self) -> &'static str {
        match self {
            OpaqueXattr::User => "user.overlay.opaque",
            OpaqueXattr::Trusted => "trusted.overlay.opaque",
        }
    }
}

/// How a layer folder holds its whiteouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerForm {
    /// As overlayfs reads a lower layer.
    Overlay(OpaqueXattr),
    /// As the `.wh.` files of the tar, for the copying fallback (its
    /// filesystem may itself be overlayfs, which would take a 0/0 device
    /// for its own whiteout).
    Files,
}

/// What a step changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Changes {
    /// An overlayfs upper folder over `lowers` (top first).
    Upper {
        upper: PathBuf,
        lowers: Vec<PathBuf>,
        opaque: OpaqueXattr,
    },
    /// A root, against the [`Task::Stack`] snapshot taken before the step.
    Walk { root: PathBuf, snapshot: PathBuf },
}

/// How the diff's layer is written (see [`LayerOptions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerSettings {
    /// SOURCE_DATE_EPOCH: later mtimes are clamped to it.
    pub epoch: u64,
    pub gzip_level: u32,
    pub zstd: bool,
}

impl LayerSettings {
    pub fn new(opts: &LayerOptions) -> LayerSettings {
        LayerSettings {
            epoch: opts.mtime,
            gzip_level: opts.gzip_level,
            zstd: opts.compression == LayerCompression::Zstd,
        }
    }

    fn options(&self) -> LayerOptions {
        LayerOptions {
            mtime: self.epoch,
            gzip_level: self.gzip_level,
            compression: if self.zstd {
                LayerCompression::Zstd
            } else {
                LayerCompression::Gzip
            },
            threads: 0,
        }
    }
}

/// One job for the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// Unpacks a layer blob into `dest` (which must not exist yet; made
    /// under a temporary name and renamed, so a half-done one never shows).
    Unpack {
        blob: PathBuf,
        diff_id: String,
        dest: PathBuf,
        form: LayerForm,
    },
    /// Copies layer folders ([`LayerForm::Files`], bottom first) onto
    /// `root` (made if missing), then records its state in `snapshot`.
    Stack {
        layers: Vec<PathBuf>,
        root: PathBuf,
        snapshot: PathBuf,
    },
    /// Writes the layer of what changed to the helper's stdout.
    Diff {
        changes: Changes,
        layer: LayerSettings,
    },
    /// Removes a tree (files of any mapped owner).
    Remove { path: PathBuf },
    /// Gives `path` (a folder made if missing, as for a cache mount; else
    /// an existing file, as a staged secret) container owner and mode.
    Own {
        path: PathBuf,
        make_dir: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

/// What a task gives back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Done {
    Nothing,
    /// The layer written to stdout, how many entries it holds, and its
    /// index (so the builder need not read the layer back for it).
    Layer {
        info: LayerInfo,
        entries: usize,
        index: Option<crate::rootfs::overlay::LayerIndex>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer entry /{path}: {problem}")]
    Entry { path: String, problem: String },
    #[error("layer {0}")]
    Layer(String),
    #[error("writing the step's layer: {0}")]
    Write(#[from] crate::layer::LayerError),
}

/// What a task holds open from before the helper enters the namespace.
pub struct Held {
    blob: Option<File>,
    _pins: Vec<OwnedFd>,
}

/// Opens what the task reads before the helper drops the host user's file
/// access: the blob, and each path's parent folder, the path rewritten to
/// go through that open folder (`/proc/self/fd/N/NAME`), so no folder above
/// it needs to be searchable by the namespace's root (root's cache may be
/// under /root, 0700).
pub fn hold(task: &mut Task) -> std::io::Result<Held> {
    let mut pins = Vec::new();
    let mut blob = None;
    let mut pin = |path: &mut PathBuf| -> std::io::Result<()> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(());
        };
        use rustix::fs::{open, Mode, OFlags};
        let fd = open(
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        *path = Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name);
        pins.push(fd);
        Ok(())
    };
    match task {
        Task::Unpack { blob: b, dest, .. } => {
            blob = Some(File::open(&*b)?);
            pin(dest)?;
        }
        Task::Stack {
            layers,
            root,
            snapshot,
        } => {
            for layer in layers {
                pin(layer)?;
            }
            pin(root)?;
            pin(snapshot)?;
        }
        Task::Diff { changes, .. } => match changes {
            Changes::Upper { upper, lowers, .. } => {
                pin(upper)?;
                for lower in lowers {
                    pin(lower)?;
                }
            }
            Changes::Walk { root, snapshot } => {
                pin(root)?;
                pin(snapshot)?;
            }
        },
        Task::Remove { path } | Task::Own { path, .. } => pin(path)?,
    }
    Ok(Held { blob, _pins: pins })
}

/// Does the task, in the helper; a layer goes to `out`.
pub fn run(task: &Task, held: Held, out: File) -> Result<Done, DiskError> {
    match task {
        Task::Unpack {
            diff_id,
            dest,
            form,
            ..
        } => {
            let blob = held
                .blob
                .ok_or_else(|| DiskError::Layer("blob not open".into()))?;
            unpack(blob, diff_id, dest, *form).map(|()| Done::Nothing)
        }
        Task::Stack {
            layers,
            root,
            snapshot,
        } => {
            apply::stack(layers, root)?;
            diff::save_snapshot(root, snapshot)?;
            Ok(Done::Nothing)
        }
        Task::Diff { changes, layer } => {
            let entries = match changes {
                Changes::Upper {
                    upper,
                    lowers,
                    opaque,
                } => diff::upper_entries(upper, lowers, *opaque, layer.epoch)?,
                Changes::Walk { root, snapshot } => {
                    diff::walk_entries(root, snapshot, layer.epoch)?
                }
            };
            let info = crate::layer::write_layer_to(&entries, out, layer.options())?;
            Ok(Done::Layer {
                index: crate::rootfs::overlay::index_of_written(&info, &entries),
                info,
                entries: entries.len(),
            })
        }
        Task::Remove { path } => match std::fs::remove_dir_all(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DiskError::Io {
                path: path.clone(),
                source: e,
            }),
            _ => Ok(Done::Nothing),
        },
        Task::Own {
            path,
            make_dir,
            uid,
            gid,
            mode,
        } => own(path, *make_dir, *uid, *gid, *mode).map(|()| Done::Nothing),
    }
}

fn own(path: &Path, make_dir: bool, uid: u32, gid: u32, mode: u32) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt as _;
    let io_err = |source| DiskError::Io {
        path: path.to_path_buf(),
        source,
    };
    if make_dir {
        match std::fs::create_dir(path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io_err(e)),
            _ => {}
        }
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)
}

fn unpack(blob: File, diff_id: &str, dest: &Path, form: LayerForm) -> Result<(), DiskError> {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let temp = dest.with_file_name(format!(".{name}.{}", std::process::id()));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiskError::Io { path, source }
    };
    let _ = std::fs::remove_dir_all(&temp);
    std::fs::create_dir(&temp).map_err(io_err(&temp))?;
    let whiteouts = match form {
        LayerForm::Overlay(x) => apply::Whiteouts::Overlay(x),
        LayerForm::Files => apply::Whiteouts::Files,
    };
    if let Err(e) = apply::unpack(blob, diff_id, &temp, whiteouts) {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&temp, dest) {
        let _ = std::fs::remove_dir_all(&temp);
        // Another build unpacked the same layer first.
        if !dest.is_dir() {
            return Err(io_err(dest)(e));
        }
    }
    Ok(())
}
