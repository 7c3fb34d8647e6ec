//! RUN: the command runs in the sandbox over the stage's root on disk (see
//! `workspace`), and what it changed becomes a layer; a step whose cache
//! key is known is not run again.
//!
//! The key is the sha256 of: the stage's diff_ids so far, the command after
//! SHELL (heredoc bodies included), the step's environment (the image's
//! Env and the ARGs in scope) without the proxy variables BuildKit leaves
//! out, WorkingDir, USER, the platform, the network mode, the mount specs,
//! and what decides the layer's bytes (compression, level, epoch).

use super::mounts::Planned;
use super::owner::read_stage_file;
use super::workspace::{ChainLayer, Workspace};
use super::{BuildError, Builder, StageState, HISTORY_COMMENT};
use crate::dockerfile::{heredoc_name, Command, Heredoc, Instruction, RunArgs, RunNetwork};
use crate::image::History;
use crate::layer::{LayerInfo, LayerOptions};
use crate::rootfs::disk::LayerSettings;
use crate::rootfs::overlay;
use crate::sandbox::{
    resolve_user_with, Ids, Mount, MountKind, Network, Sandbox, Spec, StepIo, DEFAULT_PATH,
};
use sha2::{Digest as _, Sha256};
use std::io::Write as _;

/// Build args every RUN sees without an ARG, kept out of the cache key and
/// the history (BuildKit's predefined proxy args).
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Where a `#!` heredoc script is mounted (BuildKit's place).
const SCRIPT_DIR: &str = "/dev/pipes";

/// The hostname a step sees.
const HOSTNAME: &str = "dockless";

/// Which step runs: its stage, its line and the instruction as written.
struct StepPlace {
    stage: usize,
    line: usize,
    what: String,
}

/// The command line a RUN runs.
struct StepCommand {
    argv: Vec<String>,
    /// A heredoc with a `#!` line, run as a file: (name, content).
    script: Option<(String, String)>,
}

/// BuildKit's forms: a lone heredoc is the script itself (a file when it
/// starts with `#!`); otherwise the shell reads the heredocs from the line.
fn step_command(shell: &[String], cmd: &Command, heredocs: &[Heredoc]) -> StepCommand {
    let with_shell = |text: String| {
        let mut argv = if shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            shell.to_vec()
        };
        argv.push(text);
        argv
    };
    let text = match cmd {
        Command::Exec(argv) => {
            return StepCommand {
                argv: argv.clone(),
                script: None,
            }
        }
        Command::Shell(text) => text,
    };
    let Some(first) = heredocs.first() else {
        return StepCommand {
            argv: with_shell(text.clone()),
            script: None,
        };
    };
    if heredoc_name(text.trim()).is_some_and(|name| name == first.name) {
        if first.content.starts_with("#!") {
            let path = format!("{SCRIPT_DIR}/{}", first.name);
            return StepCommand {
                argv: with_shell(path),
                script: Some((first.name.clone(), first.content.clone())),
            };
        }
        return StepCommand {
            argv: with_shell(first.content.clone()),
            script: None,
        };
    }
    let mut full = text.clone();
    for doc in heredocs {
        full.push('\n');
        full.push_str(&doc.content);
        full.push_str(&doc.name);
    }
    StepCommand {
        argv: with_shell(full),
        script: None,
    }
}

/// `KEY=VALUE` of the step: the image's Env, then the ARGs in scope that
/// Env does not set (ENV wins), then proxy build args.
fn step_env(state: &StageState, proxies: &[(String, String)]) -> Vec<String> {
    let config = &state.image.config.config;
    let mut env = config.env.clone();
    for (name, value) in state.args.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
        if config.env_value(name).is_none() {
            env.push(format!("{name}={value}"));
        }
    }
    for (name, value) in proxies {
        if config.env_value(name).is_none() && !state.args.contains_key(name) {
            env.push(format!("{name}={value}"));
        }
    }
    env
}

fn is_proxy(entry: &str) -> bool {
    let name = entry.split_once('=').map_or(entry, |(n, _)| n);
    PROXY_ARGS.contains(&name)
}

impl Builder<'_> {
    pub(super) fn run_step(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Instruction,
        args: &RunArgs,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        let command = step_command(
            &state.image.config.config.shell,
            &args.command,
            &ins.heredocs,
        );
        let proxies: Vec<(String, String)> = PROXY_ARGS
            .iter()
            .filter_map(|n| Some((n.to_string(), self.opts.build_args.get(*n)?.clone())))
            .collect();
        for (name, _) in &proxies {
            self.used_args.insert(name.clone());
        }
        let env = step_env(state, &proxies);
        let (mounts, mounts_key) = self.plan_mounts(stage, state, line, &args.mounts)?;
        let history = History {
            created: Some(self.created.clone()),
            created_by: Some(format!("RUN {}", command.argv.join(" "))),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: false,
        };
        let key = self.step_key(state, &command, &env, args.network, mounts_key);
        let header = format!("[{}] {}", state.step_label(), ins.original);
        let local = self
            .layer_cache
            .as_ref()
            .and_then(|c| c.step(&key, &self.store));
        if let Some(done) = local.or_else(|| self.registry_step(&key)) {
            self.step_output(line, &format!("{header} (cached)"))?;
            self.cache_stats.steps_from_cache += 1;
            self.registry_record_step(&key, done.as_ref());
            return self.add_step_layer(state, line, done, history);
        }
        crate::sandbox::check_runnable(&state.image.platform())
            .map_err(|e| self.fail(line, format!("{}: {e}", ins.original)))?;
        let user = self.step_user(state, line)?;
        let mut env = env;
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", user.1));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(format!("PATH={DEFAULT_PATH}"));
        }
        let mut spec = Spec::new("", &[]);
        spec.argv = command.argv.clone();
        spec.env = env;
        spec.cwd = format!("/{}", state.workdir());
        spec.user = user.0;
        spec.hostname = HOSTNAME.into();
        spec.network = match args.network {
            RunNetwork::None => Network::None,
            RunNetwork::Default | RunNetwork::Host => Network::Host,
        };
        spec.timeout = self.opts.run_timeout;
        if let Some((name, content)) = &command.script {
            spec.mounts.push(self.script_mount(name, content)?);
        }
        if self.workspace.is_none() {
            self.workspace = Some(self.open_workspace(line)?);
        }
        self.step_output(line, &header)?;
        let place = StepPlace {
            stage,
            line,
            what: ins.original.clone(),
        };
        let made = self.run_in_sandbox(state, &place, spec, &mounts)?;
        self.cache_stats.steps_run += 1;
        if let Some(cache) = &self.layer_cache {
            cache.record_step(&key, made.as_ref());
        }
        self.registry_record_step(&key, made.as_ref());
        self.add_step_layer(state, line, made, history)
    }

    /// The sandbox and the roots on disk, made at the first step that
    /// runs: when there is no isolation, the build fails here, before
    /// anything runs.
    fn open_workspace(&self, line: usize) -> Result<Workspace, BuildError> {
        let sandbox = Sandbox::new(&self.opts.sandbox_helper, self.opts.isolation);
        Workspace::open(sandbox, &self.opts.cache_dir).map_err(|e| self.fail(line, e))
    }

    /// Runs the step over the stage's layers; the layer it made, if any.
    fn run_in_sandbox(
        &mut self,
        state: &StageState,
        step: &StepPlace,
        mut spec: Spec,
        mounts: &[Planned],
    ) -> Result<Option<LayerInfo>, BuildError> {
        let line = step.line;
        let mut ws = match self.workspace.take() {
            Some(ws) => ws,
            None => self.open_workspace(line)?,
        };
        let result = self.run_with(&mut ws, state, step, &mut spec, mounts);
        self.workspace = Some(ws);
        result
    }

    fn run_with(
        &self,
        ws: &mut Workspace,
        state: &StageState,
        step: &StepPlace,
        spec: &mut Spec,
        mounts: &[Planned],
    ) -> Result<Option<LayerInfo>, BuildError> {
        let (stage, line, what) = (step.stage, step.line, step.what.as_str());
        let chain = self.chain_of(&state.image)?;
        let ensure = |blob: &std::path::Path| self.bases.ensure(blob).map_err(|e| e.to_string());
        let prepared = ws
            .prepare(stage, &chain, &ensure)
            .map_err(|e| self.fail(line, format!("{what}: preparing its root: {e}")))?;
        spec.rootfs = prepared.rootfs.clone();
        spec.overlay = prepared.overlay.clone();
        let ready = self
            .mount_ready(ws, mounts)
            .map_err(|e| self.fail(line, format!("{what}: {e}")))?;
        spec.mounts.extend(ready.mounts);
        spec.env.extend(ready.env);
        let io = self.step_io().map_err(|e| self.fail(line, e))?;
        let outcome = ws
            .sandbox()
            .run(spec, io)
            .map_err(|e| self.fail(line, format!("{what}: {e}")))?;
        drop(ready.held);
        if !outcome.success() {
            return Err(self.fail(line, format!("{what}: {outcome}")));
        }
        let opts = LayerOptions {
            mtime: self.opts.source_date_epoch,
            gzip_level: self.opts.gzip_level,
            compression: self.opts.compression,
            threads: 0,
        };
        let made = ws
            .diff(&prepared, LayerSettings::new(&opts), &self.store)
            .map_err(|e| self.fail(line, format!("{what}: reading what it changed: {e}")))?;
        let made = made.map(|(info, index)| {
            if let Some(index) = index {
                overlay::save_index(&self.opts.cache_dir, &info.digest, &index);
            }
            info
        });
        ws.finish(prepared, made.as_ref());
        Ok(made)
    }

    /// The layers of `image` and where their blobs are (fetched on demand).
    pub(super) fn chain_of(
        &self,
        image: &crate::image::Image,
    ) -> Result<Vec<ChainLayer>, BuildError> {
        image
            .layers
            .iter()
            .map(|l| {
                Ok(ChainLayer {
                    diff_id: l.diff_id.clone(),
                    blob: self.store.path(&l.digest)?,
                })
            })
            .collect()
    }

    /// The step's user (resolved in the stage's own passwd and group files,
    /// as they are now) and its home.
    fn step_user(&self, state: &StageState, line: usize) -> Result<(Ids, String), BuildError> {
        let spec = &state.image.config.config.user;
        let read = |file: &str| -> Result<String, String> {
            let bytes = read_stage_file(&state.fs, &self.bases, file.trim_start_matches('/'))?;
            Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        };
        let user = resolve_user_with(spec, &read).map_err(|e| self.fail(line, e.to_string()))?;
        Ok((Ids::from(&user), user.home))
    }

    /// A `#!` heredoc as a read-only file in the step.
    fn script_mount(&mut self, name: &str, content: &str) -> Result<Mount, BuildError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = self.staging_dir()?;
        let file = dir.join("script");
        let io_err = |source| BuildError::Staging {
            path: file.clone(),
            source,
        };
        std::fs::write(&file, content).map_err(io_err)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).map_err(io_err)?;
        Ok(Mount {
            target: format!("{SCRIPT_DIR}/{name}"),
            kind: MountKind::Bind {
                source: file,
                readonly: true,
            },
        })
    }

    fn step_key(
        &self,
        state: &StageState,
        command: &StepCommand,
        env: &[String],
        network: RunNetwork,
        mounts: serde_json::Value,
    ) -> String {
        let config = &state.image.config.config;
        let keyed_env: Vec<&String> = env.iter().filter(|e| !is_proxy(e)).collect();
        let layer = LayerOptions {
            mtime: self.opts.source_date_epoch,
            gzip_level: self.opts.gzip_level,
            compression: self.opts.compression,
            threads: 0,
        };
        let key = serde_json::json!({
            "v": "run-v1",
            "chain": state.image.config.rootfs.diff_ids,
            "argv": command.argv,
            "script": command.script,
            "env": keyed_env,
            "workdir": config.working_dir,
            "user": config.user,
            "platform": state.image.platform().to_string(),
            "network": network.name(),
            "mounts": mounts,
            "layer": layer.format_key(),
        });
        hex::encode(Sha256::digest(key.to_string()))
    }

    /// Adds what a step left to the stage: its layer (the filesystem model
    /// takes its entries too) or, when it changed nothing, only history.
    fn add_step_layer(
        &mut self,
        state: &mut StageState,
        line: usize,
        made: Option<LayerInfo>,
        history: History,
    ) -> Result<(), BuildError> {
        let Some(info) = made else {
            state.image.add_history(history);
            return Ok(());
        };
        // A layer the registry cache served may still be there only.
        let blob = self.store.path(&info.digest)?;
        let index = match overlay::load_index(&self.opts.cache_dir, &info.digest, &info.diff_id) {
            Some(index) => index,
            None => {
                self.bases
                    .ensure(&blob)
                    .map_err(|e| self.fail_because(line, e.to_string(), e))?;
                let index = overlay::read_index(&blob, &info.diff_id)
                    .map_err(|e| self.fail(line, e.to_string()))?;
                overlay::save_index(&self.opts.cache_dir, &info.digest, &index);
                index
            }
        };
        overlay::apply_index(&mut state.fs, &index, &blob);
        tracing::info!(line, digest = %info.digest, size = info.size, "RUN layer");
        state.image.add_layer(info, history);
        Ok(())
    }

    /// Where a step's output goes: the build log when the service gives
    /// one, else dockless's stderr.
    fn step_file(&self) -> Result<std::fs::File, String> {
        match &self.opts.step_log {
            Some(path) => std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
                .map_err(|e| format!("{}: {e}", path.display())),
            None => std::os::fd::AsFd::as_fd(&std::io::stderr())
                .try_clone_to_owned()
                .map(std::fs::File::from)
                .map_err(|e| format!("stderr: {e}")),
        }
    }

    fn step_io(&self) -> Result<StepIo, String> {
        let file = self.step_file()?;
        let other = file.try_clone().map_err(|e| e.to_string())?;
        Ok(StepIo {
            stdout: file.into(),
            stderr: other.into(),
        })
    }

    /// Writes a line where the steps' output goes.
    fn step_output(&self, line: usize, text: &str) -> Result<(), BuildError> {
        let mut file = self.step_file().map_err(|e| self.fail(line, e))?;
        let _ = writeln!(file, "{text}");
        Ok(())
    }
}
