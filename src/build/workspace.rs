//! Where RUN steps' roots are made on disk (see `rootfs::disk`).
//!
//! - `<cache>/fs/<owner>-<form>/<diff_id hex>/`: one layer unpacked, made
//!   once by the sandbox helper (so owners are right inside the user
//!   namespace) and reused by later builds. `<owner>` names the ID mapping
//!   (the same image files have other host owners under another mapping),
//!   `<form>` how whiteouts are held (overlayfs or plain files).
//! - `<cache>/run/<build>/`: this build's steps, removed when it ends. With
//!   overlayfs a step gets `step-N/{upper,work,merged}` over the layer
//!   folders, and its upper folder becomes the folder of the layer it made
//!   (BuildKit's "the upper is the snapshot"). Without (an old kernel, a
//!   cache on overlayfs as inside Docker, `DOCKLESS_RUN_ROOT=copy`), each
//!   stage has `stage-N/root`, its layer folders copied on one root, kept
//!   for the stage's next RUN, and a snapshot taken before each step.

use crate::digest::HashingWriter;
use crate::layer::LayerInfo;
use crate::rootfs::disk::{Changes, Done, LayerForm, LayerSettings, OpaqueXattr, Task};
use crate::rootfs::overlay::LayerIndex;
use crate::sandbox::{Mode, Overlay, Sandbox, TreeRoot};
use crate::store::BlobStore;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Set to `copy` to stack layers by copying even where overlayfs works.
pub const ROOT_ENV: &str = "DOCKLESS_RUN_ROOT";

/// A layer of a stage's chain and where its blob is (fetched on demand).
pub(super) struct ChainLayer {
    pub diff_id: String,
    pub blob: PathBuf,
}

/// The layers a stage's copied root (the fallback) holds.
struct StageRoot {
    chain: Vec<String>,
}

/// A step's root, ready to run.
pub(super) struct Prepared {
    /// The sandbox's `rootfs`.
    pub rootfs: PathBuf,
    pub overlay: Option<Overlay>,
    changes: Changes,
    stage: usize,
    chain: Vec<String>,
    /// The overlay step's own folder, removed after the step.
    step_dir: Option<PathBuf>,
}

pub(super) struct Workspace {
    sandbox: Sandbox,
    form: LayerForm,
    /// Host IDs of container root, for the folders the helper writes in.
    owner: Option<(u32, u32)>,
    layers: PathBuf,
    run: PathBuf,
    steps: usize,
    roots: HashMap<usize, StageRoot>,
    /// Folders made for one step's mounts, removed after it.
    scratch: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Names an ID mapping, for the layer folders made under it.
fn owner_key(mode: &Mode) -> String {
    match mode {
        Mode::Chroot => "root".into(),
        Mode::Userns(m) => {
            let text = serde_json::to_string(&(&m.uids, &m.gids)).unwrap_or_default();
            format!("ns{}", &hex::encode(Sha256::digest(text))[..12])
        }
    }
}

impl Workspace {
    /// Decides the isolation (failing before any step runs when there is
    /// none) and how layers are stacked.
    pub(super) fn open(sandbox: Sandbox, cache_dir: &Path) -> Result<Workspace, String> {
        let mode = sandbox.check().map_err(|e| e.to_string())?.clone();
        let owner = match &mode {
            Mode::Userns(m) => Some((m.host_uid(0).unwrap_or(0), m.host_gid(0).unwrap_or(0))),
            Mode::Chroot => None,
        };
        let runs = cache_dir.join("run");
        let run = runs.join(format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let mut ws = Workspace {
            sandbox,
            form: LayerForm::Files,
            owner,
            layers: PathBuf::new(),
            run,
            steps: 0,
            roots: HashMap::new(),
            scratch: Vec::new(),
        };
        ws.make_dir(&runs)?;
        ws.make_dir(&ws.run.clone())?;
        ws.form = ws.choose_form(&mode);
        let form = match ws.form {
            LayerForm::Overlay(_) => "overlay",
            LayerForm::Files => "files",
        };
        ws.layers = cache_dir
            .join("fs")
            .join(format!("{}-{form}", owner_key(&mode)));
        ws.make_dir(&ws.layers.clone())?;
        Ok(ws)
    }

    fn choose_form(&mut self, mode: &Mode) -> LayerForm {
        if std::env::var(ROOT_ENV).is_ok_and(|v| v == "copy") {
            return LayerForm::Files;
        }
        let probe = self.run.join("probe");
        let tried = self.make_dir(&probe).and_then(|()| {
            self.sandbox
                .overlay_works(&probe)
                .map_err(|e| e.to_string())
        });
        match tried {
            Ok(()) => LayerForm::Overlay(match mode {
                Mode::Userns(_) => OpaqueXattr::User,
                Mode::Chroot => OpaqueXattr::Trusted,
            }),
            Err(e) => {
                tracing::info!("overlayfs cannot stack the layers here ({e}); RUN steps copy them");
                LayerForm::Files
            }
        }
    }

    /// Makes a folder the helper writes in, owned by container root.
    pub(super) fn make_dir(&self, path: &Path) -> Result<(), String> {
        std::fs::create_dir_all(path).map_err(io_err(path))?;
        self.give_to_root(path)
    }

    /// Gives a file dockless made to container root (the host user is
    /// root in the namespace anyway, but the host's root is not).
    pub(super) fn give_to_root(&self, path: &Path) -> Result<(), String> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_err(path))?;
        }
        Ok(())
    }

    /// Gives `path` container owner and mode (made as a folder when
    /// `make_dir` and missing), in the namespace.
    pub(super) fn own(
        &self,
        path: &Path,
        make_dir: bool,
        (uid, gid, mode): (u32, u32, u32),
    ) -> Result<(), String> {
        self.task(Task::Own {
            path: path.to_path_buf(),
            make_dir,
            uid,
            gid,
            mode,
        })
        .map(|_| ())
    }

    /// A stage's or an image's layers as a tree a step may mount: an
    /// overlay with a throwaway upper folder, or a copy.
    pub(super) fn tree(
        &mut self,
        chain: &[ChainLayer],
        ensure: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<TreeRoot, String> {
        let dir = self.scratch_dir()?;
        let LayerForm::Overlay(_) = self.form else {
            let layers = chain
                .iter()
                .map(|l| self.layer_dir(l, ensure))
                .collect::<Result<Vec<_>, _>>()?;
            let root = dir.join("root");
            self.task(Task::Stack {
                layers,
                root: root.clone(),
                snapshot: dir.join("before.json"),
            })?;
            return Ok(TreeRoot::Dir(root));
        };
        let mut lowers = chain
            .iter()
            .map(|l| self.layer_dir(l, ensure))
            .collect::<Result<Vec<_>, _>>()?;
        lowers.reverse();
        for sub in ["upper", "work", "empty"] {
            self.make_dir(&dir.join(sub))?;
        }
        if lowers.is_empty() {
            lowers.push(dir.join("empty"));
        }
        Ok(TreeRoot::Overlay(Overlay {
            lowers,
            upper: dir.join("upper"),
            work: dir.join("work"),
        }))
    }

    /// A folder for one step's mount, removed after it.
    pub(super) fn scratch_dir(&mut self) -> Result<PathBuf, String> {
        self.steps += 1;
        let dir = self.run.join(format!("mount-{}", self.steps));
        self.make_dir(&dir)?;
        self.scratch.push(dir.clone());
        Ok(dir)
    }

    pub(super) fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    fn task(&self, task: Task) -> Result<Done, String> {
        self.sandbox
            .disk(task, Stdio::null())
            .map_err(|e| e.to_string())
    }

    /// The layer's folder, unpacked from its blob (fetched by `ensure`)
    /// unless an earlier build did.
    fn layer_dir(
        &self,
        layer: &ChainLayer,
        ensure: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<PathBuf, String> {
        let hex = crate::digest::hex_part(&layer.diff_id)
            .ok_or_else(|| format!("layer diff_id {:?} is not a digest", layer.diff_id))?;
        let dir = self.layers.join(hex);
        if dir.is_dir() {
            return Ok(dir);
        }
        ensure(&layer.blob)?;
        tracing::debug!(diff_id = %layer.diff_id, "unpacking a layer for RUN");
        self.task(Task::Unpack {
            blob: layer.blob.clone(),
            diff_id: layer.diff_id.clone(),
            dest: dir.clone(),
            form: self.form,
        })?;
        Ok(dir)
    }

    /// The root a step of `stage` runs in: its `chain` of layers stacked.
    pub(super) fn prepare(
        &mut self,
        stage: usize,
        chain: &[ChainLayer],
        ensure: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<Prepared, String> {
        let ids: Vec<String> = chain.iter().map(|l| l.diff_id.clone()).collect();
        match self.form {
            LayerForm::Overlay(opaque) => {
                let mut lowers = chain
                    .iter()
                    .map(|l| self.layer_dir(l, ensure))
                    .collect::<Result<Vec<_>, _>>()?;
                lowers.reverse();
                self.steps += 1;
                let step = self.run.join(format!("step-{}", self.steps));
                self.make_dir(&step)?;
                for sub in ["upper", "work", "merged", "empty"] {
                    self.make_dir(&step.join(sub))?;
                }
                if lowers.is_empty() {
                    lowers.push(step.join("empty"));
                }
                let overlay = Overlay {
                    lowers: lowers.clone(),
                    upper: step.join("upper"),
                    work: step.join("work"),
                };
                Ok(Prepared {
                    rootfs: step.join("merged"),
                    changes: Changes::Upper {
                        upper: overlay.upper.clone(),
                        lowers,
                        opaque,
                    },
                    overlay: Some(overlay),
                    stage,
                    chain: ids,
                    step_dir: Some(step),
                })
            }
            LayerForm::Files => self.prepare_copy(stage, chain, ids, ensure),
        }
    }

    fn prepare_copy(
        &mut self,
        stage: usize,
        chain: &[ChainLayer],
        ids: Vec<String>,
        ensure: &dyn Fn(&Path) -> Result<(), String>,
    ) -> Result<Prepared, String> {
        let dir = self.run.join(format!("stage-{stage}"));
        let kept = self
            .roots
            .get(&stage)
            .filter(|r| ids.starts_with(&r.chain))
            .map_or(0, |r| r.chain.len());
        if kept == 0 && self.roots.remove(&stage).is_some() {
            self.task(Task::Remove { path: dir.clone() })?;
        }
        self.make_dir(&dir)?;
        let layers = chain[kept..]
            .iter()
            .map(|l| self.layer_dir(l, ensure))
            .collect::<Result<Vec<_>, _>>()?;
        let root = dir.join("root");
        let snapshot = dir.join("before.json");
        self.task(Task::Stack {
            layers,
            root: root.clone(),
            snapshot: snapshot.clone(),
        })?;
        self.roots.insert(stage, StageRoot { chain: ids.clone() });
        Ok(Prepared {
            rootfs: root.clone(),
            overlay: None,
            changes: Changes::Walk { root, snapshot },
            stage,
            chain: ids,
            step_dir: None,
        })
    }

    /// Writes what the step changed as a layer into `store`, with the
    /// layer's index when the helper could tell it; None when it changed
    /// nothing.
    pub(super) fn diff(
        &self,
        prepared: &Prepared,
        settings: LayerSettings,
        store: &BlobStore,
    ) -> Result<Option<(LayerInfo, Option<LayerIndex>)>, String> {
        let temp = store.temp_file().map_err(|e| e.to_string())?;
        let file = temp.as_file().try_clone().map_err(io_err(temp.path()))?;
        let (mut read, write) = std::io::pipe().map_err(|e| e.to_string())?;
        let copier = std::thread::spawn(move || {
            let mut out = HashingWriter::new(std::io::BufWriter::new(file));
            std::io::copy(&mut read, &mut out)?;
            let (mut out, digest, _) = out.finish();
            std::io::Write::flush(&mut out)?;
            Ok::<_, std::io::Error>(digest)
        });
        let task = Task::Diff {
            changes: prepared.changes.clone(),
            layer: settings,
        };
        let done = self
            .sandbox
            .disk(task, Stdio::from(std::os::fd::OwnedFd::from(write)));
        let copied = copier
            .join()
            .map_err(|_| "the layer copier panicked".to_string())?;
        let (info, entries, index) = match done.map_err(|e| e.to_string())? {
            Done::Layer {
                info,
                entries,
                index,
            } => (info, entries, index),
            Done::Nothing => return Err("the sandbox helper wrote no layer".into()),
        };
        let digest = copied.map_err(|e| format!("receiving the step's layer: {e}"))?;
        if digest != info.digest {
            return Err(format!(
                "the step's layer arrived as {digest}, not the {} it was written as",
                info.digest
            ));
        }
        if entries == 0 {
            return Ok(None);
        }
        store
            .commit(temp, &info.digest)
            .map_err(|e| e.to_string())?;
        Ok(Some((info, index)))
    }

    /// After the step and its diff: an overlay step's upper folder becomes
    /// the new layer's folder; a copied root now holds the layer too.
    pub(super) fn finish(&mut self, prepared: Prepared, made: Option<&LayerInfo>) {
        for path in std::mem::take(&mut self.scratch) {
            if let Err(e) = self.task(Task::Remove { path }) {
                tracing::warn!("cannot remove a RUN mount's folder: {e}");
            }
        }
        let mut chain = prepared.chain;
        if let Some(info) = made {
            chain.push(info.diff_id.clone());
        }
        if let Some(root) = self.roots.get_mut(&prepared.stage) {
            root.chain = chain;
        }
        let Some(step) = prepared.step_dir else {
            return;
        };
        if let Some(hex) = made.and_then(|i| crate::digest::hex_part(&i.diff_id)) {
            let dest = self.layers.join(hex);
            if !dest.exists() {
                // Best effort: without it the layer is unpacked when needed.
                if let Err(e) = std::fs::rename(step.join("upper"), &dest) {
                    tracing::debug!("keeping a RUN step's upper folder as its layer: {e}");
                }
            }
        }
        if let Err(e) = self.task(Task::Remove { path: step }) {
            tracing::warn!("cannot remove a RUN step's folder: {e}");
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.run);
        if let Err(e) = self.task(Task::Remove { path }) {
            tracing::warn!("cannot remove this build's RUN folder: {e}");
        }
    }
}
