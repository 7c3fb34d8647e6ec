//! Running one stage: each instruction edits the image config or the
//! filesystem model, and every change is committed as a layer (from the
//! layer cache when it has one).

use super::owner::resolve_owner;
use super::steps::StepEvent;
use super::{BaseRef, BuildError, Builder, StageResult, StageState, HISTORY_COMMENT};
use crate::cache::layers::CacheStats;
use crate::context::untrusted::excerpt;
use crate::dockerfile::{Command, Healthcheck, Instruction, InstructionKind};
use crate::image::{HealthConfig, History, Image, ImageConfig};
use crate::layer::{self, FileSource, LayerOptions};
use crate::platform::Platform;
use crate::rootfs::{clean, overlay, RootFs};
use std::collections::BTreeMap;

/// A step under way.
struct StepStart {
    instruction: String,
    at: std::time::Instant,
    layers: CacheStats,
}

impl Builder<'_> {
    pub(super) fn run_stage(&mut self, index: usize) -> Result<StageResult, BuildError> {
        let stage = self.df.stages[index].clone();
        let mut platform = self.platform.clone();
        if let Some(raw) = &stage.from.platform {
            let text = self.expand(stage.from.line, raw, &self.global_lookup())?;
            platform =
                Platform::parse(&text).map_err(|e| self.fail(stage.from.line, e.to_string()))?;
        }
        let from_step = self.begin_step(&format!("FROM {}", stage.from.image));
        let base = match self.stage_base(index)? {
            BaseRef::Stage(i) => self.results[i].clone().ok_or_else(|| {
                self.fail(stage.from.line, "internal: base stage was not built first")
            })?,
            BaseRef::Scratch => StageResult {
                image: Image::new(ImageConfig::scratch(&platform, &self.created)),
                fs: RootFs::default(),
            },
            BaseRef::Image(image) => {
                let what = format!("FROM {}", stage.from.image);
                let key = self.load_image(stage.from.line, &what, &image, &platform)?;
                self.images[&key].clone()
            }
        };
        let mut base = base;
        // A base's ONBUILD triggers run right after FROM, as BuildKit runs
        // them, and are not passed on.
        let triggers =
            self.onbuild_triggers(stage.from.line, &base.image.config.config.on_build)?;
        base.image.config.config.on_build.clear();
        let instructions: Vec<Instruction> = triggers
            .into_iter()
            .chain(stage.instructions.iter().cloned())
            .collect();
        let steps = instructions.iter().filter(|i| counts_as_step(i)).count();
        let mut state = StageState {
            image: base.image,
            fs: base.fs,
            args: BTreeMap::new(),
            cmd_set_here: false,
            name: stage.from.alias.clone(),
            step: (1, steps + 1),
        };
        self.end_step(from_step, &state);
        for ins in &instructions {
            if counts_as_step(ins) {
                state.step.0 += 1;
            }
            let step = self.begin_step(&ins.original);
            self.run_instruction(index, &mut state, ins)?;
            self.end_step(step, &state);
        }
        Ok(StageResult {
            image: state.image,
            fs: state.fs,
        })
    }

    /// Reports the next step as started; what [`Self::end_step`] needs.
    fn begin_step(&mut self, original: &str) -> StepStart {
        self.step += 1;
        let instruction = super::steps::shown(original);
        self.opts.steps.emit(StepEvent::Started {
            step: self.step,
            total: self.steps_total,
            instruction: instruction.clone(),
        });
        StepStart {
            instruction,
            at: std::time::Instant::now(),
            layers: self.cache_stats,
        }
    }

    /// Reports the step as finished: not computed (from a cache), with a
    /// new layer, or neither.
    fn end_step(&self, start: StepStart, state: &StageState) {
        let (before, now) = (start.layers, self.cache_stats);
        let written = now.layers_written > before.layers_written;
        self.opts.steps.emit(StepEvent::Finished {
            step: self.step,
            total: self.steps_total,
            instruction: start.instruction,
            // A COPY/ADD layer or a RUN step served from either cache.
            cached: now.layers_from_cache > before.layers_from_cache
                || now.steps_from_cache > before.steps_from_cache,
            layer_bytes: state
                .image
                .layers
                .last()
                .filter(|_| written)
                .map(|l| l.size),
            duration: start.at.elapsed(),
        });
    }

    /// A base's ONBUILD triggers as instructions of the FROM's line;
    /// chained ONBUILD, FROM and MAINTAINER are refused as docker does.
    fn onbuild_triggers(
        &self,
        line: usize,
        triggers: &[String],
    ) -> Result<Vec<Instruction>, BuildError> {
        let mut out = Vec::new();
        for trigger in triggers {
            let fail = |message: &str| {
                self.fail(
                    line,
                    format!(
                        "the base image's ONBUILD trigger {:?}: {message}",
                        excerpt(trigger)
                    ),
                )
            };
            let keyword = trigger
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            match keyword.as_str() {
                "ONBUILD" => {
                    return Err(fail("chaining ONBUILD via ONBUILD ONBUILD is not allowed"))
                }
                "FROM" | "MAINTAINER" => {
                    return Err(fail(&format!(
                        "{keyword} is not allowed as an ONBUILD trigger"
                    )))
                }
                _ => {}
            }
            let parsed = crate::dockerfile::parse(&format!("FROM scratch\n{trigger}\n"), "ONBUILD")
                .map_err(|e| fail(&e.message))?;
            let mut found: Vec<Instruction> = parsed
                .stages
                .into_iter()
                .flat_map(|s| s.instructions)
                .collect();
            let (Some(mut ins), true) = (found.pop(), found.is_empty()) else {
                return Err(fail("not one instruction"));
            };
            ins.line = line;
            self.check_supported(&ins)?;
            out.push(ins);
        }
        Ok(out)
    }

    pub(super) fn history(&self, ins: &Instruction) -> History {
        History {
            created: Some(self.created.clone()),
            created_by: Some(ins.original.clone()),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer: false,
        }
    }

    /// Records the instruction, with a layer when it changed the filesystem.
    fn commit(&mut self, state: &mut StageState, ins: &Instruction) -> Result<(), BuildError> {
        let history = self.history(ins);
        self.commit_with(state, ins.line, history)
    }

    pub(super) fn commit_with(
        &mut self,
        state: &mut StageState,
        line: usize,
        history: History,
    ) -> Result<(), BuildError> {
        if state.fs.has_changes() {
            let mut entries = state.fs.take_changes();
            for entry in &mut entries {
                if let layer::EntryData::File {
                    source: FileSource::Path(path),
                    ..
                } = &entry.data
                {
                    entry.mtime = self.url_mtimes.get(path).copied();
                }
            }
            let opts = LayerOptions {
                mtime: self.opts.source_date_epoch,
                gzip_level: self.opts.gzip_level,
                compression: self.opts.compression,
                threads: 0,
            };
            // A cold layer's files are hashed while they are written, not
            // before, unless the registry cache needs the key first.
            let scanned = match (&self.layer_cache, self.registry_cache.is_some()) {
                (Some(cache), true) => cache.scan_hashed(&entries, &opts),
                (Some(cache), false) => cache.scan(&entries, &opts),
                (None, _) => None,
            };
            let keyed = scanned.as_ref().and_then(|s| s.key());
            if let Some(key) = &keyed {
                let local = self
                    .layer_cache
                    .as_ref()
                    .and_then(|c| c.lookup(key, &self.store));
                if let Some(info) = local.or_else(|| self.registry_layer(&key.key)) {
                    tracing::info!(line, digest = %info.digest, "layer served from cache");
                    self.cache_stats.layers_from_cache += 1;
                    self.registry_record_layer(&key.key, &info);
                    state.image.add_layer(info, history);
                    return Ok(());
                }
            }
            if entries.iter().any(|e| {
                matches!(
                    &e.data,
                    layer::EntryData::File {
                        source: FileSource::Layer { .. },
                        ..
                    }
                )
            }) {
                self.bases
                    .ensure_entries(&entries)
                    .map_err(|e| self.fail_because(line, e.to_string(), e))?;
                let staging = self.staging_dir()?;
                overlay::materialize(&mut entries, &staging)
                    .map_err(|e| self.fail_because(line, e.to_string(), e))?;
            }
            let tap = self.opts.layer_tap.as_ref().filter(|_| self.in_image);
            let tap = tap.map(|t| &*t.0);
            let info = match &self.layer_cache {
                Some(cache) => {
                    let (info, reused) = cache.write_layer_tapped(
                        scanned.as_ref(),
                        &entries,
                        &self.store,
                        opts,
                        tap,
                    )?;
                    self.cache_stats.segments_reused += reused;
                    info
                }
                None => {
                    layer::write_layer_tapped(&entries, &self.store, opts, (None, tap), None)?.0
                }
            };
            self.cache_stats.layers_written += 1;
            if let Some(key) = &keyed {
                self.registry_record_layer(&key.key, &info);
            }
            tracing::info!(line, digest = %info.digest, size = info.size, "layer written");
            crate::attest::sbom::layers::record_written(&self.opts.cache_dir, &info, &entries);
            state.image.add_layer(info, history);
        } else {
            state.image.add_history(history);
        }
        Ok(())
    }

    fn run_instruction(
        &mut self,
        stage: usize,
        state: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let line = ins.line;
        match &ins.kind {
            InstructionKind::Arg(decls) => {
                for decl in decls {
                    let value = match self.opts.build_args.get(&decl.name) {
                        Some(_) => self.arg_value(decl, &|n| state.lookup(n))?,
                        // A bare ARG re-imports a global (or automatic) ARG's value.
                        None if decl.default.is_none() => self.global_args.get(&decl.name).cloned(),
                        None => self.arg_value(decl, &|n| state.lookup(n))?,
                    };
                    // A bare ARG with no value anywhere leaves the variable as it
                    // was (unset if never set), as BuildKit's `dispatchArg` does.
                    if let Some(value) = value {
                        state.args.insert(decl.name.clone(), value);
                    }
                }
                // Docker keeps ARG out of the image history.
                return Ok(());
            }
            InstructionKind::Env(pairs) => {
                // Every name and value is expanded before any is set, so
                // `ENV a=new b=$a` gives b the old a (BuildKit's `dispatch` expands
                // the whole command, then `dispatchEnv` applies it).
                for (key, value) in self.expand_pairs(line, pairs, state)? {
                    if key.is_empty() {
                        return Err(self.fail(line, "ENV names can not be empty"));
                    }
                    state.image.config.config.set_env(&key, &value);
                }
            }
            InstructionKind::Label(pairs) => {
                for (key, value) in self.expand_pairs(line, pairs, state)? {
                    state.image.config.config.labels.insert(key, value);
                }
            }
            InstructionKind::Workdir(raw) => {
                let dir = self.expand(line, raw, &|n| state.lookup(n))?;
                let working_dir = next_workdir(&state.image.config.config.working_dir, &dir);
                let path = clean("", &working_dir);
                state.image.config.config.working_dir = working_dir;
                // New directories belong to the USER, as buildah and BuildKit make them;
                // a user or group the stage cannot resolve falls back to root, as in buildah.
                let user = &state.image.config.config.user;
                let (uid, gid) = if user.is_empty() {
                    (0, 0)
                } else {
                    resolve_owner(user, &state.fs, &self.bases).unwrap_or((0, 0))
                };
                state
                    .fs
                    .mkdir_all(&path, 0o755, uid, gid)
                    .map_err(|e| self.fail(line, format!("WORKDIR {dir}: {e}")))?;
            }
            InstructionKind::Expose(words) => {
                for raw in words {
                    for word in self.expand_words(line, raw, &|n| state.lookup(n))? {
                        // Docker's form: ranges expanded, protocol lower-cased
                        // (buildah 1.28 keeps the word as written).
                        for port in parse_ports(&word).map_err(|e| self.fail(line, e))? {
                            let ports = &mut state.image.config.config.exposed_ports;
                            ports.insert(port, Default::default());
                        }
                    }
                }
            }
            InstructionKind::User(raw) => {
                let user = self.expand(line, raw, &|n| state.lookup(n))?;
                if user.is_empty() {
                    return Err(self.fail(line, "USER requires a user name or id"));
                }
                state.image.config.config.user = user;
            }
            InstructionKind::Volume(raws) => {
                // Each word as parsed is one volume, whatever its expansion holds
                // (BuildKit `instructions/commands.go` `VolumeCommand.Expand`).
                for raw in raws {
                    let v = self.expand(line, raw, &|n| state.lookup(n))?;
                    if v.is_empty() {
                        return Err(self.fail(line, "VOLUME specified can not be an empty string"));
                    }
                    let volumes = &mut state.image.config.config.volumes;
                    volumes.insert(v, Default::default());
                }
            }
            InstructionKind::Entrypoint(cmd) => {
                let argv = command_argv(&state.image.config.config.shell, cmd);
                state.image.config.config.entrypoint = Some(argv);
                if !state.cmd_set_here {
                    state.image.config.config.cmd = None;
                }
            }
            InstructionKind::Cmd(cmd) => {
                state.image.config.config.cmd =
                    Some(command_argv(&state.image.config.config.shell, cmd));
                state.cmd_set_here = true;
            }
            InstructionKind::Shell(shell) => state.image.config.config.shell = shell.clone(),
            InstructionKind::StopSignal(raw) => {
                let signal = self.expand(line, raw, &|n| state.lookup(n))?;
                if !valid_signal(&signal) {
                    let shown = excerpt(&signal);
                    return Err(self.fail(line, format!("invalid signal: {shown}")));
                }
                // Kept as written (`sigquit` stays `sigquit`), as BuildKit's
                // `dispatchStopSignal` stores it.
                state.image.config.config.stop_signal = Some(signal);
            }
            InstructionKind::Healthcheck(h) => {
                state.image.config.config.healthcheck = Some(health_config(h));
            }
            InstructionKind::Onbuild(trigger) => {
                state.image.config.config.on_build.push(trigger.clone());
            }
            InstructionKind::Maintainer(name) => state.image.config.author = Some(name.clone()),
            InstructionKind::Copy(args) => self.copy(stage, state, ins, args, false)?,
            InstructionKind::Add(args) => self.copy(stage, state, ins, args, true)?,
            InstructionKind::Run(args) => return self.run_step(stage, state, ins, args),
        }
        self.commit(state, ins)
    }
}

/// Whether `docker buildx` counts the instruction as a step of its own.
fn counts_as_step(ins: &Instruction) -> bool {
    matches!(
        ins.kind,
        InstructionKind::Run(_)
            | InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Workdir(_)
    )
}

/// Shell forms run under the stage's SHELL, as Docker documents (buildah 1.28
/// ignores SHELL here; the comparison test records that difference).
fn command_argv(shell: &[String], cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => {
            let mut argv = if shell.is_empty() {
                vec!["/bin/sh".to_string(), "-c".to_string()]
            } else {
                shell.to_vec()
            };
            argv.push(text.clone());
            argv
        }
    }
}

/// `80`, `80/tcp`, `53/udp`, `8000-8002` → `80/tcp`, ...
fn parse_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "EXPOSE {word}: invalid protocol {proto:?} (tcp, udp or sctp)"
        ));
    }
    let port = |s: &str| -> Result<u32, String> {
        s.parse::<u32>()
            .ok()
            .filter(|p| *p <= 65535)
            .ok_or_else(|| format!("EXPOSE {word}: invalid port {s:?}"))
    };
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(ports)?, port(ports)?),
    };
    if end < start {
        return Err(format!("EXPOSE {word}: invalid port range"));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// moby/sys `signal.ParseSignal` (signal/signal.go, signal_linux.go), as
/// BuildKit's `dispatchStopSignal` checks STOPSIGNAL: any non-zero number
/// Go's `strconv.Atoi` reads, or a Linux signal name in any case with at most
/// one `SIG` prefix.
fn valid_signal(signal: &str) -> bool {
    if let Ok(n) = signal.parse::<i64>() {
        return n != 0;
    }
    let upper = signal.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if SIGNAL_NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    // RTMIN+1..RTMIN+15 and RTMAX-14..RTMAX-1 (glibc's SIGRTMIN is 34, SIGRTMAX 64).
    let offset = |prefix: &str, max: u32| {
        name.strip_prefix(prefix)
            .filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=max).contains(&n))
    };
    offset("RTMIN+", 15) || offset("RTMAX-", 14)
}

const SIGNAL_NAMES: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

/// The working directory after `WORKDIR dir`, as BuildKit's
/// `system.NormalizeWorkdir` (util/system/path.go) gives it: an absolute
/// path exactly as written, a relative one joined to the current one and
/// cleaned, an empty one the current one.
fn next_workdir(current: &str, dir: &str) -> String {
    let parent = match current {
        "" => "/".to_string(),
        c if c.starts_with('/') => c.to_string(),
        c => format!("/{}", clean("", c)),
    };
    if dir.starts_with('/') {
        dir.to_string()
    } else if dir.is_empty() {
        parent
    } else {
        format!("/{}", clean(&clean("", &parent), dir))
    }
}

fn health_config(h: &Healthcheck) -> HealthConfig {
    let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64).unwrap_or(0);
    HealthConfig {
        test: h.test.clone(),
        interval: nanos(h.interval),
        timeout: nanos(h.timeout),
        start_period: nanos(h.start_period),
        start_interval: nanos(h.start_interval),
        retries: h.retries.map(u64::from).unwrap_or(0),
    }
}
