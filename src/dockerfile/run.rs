//! RUN's flags: `--mount` (repeatable; BuildKit's comma-separated
//! `key=value` spec), `--network` and `--security`.
//!
//! Mount values stay raw: BuildKit expands build args in them when the
//! step runs, so a value such as `uid=$UID` is checked then, not here.

use super::{Command, RunArgs};
use crate::context::untrusted::excerpt;

/// What a `--mount` brings into the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A stage, an image or the context (BuildKit's default type).
    Bind,
    /// A folder kept between builds under the cache folder.
    Cache,
    Tmpfs,
    /// A file or env var from `dockless build --secret`.
    Secret,
    Ssh,
}

impl MountType {
    fn parse(text: &str) -> Result<MountType, String> {
        match text.to_ascii_lowercase().as_str() {
            "bind" => Ok(MountType::Bind),
            "cache" => Ok(MountType::Cache),
            "tmpfs" => Ok(MountType::Tmpfs),
            "secret" => Ok(MountType::Secret),
            "ssh" => Ok(MountType::Ssh),
            _ => Err(format!(
                "RUN --mount: unknown type {:?} (bind, cache, tmpfs, secret or ssh)",
                excerpt(text)
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=...`, values raw (not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    /// None: the type's default (bind read-only, the others writable).
    pub readonly: Option<bool>,
    pub sharing: Option<CacheSharing>,
    pub mode: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub required: Option<bool>,
    pub size: Option<String>,
    pub env: Option<String>,
    /// The spec as written, for error messages and the cache key.
    pub spec: String,
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunNetwork {
    /// The host's network, as Docker gives RUN by default.
    #[default]
    Default,
    /// Only loopback.
    None,
    Host,
}

impl RunNetwork {
    pub fn name(self) -> &'static str {
        match self {
            RunNetwork::Default => "default",
            RunNetwork::None => "none",
            RunNetwork::Host => "host",
        }
    }
}

/// Splits RUN's flag words into mounts, network and security, and checks them.
pub(super) fn parse_run(flag_words: Vec<String>, command: Command) -> Result<RunArgs, String> {
    let mut args = RunArgs::plain(command);
    let mut network = None;
    let mut security = None;
    for word in flag_words {
        let body = word.strip_prefix("--").unwrap_or(&word);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let value = |what: &str| {
            value
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("RUN flag --{name} requires a value (--{name}={what})"))
        };
        match name {
            "mount" => args
                .mounts
                .push(parse_mount(value("type=...,target=...")?)?),
            "network" => {
                let mode = match value("default|none|host")? {
                    "default" => RunNetwork::Default,
                    "none" => RunNetwork::None,
                    "host" => RunNetwork::Host,
                    other => {
                        return Err(format!(
                            "RUN --network={}: expected default, none or host",
                            excerpt(other)
                        ))
                    }
                };
                if network.replace(mode).is_some() {
                    return Err("duplicate flag for RUN: --network".into());
                }
            }
            "security" => {
                match value("sandbox")? {
                    "sandbox" => {}
                    "insecure" => {
                        return Err(
                            "RUN --security=insecure is not supported: dockless never runs a step privileged \
                             (remove the flag; a step that needs it must run elsewhere)"
                                .into(),
                        )
                    }
                    other => {
                        return Err(format!(
                            "RUN --security={}: expected sandbox",
                            excerpt(other)
                        ))
                    }
                }
                if security.replace(()).is_some() {
                    return Err("duplicate flag for RUN: --security".into());
                }
            }
            "" => return Err(format!("invalid flag for RUN: {:?}", excerpt(&word))),
            other => return Err(format!("unknown flag for RUN: --{}", excerpt(other))),
        }
    }
    args.network = network.unwrap_or_default();
    Ok(args)
}

/// Splits a mount spec on commas, as Go's csv reader does: a field that
/// starts with `"` runs to its closing quote (`""` is a quote inside it).
fn csv_fields(spec: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = spec.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("RUN --mount: a quoted field has no closing quote".into()),
                }
            }
        }
        while let Some(c) = chars.next_if(|c| *c != ',') {
            field.push(c);
        }
        fields.push(field);
        if chars.next().is_none() {
            return Ok(fields);
        }
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!(
            "RUN --mount: {key} expects true or false, got {:?}",
            excerpt(value)
        )),
    }
}

/// A number in `radix`, unless it names a build arg (checked when expanded).
fn check_number(key: &str, value: &str, radix: u32) -> Result<String, String> {
    if value.contains('$') || u32::from_str_radix(value, radix).is_ok() {
        return Ok(value.to_string());
    }
    let kind = if radix == 8 {
        "an octal mode"
    } else {
        "a number"
    };
    Err(format!(
        "RUN --mount: {key} must be {kind}, got {:?}",
        excerpt(value)
    ))
}

fn parse_mount(spec: &str) -> Result<RunMount, String> {
    let fields = csv_fields(spec)?;
    let kind = fields
        .iter()
        .find_map(|f| {
            let (k, v) = f.split_once('=')?;
            k.eq_ignore_ascii_case("type").then_some(v)
        })
        .map(MountType::parse)
        .transpose()?
        .unwrap_or(MountType::Bind);
    let mut m = RunMount {
        kind,
        target: None,
        source: None,
        from: None,
        id: None,
        readonly: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        required: None,
        size: None,
        env: None,
        spec: spec.to_string(),
    };
    let secretish = matches!(kind, MountType::Secret | MountType::Ssh);
    for field in fields.iter().filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let unexpected = || {
            format!(
                "RUN --mount: unexpected key {:?} for type {}",
                excerpt(&key),
                kind.name()
            )
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => m.readonly = Some(true),
                "readwrite" | "rw" => m.readonly = Some(false),
                "required" if secretish => m.required = Some(true),
                "required" => return Err(unexpected()),
                _ => {
                    return Err(format!(
                        "RUN --mount: the field {:?} must be a key=value pair",
                        excerpt(field)
                    ))
                }
            }
            continue;
        };
        let text = || Some(value.to_string());
        match key.as_str() {
            "type" => {}
            "from" => m.from = text(),
            "source" | "src" => m.source = text(),
            "target" | "dst" | "destination" => m.target = text(),
            "readonly" | "ro" => m.readonly = Some(parse_bool(&key, value)?),
            "readwrite" | "rw" => m.readonly = Some(!parse_bool(&key, value)?),
            "required" if secretish => m.required = Some(parse_bool(&key, value)?),
            "size" if kind == MountType::Tmpfs => m.size = text(),
            "id" => m.id = text(),
            "sharing" if kind == MountType::Cache => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(format!(
                            "RUN --mount: sharing must be shared, private or locked, got {:?}",
                            excerpt(value)
                        ))
                    }
                })
            }
            "mode" if kind != MountType::Bind && kind != MountType::Tmpfs => {
                m.mode = Some(check_number(&key, value, 8)?)
            }
            "uid" if kind != MountType::Bind && kind != MountType::Tmpfs => {
                m.uid = Some(check_number(&key, value, 10)?)
            }
            "gid" if kind != MountType::Bind && kind != MountType::Tmpfs => {
                m.gid = Some(check_number(&key, value, 10)?)
            }
            "env" if kind == MountType::Secret => m.env = text(),
            "required" | "size" | "sharing" | "mode" | "uid" | "gid" | "env" => {
                return Err(unexpected())
            }
            _ => {
                return Err(format!(
                    "RUN --mount: unknown key {:?} in {:?}",
                    excerpt(&key),
                    excerpt(field)
                ))
            }
        }
    }
    let needs_target = !matches!(kind, MountType::Secret | MountType::Ssh);
    if needs_target && m.target.as_deref().is_none_or(str::is_empty) {
        return Err(format!(
            "RUN --mount type={} needs a target (target=/path)",
            kind.name()
        ));
    }
    if kind == MountType::Secret && m.id.is_none() && m.source.is_none() && m.target.is_none() {
        return Err("RUN --mount type=secret needs an id (id=NAME)".into());
    }
    Ok(m)
}
