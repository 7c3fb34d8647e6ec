//! Dockerfile parsing and Docker-style variable expansion.
//!
//! The parser follows BuildKit's observable behaviour: parser directives,
//! line continuations, comments inside continuations, JSON (exec) versus
//! shell forms, flags and heredocs. Values are kept raw; expansion happens
//! later through [`expand_word`] / [`expand_words`] once the build knows the
//! variables in scope.

use crate::context::untrusted::{self, excerpt};
use std::collections::HashMap;
use std::time::Duration;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// From the `# escape=` directive, default `\`.
    pub escape: char,
    /// The `# syntax=` directive, recorded only.
    pub syntax: Option<String>,
    /// The `# check=` directive, recorded only.
    pub check: Option<String>,
    /// ARGs before the first FROM.
    pub global_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub from: From,
    pub instructions: Vec<Instruction>,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// Raw, unexpanded.
    pub image: String,
    pub platform: Option<String>,
    /// Lower-cased, as Docker treats stage names case-insensitively.
    pub alias: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// Raw, unexpanded.
    pub default: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// Keyword upper-cased plus the joined arguments, as shown in image history.
    pub original: String,
    pub kind: InstructionKind,
    /// Heredocs attached to RUN, COPY or ADD (COPY/ADD also carry them in
    /// [`CopyArgs::heredocs`]); RUN has no other place to keep them.
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    Copy(CopyArgs),
    Add(CopyArgs),
    /// Raw values (quotes and escapes still present).
    Env(Vec<(String, String)>),
    /// Raw values.
    Label(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    Expose(Vec<String>),
    User(String),
    Volume(Vec<String>),
    Entrypoint(Command),
    Cmd(Command),
    Run(Command),
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger text, validated to be a legal nested instruction.
    Onbuild(String),
    Maintainer(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter, e.g. `EOF`.
    pub name: String,
    pub content: String,
    /// False when the delimiter was quoted.
    pub expand: bool,
    /// The `<<-` form: leading tabs were stripped from the content.
    pub chomp_tabs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub start_interval: Option<Duration>,
    pub retries: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// An error before the file name is known.
struct LineError {
    line: usize,
    message: String,
}

impl LineError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        LineError {
            line,
            message: message.into(),
        }
    }
}

/// The most of a Dockerfile that is read.
pub const MAX_BYTES: u64 = 2 << 20;

const KNOWN_INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses a Dockerfile. `file` is only used in error messages.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, ParseError> {
    parse_inner(text).map_err(|e| ParseError {
        file: file.to_string(),
        line: e.line,
        message: e.message,
    })
}

fn parse_inner(text: &str) -> Result<Dockerfile, LineError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();

    let mut escape = '\\';
    let mut syntax = None;
    let mut check = None;
    let mut seen: Vec<String> = Vec::new();
    for (idx, raw) in lines.iter().enumerate() {
        let Some((key, value)) = parse_directive(raw) else {
            break;
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "escape" | "syntax" | "check") {
            // An unknown directive is an ordinary comment and ends the header.
            break;
        }
        if seen.contains(&key) {
            return Err(LineError::new(
                idx + 1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        seen.push(key.clone());
        match key.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(LineError::new(
                            idx + 1,
                            format!(
                                "invalid escape token {:?}: must be \\ or `",
                                excerpt(&value)
                            ),
                        ));
                    }
                }
            }
            "syntax" => syntax = Some(value),
            _ => check = Some(value),
        }
    }

    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut stage_names: HashMap<String, usize> = HashMap::new();
    let mut i = 0;
    while let Some(raw) = lines.get(i) {
        let start = i + 1;
        i += 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (mut joined, mut cont) = trim_continuation(trimmed, escape);
        while cont {
            let Some(next) = lines.get(i) else { break };
            i += 1;
            let next_trimmed = next.trim_start();
            // Comment and blank lines inside a continuation are skipped, not joined.
            if next_trimmed.is_empty() || next_trimmed.starts_with('#') {
                continue;
            }
            let (part, c) = trim_continuation(next, escape);
            joined.push_str(&part);
            cont = c;
        }
        let joined = joined.trim();
        if joined.is_empty() {
            continue;
        }
        let (keyword, rest) = split_keyword(joined);
        let kw = keyword.to_uppercase();
        if !KNOWN_INSTRUCTIONS.contains(&kw.as_str()) {
            return Err(LineError::new(start, unknown_instruction("", &kw)));
        }
        if stages.is_empty() && kw != "FROM" && kw != "ARG" {
            return Err(LineError::new(
                start,
                format!("{kw} cannot be used before the first FROM (only ARG can)"),
            ));
        }

        let mut heredocs = Vec::new();
        if matches!(kw.as_str(), "RUN" | "COPY" | "ADD") && rest.contains("<<") {
            let (_, args) = extract_flags(rest, escape);
            for word in split_words_raw(args, escape) {
                let Some(spec) = parse_heredoc_word(&word) else {
                    continue;
                };
                let mut content = String::new();
                loop {
                    let Some(body) = lines.get(i) else {
                        return Err(LineError::new(
                            start,
                            format!(
                                "unterminated heredoc <<{}: no line equal to {:?} before end of file",
                                excerpt(&spec.name),
                                excerpt(&spec.name)
                            ),
                        ));
                    };
                    i += 1;
                    let candidate = if spec.chomp_tabs {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if candidate == spec.name {
                        break;
                    }
                    content.push_str(candidate);
                    content.push('\n');
                }
                heredocs.push(Heredoc { content, ..spec });
            }
        }

        let original = if rest.is_empty() {
            kw.clone()
        } else {
            format!("{kw} {rest}")
        };

        if kw == "FROM" {
            let from = parse_from(rest, escape, start).map_err(|m| LineError::new(start, m))?;
            if let Some(alias) = &from.alias {
                if let Some(first) = stage_names.get(alias) {
                    return Err(LineError::new(
                        start,
                        format!(
                            "duplicate stage name {:?}, first defined on line {first}",
                            excerpt(alias)
                        ),
                    ));
                }
                stage_names.insert(alias.clone(), start);
            }
            stages.push(Stage {
                from,
                instructions: Vec::new(),
                index: stages.len(),
            });
            continue;
        }

        let kind = parse_kind(&kw, rest, escape, start, &heredocs)
            .map_err(|m| LineError::new(start, m))?;
        match (stages.last_mut(), kind) {
            (None, InstructionKind::Arg(decls)) => global_args.extend(decls),
            (Some(stage), kind) => stage.instructions.push(Instruction {
                line: start,
                original,
                kind,
                heredocs,
            }),
            // Unreachable: only ARG gets here without a stage.
            (None, _) => {
                return Err(LineError::new(
                    start,
                    format!("{kw} cannot be used before the first FROM (only ARG can)"),
                ));
            }
        }
    }

    if stages.is_empty() {
        let line = if global_args.is_empty() {
            1
        } else {
            lines.len().max(1)
        };
        return Err(LineError::new(
            line,
            "no FROM instruction: a Dockerfile needs at least one build stage",
        ));
    }

    Ok(Dockerfile {
        escape,
        syntax,
        check,
        global_args,
        stages,
    })
}

/// Recognises `# key = value` (the key not yet checked against known directives).
fn parse_directive(line: &str) -> Option<(String, String)> {
    let s = line.trim_start().strip_prefix('#')?.trim_start();
    if !s.chars().next()?.is_ascii_alphabetic() {
        return None;
    }
    let key_len = s
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(s.len());
    let (key, after) = s.split_at(key_len);
    let value = after.trim_start().strip_prefix('=')?.trim();
    if value.is_empty() {
        return None;
    }
    Some((key.to_string(), value.to_string()))
}

/// Strips a trailing continuation escape. An escape preceded by another escape
/// is a literal escaped escape, not a continuation (BuildKit's rule).
fn trim_continuation(line: &str, escape: char) -> (String, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(before) if !before.ends_with(escape) => (before.to_string(), true),
        _ => (line.to_string(), false),
    }
}

fn split_keyword(line: &str) -> (&str, &str) {
    match line.find(char::is_whitespace) {
        Some(pos) => {
            let (kw, rest) = line.split_at(pos);
            (kw, rest.trim_start())
        }
        None => (line, ""),
    }
}

/// Splits leading `--flag[=value]` words off an instruction's arguments.
/// Quotes are removed from flag words and the escape char escapes the next char.
fn extract_flags(line: &str, escape: char) -> (Vec<String>, &str) {
    let mut words = Vec::new();
    let mut it = line.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else {
            return (words, "");
        };
        let remaining = line.get(start..).unwrap_or("");
        if !remaining.starts_with("--") {
            return (words, remaining);
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        let mut end = line.len();
        while let Some((pos, c)) = it.next() {
            if quote.is_none() && c.is_whitespace() {
                end = pos;
                break;
            }
            if quote == Some(c) {
                quote = None;
            } else if quote.is_none() && (c == '\'' || c == '"') {
                quote = Some(c);
            } else if c == escape {
                if let Some((_, n)) = it.next() {
                    word.push(n);
                }
            } else {
                word.push(c);
            }
        }
        if word == "--" {
            return (words, line.get(end..).unwrap_or("").trim_start());
        }
        words.push(word);
    }
}

/// Splits on unquoted whitespace, keeping quotes and escapes in the words
/// (BuildKit's raw word splitting for ENV, LABEL, ARG and heredoc detection).
fn split_words_raw(s: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            None => {
                if c.is_whitespace() {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                    }
                    in_word = false;
                    continue;
                }
                in_word = true;
                if c == '\'' || c == '"' {
                    quote = Some(c);
                    word.push(c);
                } else if c == escape {
                    // A lone escape at the very end is dropped.
                    if let Some(n) = chars.next() {
                        word.push(c);
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
            Some(q) => {
                if c == q {
                    quote = None;
                    word.push(c);
                } else if c == escape && q != '\'' {
                    if let Some(n) = chars.next() {
                        word.push(c);
                        word.push(n);
                    }
                } else {
                    word.push(c);
                }
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Recognises a heredoc word such as `<<EOF`, `<<-EOF`, `<<"EOF"` or `3<<EOF`.
fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
    let w = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let w = w.strip_prefix("<<")?;
    let (chomp_tabs, w) = match w.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, w),
    };
    if w.is_empty() || w.contains('<') {
        return None;
    }
    let name = expand_word(w, '\\', &|_| None).ok()?;
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return None;
    }
    // Like POSIX shells: quoting any part of the delimiter disables expansion.
    let expand = name == w;
    Some(Heredoc {
        name,
        content: String::new(),
        expand,
        chomp_tabs,
    })
}

type Flags = HashMap<String, Option<String>>;

fn check_flags(kw: &str, words: Vec<String>, allowed: &[&str]) -> Result<Flags, String> {
    let mut flags = Flags::new();
    for word in words {
        let body = word.strip_prefix("--").unwrap_or(&word);
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if name.is_empty() {
            return Err(format!("invalid flag for {kw}: {:?}", excerpt(&word)));
        }
        if !allowed.contains(&name) {
            return Err(format!("unknown flag for {kw}: --{}", excerpt(name)));
        }
        if flags.insert(name.to_string(), value).is_some() {
            return Err(format!("duplicate flag for {kw}: --{}", excerpt(name)));
        }
    }
    Ok(flags)
}

fn string_flag(kw: &str, flags: &mut Flags, name: &str) -> Result<Option<String>, String> {
    match flags.remove(name) {
        None => Ok(None),
        Some(Some(v)) if !v.is_empty() => Ok(Some(v)),
        Some(_) => Err(format!(
            "{kw} flag --{name} requires a value (--{name}=...)"
        )),
    }
}

fn bool_flag(kw: &str, flags: &mut Flags, name: &str) -> Result<bool, String> {
    match flags.remove(name) {
        None => Ok(false),
        Some(None) => Ok(true),
        Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" => Ok(false),
            _ => Err(format!(
                "{kw} flag --{name} expects true or false, got {:?}",
                excerpt(&v)
            )),
        },
    }
}

fn duration_flag(kw: &str, flags: &mut Flags, name: &str) -> Result<Option<Duration>, String> {
    let Some(v) = string_flag(kw, flags, name)? else {
        return Ok(None);
    };
    let d = parse_go_duration(&v).map_err(|m| format!("{kw} --{name}: {m}"))?;
    // Zero means "inherit the default"; anything else below 1ms is a mistake.
    if !d.is_zero() && d < Duration::from_millis(1) {
        return Err(format!(
            "{kw} --{name} cannot be less than 1ms, got {:?}",
            excerpt(&v)
        ));
    }
    Ok(Some(d))
}

fn reject_flags(kw: &str, words: Vec<String>) -> Result<(), String> {
    check_flags(kw, words, &[]).map(|_| ())
}

fn parse_from(rest: &str, escape: char, line: usize) -> Result<From, String> {
    let (flag_words, args) = extract_flags(rest, escape);
    let mut flags = check_flags("FROM", flag_words, &["platform"])?;
    let platform = string_flag("FROM", &mut flags, "platform")?;
    let parts: Vec<&str> = args.split_whitespace().collect();
    let (image, alias) = match parts.as_slice() {
        [] => return Err("FROM requires an image name".to_string()),
        [image] => (image.to_string(), None),
        [image, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            let name = name.to_lowercase();
            if !is_valid_stage_name(&name) {
                return Err(format!(
                    "invalid stage name {:?}: must start with a letter and contain only lowercase letters, digits, '-', '_' and '.'",
                    excerpt(&name)
                ));
            }
            (image.to_string(), Some(name))
        }
        [_, other, _] => {
            return Err(format!(
                "FROM expects AS before the stage name, got {:?}",
                excerpt(other)
            ));
        }
        _ => {
            return Err(format!(
                "FROM requires either one argument (image) or three (image AS name), got {}",
                parts.len()
            ));
        }
    };
    Ok(From {
        image,
        platform,
        alias,
        line,
    })
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
}

/// Parses every instruction except FROM. `heredocs` are the bodies already
/// read for this instruction (empty for ONBUILD triggers).
fn parse_kind(
    kw: &str,
    rest: &str,
    escape: char,
    line: usize,
    heredocs: &[Heredoc],
) -> Result<InstructionKind, String> {
    let (flag_words, args) = extract_flags(rest, escape);
    let args = args.trim();
    match kw {
        "COPY" | "ADD" => {
            let allowed: &[&str] = if kw == "COPY" {
                &["from", "chown", "chmod", "link"]
            } else {
                &["chown", "chmod", "link", "checksum"]
            };
            let mut flags = check_flags(kw, flag_words, allowed)?;
            if flags.contains_key("checksum") {
                // Silently ignoring a checksum would defeat its purpose.
                return Err("ADD --checksum is not supported".to_string());
            }
            let from = string_flag(kw, &mut flags, "from")?;
            let chown = string_flag(kw, &mut flags, "chown")?;
            let chmod = string_flag(kw, &mut flags, "chmod")?;
            let link = bool_flag(kw, &mut flags, "link")?;
            let mut words = match parse_json_array(args) {
                JsonArray::Strings(v) => v,
                JsonArray::NotStrings => return Err(json_not_strings(kw)),
                JsonArray::NotJson => args
                    .split_whitespace()
                    .map(|w| match parse_heredoc_word(w) {
                        Some(h) if heredocs.iter().any(|d| d.name == h.name) => h.name,
                        _ => w.to_string(),
                    })
                    .collect(),
            };
            if words.len() < 2 {
                return Err(format!(
                    "{kw} requires at least two arguments, got {}",
                    words.len()
                ));
            }
            let dest = words.pop().unwrap_or_default();
            Ok(CopyArgs {
                sources: words,
                dest,
                from,
                chown,
                chmod,
                link,
                heredocs: heredocs.to_vec(),
            })
            .map(|c| {
                if kw == "COPY" {
                    InstructionKind::Copy(c)
                } else {
                    InstructionKind::Add(c)
                }
            })
        }
        "ENV" | "LABEL" => {
            reject_flags(kw, flag_words)?;
            let pairs = parse_name_values(kw, args, escape)?;
            Ok(if kw == "ENV" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            })
        }
        "ARG" => {
            reject_flags(kw, flag_words)?;
            let words = split_words_raw(args, escape);
            if words.is_empty() {
                return Err("ARG requires at least one argument".to_string());
            }
            let mut decls = Vec::new();
            for w in words {
                let (name, default) = match w.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (w.clone(), None),
                };
                if name.is_empty() {
                    return Err(format!("ARG name can not be empty in {:?}", excerpt(&w)));
                }
                decls.push(ArgDecl {
                    name,
                    default,
                    line,
                });
            }
            Ok(InstructionKind::Arg(decls))
        }
        "WORKDIR" => {
            reject_flags(kw, flag_words)?;
            if args.is_empty() {
                return Err("WORKDIR requires exactly one argument".to_string());
            }
            Ok(InstructionKind::Workdir(args.to_string()))
        }
        "EXPOSE" => {
            reject_flags(kw, flag_words)?;
            let ports: Vec<String> = args.split_whitespace().map(str::to_string).collect();
            if ports.is_empty() {
                return Err("EXPOSE requires at least one argument".to_string());
            }
            Ok(InstructionKind::Expose(ports))
        }
        "USER" | "STOPSIGNAL" => {
            reject_flags(kw, flag_words)?;
            let n = split_words_raw(args, escape).len();
            if n != 1 {
                return Err(format!("{kw} requires exactly one argument, got {n}"));
            }
            Ok(if kw == "USER" {
                InstructionKind::User(args.to_string())
            } else {
                InstructionKind::StopSignal(args.to_string())
            })
        }
        "VOLUME" => {
            reject_flags(kw, flag_words)?;
            let vols: Vec<String> = match parse_json_array(args) {
                JsonArray::Strings(v) => v.into_iter().map(|s| s.trim().to_string()).collect(),
                JsonArray::NotStrings => return Err(json_not_strings(kw)),
                JsonArray::NotJson => args.split_whitespace().map(str::to_string).collect(),
            };
            if vols.is_empty() {
                return Err("VOLUME requires at least one argument".to_string());
            }
            if vols.iter().any(String::is_empty) {
                return Err("VOLUME paths can not be empty strings".to_string());
            }
            Ok(InstructionKind::Volume(vols))
        }
        "ENTRYPOINT" | "CMD" | "RUN" => {
            reject_flags(kw, flag_words)?;
            let cmd = parse_command(kw, args)?;
            if matches!(&cmd, Command::Shell(s) if s.is_empty()) {
                return Err(format!("{kw} requires a command"));
            }
            Ok(match kw {
                "ENTRYPOINT" => InstructionKind::Entrypoint(cmd),
                "CMD" => InstructionKind::Cmd(cmd),
                _ => InstructionKind::Run(cmd),
            })
        }
        "SHELL" => {
            reject_flags(kw, flag_words)?;
            match parse_json_array(args) {
                JsonArray::Strings(v) if v.is_empty() => {
                    Err("SHELL requires at least one argument".to_string())
                }
                JsonArray::Strings(v) => Ok(InstructionKind::Shell(v)),
                JsonArray::NotStrings => Err(json_not_strings(kw)),
                JsonArray::NotJson => Err(
                    "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]"
                        .to_string(),
                ),
            }
        }
        "HEALTHCHECK" => parse_healthcheck(flag_words, args),
        "ONBUILD" => {
            reject_flags(kw, flag_words)?;
            if args.is_empty() {
                return Err("ONBUILD requires a trigger instruction".to_string());
            }
            let (inner_kw, inner_rest) = split_keyword(args);
            let inner = inner_kw.to_uppercase();
            match inner.as_str() {
                // Checked before recursing so nesting depth stays at one.
                "ONBUILD" => Err("chaining ONBUILD via ONBUILD ONBUILD is not allowed".to_string()),
                "FROM" | "MAINTAINER" => {
                    Err(format!("{inner} is not allowed as an ONBUILD trigger"))
                }
                _ if !KNOWN_INSTRUCTIONS.contains(&inner.as_str()) => {
                    Err(unknown_instruction(" in ONBUILD trigger", &inner))
                }
                _ => {
                    parse_kind(&inner, inner_rest, escape, line, &[])
                        .map_err(|m| format!("invalid ONBUILD trigger: {m}"))?;
                    Ok(InstructionKind::Onbuild(args.to_string()))
                }
            }
        }
        "MAINTAINER" => {
            reject_flags(kw, flag_words)?;
            if args.is_empty() {
                return Err("MAINTAINER requires an argument".to_string());
            }
            Ok(InstructionKind::Maintainer(args.to_string()))
        }
        other => Err(unknown_instruction("", other)),
    }
}

/// Names the keyword only when it looks like one: a file that is not a
/// Dockerfile (a secret, say) must not come back in the error.
fn unknown_instruction(place: &str, keyword: &str) -> String {
    match untrusted::keyword(keyword) {
        Some(kw) => format!("unknown instruction{place}: {kw}"),
        None => {
            format!("unknown instruction{place}: the line does not start with a Dockerfile keyword")
        }
    }
}

fn json_not_strings(kw: &str) -> String {
    format!("{kw}: a JSON array argument must contain only strings")
}

/// Exec form when the text is a JSON array of strings, shell form otherwise
/// (invalid JSON falls back to shell form, as in BuildKit).
fn parse_command(kw: &str, args: &str) -> Result<Command, String> {
    match parse_json_array(args) {
        JsonArray::Strings(v) => Ok(Command::Exec(v)),
        JsonArray::NotStrings => Err(json_not_strings(kw)),
        JsonArray::NotJson => Ok(Command::Shell(args.to_string())),
    }
}

fn parse_name_values(kw: &str, args: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = split_words_raw(args, escape);
    let Some(first) = words.first() else {
        return Err(format!("{kw} requires at least one argument"));
    };
    if !first.contains('=') {
        // Legacy form: `ENV key the rest of the line`.
        let (key, value) = split_keyword(args);
        if value.is_empty() {
            return Err(format!(
                "{kw} {key} has no value: use {kw} {key}=value or {kw} {key} value",
                key = excerpt(key)
            ));
        }
        return Ok(vec![(key.to_string(), value.to_string())]);
    }
    let mut pairs = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "{kw}: can't find = in {:?}; each argument must be of the form name=value",
                excerpt(&w)
            ));
        };
        if k.is_empty() {
            return Err(format!("{kw} names can not be empty in {:?}", excerpt(&w)));
        }
        pairs.push((k.to_string(), v.to_string()));
    }
    Ok(pairs)
}

fn parse_healthcheck(flag_words: Vec<String>, args: &str) -> Result<InstructionKind, String> {
    let kw = "HEALTHCHECK";
    let mut flags = check_flags(
        kw,
        flag_words,
        &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
    )?;
    let interval = duration_flag(kw, &mut flags, "interval")?;
    let timeout = duration_flag(kw, &mut flags, "timeout")?;
    let start_period = duration_flag(kw, &mut flags, "start-period")?;
    let start_interval = duration_flag(kw, &mut flags, "start-interval")?;
    let retries = match string_flag(kw, &mut flags, "retries")? {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n < 0 => return Err(format!("{kw} --retries cannot be negative, got {n}")),
            Ok(n) => {
                Some(u32::try_from(n).map_err(|_| format!("{kw} --retries is too large: {n}"))?)
            }
            Err(_) => {
                return Err(format!(
                    "{kw} --retries expects a whole number, got {:?}",
                    excerpt(&v)
                ))
            }
        },
    };
    let (typ, cmd_text) = split_keyword(args);
    let test = match typ.to_uppercase().as_str() {
        "" => return Err("HEALTHCHECK requires NONE or CMD followed by a command".to_string()),
        "NONE" => {
            if !cmd_text.is_empty() {
                return Err("HEALTHCHECK NONE takes no arguments".to_string());
            }
            vec!["NONE".to_string()]
        }
        "CMD" => match parse_command(kw, cmd_text)? {
            Command::Exec(v) if v.is_empty() => {
                return Err("missing command after HEALTHCHECK CMD".to_string());
            }
            Command::Exec(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
            Command::Shell(s) if s.is_empty() => {
                return Err("missing command after HEALTHCHECK CMD".to_string());
            }
            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s],
        },
        _ => {
            return Err(format!(
                "unknown type {:?} in HEALTHCHECK (expected CMD or NONE)",
                excerpt(typ)
            ));
        }
    };
    Ok(InstructionKind::Healthcheck(Healthcheck {
        test,
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// Parses a Go `time.ParseDuration` string such as `1m30s`, `500ms` or `1.5h`.
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let shown = excerpt(text);
    let invalid = || format!("invalid duration {shown:?}");
    let (negative, mut s) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let not_digit = |c: char| !c.is_ascii_digit();
    let mut total: u128 = 0;
    while !s.is_empty() {
        let (int_part, r) = s.split_at(s.find(not_digit).unwrap_or(s.len()));
        let (frac_part, r) = match r.strip_prefix('.') {
            Some(r2) => r2.split_at(r2.find(not_digit).unwrap_or(r2.len())),
            None => ("", r),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let (unit, r) = r.split_at(
            r.find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(r.len()),
        );
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "missing unit in duration {shown:?} (use e.g. 30s, 1m30s, 500ms)"
                ));
            }
            _ => {
                return Err(format!(
                    "unknown unit {:?} in duration {shown:?}",
                    excerpt(unit)
                ))
            }
        };
        let overflow = || format!("duration {shown:?} is too large");
        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole
                .checked_mul(10)
                .and_then(|w| w.checked_add(u128::from(d - b'0')))
                .ok_or_else(overflow)?;
        }
        // Digits past nanosecond precision cannot change the result.
        let mut frac_num: u128 = 0;
        let mut frac_den: u128 = 1;
        for d in frac_part.bytes().take(18) {
            frac_num = frac_num * 10 + u128::from(d - b'0');
            frac_den *= 10;
        }
        total = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_num * scale / frac_den))
            .and_then(|w| total.checked_add(w))
            .ok_or_else(overflow)?;
        if total > i64::MAX as u128 {
            return Err(overflow());
        }
        s = r;
    }
    if negative && total != 0 {
        return Err(format!("duration {shown:?} cannot be negative"));
    }
    u64::try_from(total)
        .map(Duration::from_nanos)
        .map_err(|_| format!("duration {shown:?} is too large"))
}

enum JsonArray {
    NotJson,
    NotStrings,
    Strings(Vec<String>),
}

/// Deep enough for any real Dockerfile; bounds recursion on hostile input.
const MAX_JSON_DEPTH: usize = 128;

/// Parses text that should be a JSON array of strings. Distinguishes invalid
/// JSON (callers fall back to shell form) from valid JSON that holds
/// something other than strings (an error, as in BuildKit).
fn parse_json_array(text: &str) -> JsonArray {
    if !text.starts_with('[') {
        return JsonArray::NotJson;
    }
    let mut p = JsonParser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let Ok(JsonValue::Array(items)) = p.value(0) else {
        return JsonArray::NotJson;
    };
    p.skip_ws();
    if p.pos != p.chars.len() {
        return JsonArray::NotJson;
    }
    let mut out = Vec::new();
    for item in items {
        match item {
            JsonValue::Str(s) => out.push(s),
            _ => return JsonArray::NotStrings,
        }
    }
    JsonArray::Strings(out)
}

enum JsonValue {
    Str(String),
    Array(Vec<JsonValue>),
    Other,
}

struct JsonParser {
    chars: Vec<char>,
    pos: usize,
}

impl JsonParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect_word(&mut self, word: &str) -> Result<JsonValue, ()> {
        for c in word.chars() {
            if self.bump() != Some(c) {
                return Err(());
            }
        }
        Ok(JsonValue::Other)
    }

    fn value(&mut self, depth: usize) -> Result<JsonValue, ()> {
        if depth > MAX_JSON_DEPTH {
            return Err(());
        }
        self.skip_ws();
        match self.peek().ok_or(())? {
            '"' => self.string().map(JsonValue::Str),
            '[' => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(']') {
                    self.pos += 1;
                    return Ok(JsonValue::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.bump() {
                        Some(',') => continue,
                        Some(']') => return Ok(JsonValue::Array(items)),
                        _ => return Err(()),
                    }
                }
            }
            '{' => {
                self.pos += 1;
                self.skip_ws();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Ok(JsonValue::Other);
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some('"') {
                        return Err(());
                    }
                    self.string()?;
                    self.skip_ws();
                    if self.bump() != Some(':') {
                        return Err(());
                    }
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.bump() {
                        Some(',') => continue,
                        Some('}') => return Ok(JsonValue::Other),
                        _ => return Err(()),
                    }
                }
            }
            't' => self.expect_word("true"),
            'f' => self.expect_word("false"),
            'n' => self.expect_word("null"),
            '-' | '0'..='9' => self.number(),
            _ => Err(()),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some('0'..='9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<JsonValue, ()> {
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        match self.peek() {
            Some('0') => self.pos += 1,
            Some('1'..='9') => {
                self.digits();
            }
            _ => return Err(()),
        }
        if self.peek() == Some('.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(());
            }
        }
        if matches!(self.peek(), Some('e' | 'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some('+' | '-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
        }
        Ok(JsonValue::Other)
    }

    fn hex4(&mut self) -> Result<u32, ()> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = self.bump().and_then(|c| c.to_digit(16)).ok_or(())?;
            v = v * 16 + d;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, ()> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            match self.bump().ok_or(())? {
                '"' => return Ok(out),
                '\\' => match self.bump().ok_or(())? {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let unit = self.hex4()?;
                        out.push(self.finish_code_unit(unit));
                    }
                    _ => return Err(()),
                },
                c if (c as u32) < 0x20 => return Err(()),
                c => out.push(c),
            }
        }
    }

    /// Combines surrogate pairs; lone surrogates become U+FFFD like Go does.
    fn finish_code_unit(&mut self, unit: u32) -> char {
        if (0xD800..0xDC00).contains(&unit) {
            let save = self.pos;
            let low = if self.bump() == Some('\\') && self.bump() == Some('u') {
                self.hex4().ok()
            } else {
                None
            };
            if let Some(low @ 0xDC00..0xE000) = low {
                let cp = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                return char::from_u32(cp).unwrap_or('\u{FFFD}');
            }
            self.pos = save;
            return '\u{FFFD}';
        }
        char::from_u32(unit).unwrap_or('\u{FFFD}')
    }
}

// ---------------------------------------------------------------------------
// Variable expansion

/// Bounds `${a:-${b:-...}}` nesting so hostile input cannot overflow the stack.
const MAX_EXPANSION_DEPTH: usize = 64;

/// Docker's shell-word processing for one word: removes quotes and escapes,
/// and substitutes `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
/// `${VAR:+alt}`, `${VAR+alt}`, `${VAR:?msg}`, `${VAR?msg}`. Single quotes
/// prevent substitution. Unknown variables expand to "".
pub fn expand_word(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut lex = Lexer::new(word, escape, lookup);
    lex.process(None, 0).map(|(s, _)| s)
}

/// Like [`expand_word`], but splits the result into words on unquoted
/// whitespace (including whitespace produced by unquoted substitutions).
pub fn expand_words(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut lex = Lexer::new(word, escape, lookup);
    lex.process(None, 0).map(|(_, w)| w.finish())
}

#[derive(Default)]
struct WordSplitter {
    words: Vec<String>,
    current: String,
    in_word: bool,
}

impl WordSplitter {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.current));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }

    fn add_raw_char(&mut self, c: char) {
        self.current.push(c);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_raw_char(c));
    }

    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(self.current);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Lexer<'a> {
    fn new(word: &str, escape: char, lookup: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            lookup,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Processes until `stop` (consumed) or end of input.
    fn process(
        &mut self,
        stop: Option<char>,
        depth: usize,
    ) -> Result<(String, WordSplitter), String> {
        if depth > MAX_EXPANSION_DEPTH {
            return Err("variable substitution nested too deeply".to_string());
        }
        let mut out = String::new();
        let mut words = WordSplitter::default();
        loop {
            let Some(c) = self.peek() else {
                if stop.is_some() {
                    return Err("missing '}' in variable substitution".to_string());
                }
                return Ok((out, words));
            };
            if Some(c) == stop {
                self.pos += 1;
                return Ok((out, words));
            }
            if c == '\'' {
                let s = self.single_quoted()?;
                words.add_raw_str(&s);
                out.push_str(&s);
            } else if c == '"' {
                let s = self.double_quoted(depth)?;
                words.add_raw_str(&s);
                out.push_str(&s);
            } else if c == '$' {
                let s = self.dollar(depth)?;
                // Unquoted substitution results are subject to word splitting.
                words.add_str(&s);
                out.push_str(&s);
            } else if c == self.escape {
                self.pos += 1;
                // A trailing escape is dropped, as Docker does.
                let Some(n) = self.bump() else {
                    return match stop {
                        Some(_) => Err("missing '}' in variable substitution".to_string()),
                        None => Ok((out, words)),
                    };
                };
                words.add_raw_char(n);
                out.push(n);
            } else {
                self.pos += 1;
                words.add_char(c);
                out.push(c);
            }
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err("unexpected end of input: missing closing single quote".to_string());
                }
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, depth: usize) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err("unexpected end of input: missing closing double quote".to_string());
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar(depth)?),
                Some(c) if c == self.escape => {
                    self.pos += 1;
                    // Only these are escapable inside double quotes; otherwise
                    // the escape char stays literally.
                    match self.peek() {
                        Some(n) if n == '"' || n == '$' || n == self.escape => {
                            self.pos += 1;
                            out.push(n);
                        }
                        _ => out.push(c),
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_ascii_digit() => {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                while let Some(d) = self
                    .peek()
                    .filter(|d| d.is_ascii_alphanumeric() || *d == '_')
                {
                    name.push(d);
                    self.pos += 1;
                }
            }
            _ => {}
        }
        name
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Expands a `$` at the current position.
    fn dollar(&mut self, depth: usize) -> Result<String, String> {
        self.pos += 1;
        match self.peek() {
            Some('{') => {}
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                let name = self.name();
                return Ok(self.var(&name).unwrap_or_default());
            }
            // `$` not followed by a name is literal.
            _ => return Ok("$".to_string()),
        }
        self.pos += 1;
        let name = self.name();
        if name.is_empty() {
            return Err("bad substitution: missing variable name after ${".to_string());
        }
        let value = self.var(&name);
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let modifier = match self.bump() {
            None => {
                return Err(format!(
                    "missing '}}' in substitution ${{{}",
                    excerpt(&name)
                ))
            }
            Some('}') if !colon => return Ok(value.unwrap_or_default()),
            Some(m @ ('-' | '+' | '?')) => m,
            Some(m) => {
                let shown = if colon {
                    format!(":{m}")
                } else {
                    m.to_string()
                };
                return Err(format!(
                    "unsupported modifier {shown:?} in substitution ${{{}...}}",
                    excerpt(&name)
                ));
            }
        };
        let (word, _) = self.process(Some('}'), depth + 1)?;
        // With a colon, an empty value counts as unset.
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        match modifier {
            '-' if set => Ok(value.unwrap_or_default()),
            '-' => Ok(word),
            '+' if set => Ok(word),
            '+' => Ok(String::new()),
            _ if set => Ok(value.unwrap_or_default()),
            _ if word.is_empty() => Err(format!("{name}: is not allowed to be unset")),
            _ => Err(format!("{name}: {word}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Dockerfile {
        match parse(text, "Dockerfile") {
            Ok(d) => d,
            Err(e) => panic!("unexpected error: {e}\n--- input ---\n{text}"),
        }
    }

    /// Parses `FROM base` + `body` and returns the first stage's instructions.
    fn instrs(body: &str) -> Vec<Instruction> {
        let d = ok(&format!("FROM base\n{body}"));
        d.stages
            .into_iter()
            .next()
            .map(|s| s.instructions)
            .unwrap_or_default()
    }

    fn kinds(body: &str) -> Vec<InstructionKind> {
        instrs(body).into_iter().map(|i| i.kind).collect()
    }

    fn one(body: &str) -> InstructionKind {
        let mut k = kinds(body);
        assert_eq!(k.len(), 1, "expected one instruction in {body:?}: {k:?}");
        k.remove(0)
    }

    fn err(text: &str) -> (usize, String) {
        match parse(text, "Dockerfile") {
            Ok(d) => panic!("expected an error for {text:?}, got {d:?}"),
            Err(e) => (e.line, e.message),
        }
    }

    fn assert_err(text: &str, line: usize, message: &str) {
        let (l, m) = err(text);
        assert_eq!((l, m.as_str()), (line, message), "input: {text:?}");
    }

    fn assert_err_contains(text: &str, line: usize, needle: &str) {
        let (l, m) = err(text);
        assert_eq!(l, line, "wrong line for {text:?}: {m}");
        assert!(m.contains(needle), "{m:?} should contain {needle:?}");
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn copy_args(kind: InstructionKind) -> CopyArgs {
        match kind {
            InstructionKind::Copy(c) | InstructionKind::Add(c) => c,
            other => panic!("not COPY/ADD: {other:?}"),
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    fn x(word: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        expand_word(word, '\\', &env(vars))
    }

    // ----- structure, stages, directives -------------------------------

    #[test]
    fn multi_stage_with_aliases_platform_and_global_args() {
        let d = ok(
            "ARG BASE=alpine:3.19\nARG V\nFROM --platform=$BUILDPLATFORM ${BASE} AS Build\nRUN make\n\nfrom scratch\nCOPY --from=build /out /\n",
        );
        assert_eq!(d.escape, '\\');
        assert_eq!(d.syntax, None);
        assert_eq!(
            d.global_args,
            vec![
                ArgDecl {
                    name: "BASE".into(),
                    default: Some("alpine:3.19".into()),
                    line: 1
                },
                ArgDecl {
                    name: "V".into(),
                    default: None,
                    line: 2
                },
            ]
        );
        assert_eq!(d.stages.len(), 2);
        let first = &d.stages[0];
        assert_eq!(first.index, 0);
        assert_eq!(
            first.from,
            From {
                image: "${BASE}".into(),
                platform: Some("$BUILDPLATFORM".into()),
                alias: Some("build".into()),
                line: 3,
            }
        );
        assert_eq!(first.instructions.len(), 1);
        assert_eq!(d.stages[1].index, 1);
        assert_eq!(d.stages[1].from.image, "scratch");
        assert_eq!(d.stages[1].from.alias, None);
        let c = copy_args(d.stages[1].instructions[0].kind.clone());
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(d.stages[1].instructions[0].line, 7);
    }

    #[test]
    fn directives_are_recorded() {
        let d = ok(
            "# syntax=docker/dockerfile:1\n# CHECK = skip=all\n#escape=`\nFROM a\nRUN echo `\n  hi\n",
        );
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.check.as_deref(), Some("skip=all"));
        assert_eq!(d.escape, '`');
        assert_eq!(
            d.stages[0].instructions[0].kind,
            InstructionKind::Run(Command::Shell("echo   hi".into()))
        );
    }

    #[test]
    fn directive_after_comment_or_blank_line_is_a_comment() {
        let d = ok("# hello\n# escape=`\nFROM a\nENV P \\\n\\go\n");
        assert_eq!(d.escape, '\\');
        let d = ok("\n# escape=`\nFROM a\n");
        assert_eq!(d.escape, '\\');
        // An unknown directive ends the header too.
        let d = ok("# foo=bar\n# escape=`\nFROM a\n");
        assert_eq!(d.escape, '\\');
    }

    #[test]
    fn directive_with_leading_whitespace_counts() {
        let d = ok("  #  escape  =  `  \nFROM a\n");
        assert_eq!(d.escape, '`');
    }

    #[test]
    fn backtick_escape_makes_backslash_ordinary() {
        let d = ok("# escape=`\nFROM a\nENV GOPATH `\n\\go\nWORKDIR C:\\dir\\\nRUN dir\n");
        let k: Vec<_> = d.stages[0]
            .instructions
            .iter()
            .map(|i| i.kind.clone())
            .collect();
        assert_eq!(
            k[0],
            InstructionKind::Env(vec![("GOPATH".into(), "\\go".into())])
        );
        assert_eq!(k[1], InstructionKind::Workdir("C:\\dir\\".into()));
        assert_eq!(k[2], InstructionKind::Run(Command::Shell("dir".into())));
    }

    #[test]
    fn instruction_names_are_case_insensitive() {
        let k = kinds("run echo\nCoPy a b\nworkdir /x\n");
        assert_eq!(k.len(), 3);
        let i = instrs("run echo hi\n");
        assert_eq!(i[0].original, "RUN echo hi");
    }

    #[test]
    fn crlf_and_bom_are_handled() {
        let d = ok("\u{feff}# escape=`\r\nFROM a\r\nRUN echo `\r\n  hi\r\nCMD [\"x\"]\r\n");
        assert_eq!(d.escape, '`');
        let k: Vec<_> = d.stages[0]
            .instructions
            .iter()
            .map(|i| i.kind.clone())
            .collect();
        assert_eq!(
            k[0],
            InstructionKind::Run(Command::Shell("echo   hi".into()))
        );
        assert_eq!(k[1], InstructionKind::Cmd(Command::Exec(s(&["x"]))));
    }

    // ----- continuations and comments ----------------------------------

    #[test]
    fn continuation_skips_comments_and_blank_lines() {
        let i = instrs(
            "RUN apt-get update \\\n# a comment\n\n    # indented comment\n  && apt-get install -y x \\\n\n  && echo done\nCMD x\n",
        );
        assert_eq!(i.len(), 2);
        assert_eq!(i[0].line, 2);
        assert_eq!(
            i[0].kind,
            InstructionKind::Run(Command::Shell(
                "apt-get update   && apt-get install -y x   && echo done".into()
            ))
        );
        assert_eq!(
            i[0].original,
            "RUN apt-get update   && apt-get install -y x   && echo done"
        );
        assert_eq!(i[1].line, 9);
    }

    #[test]
    fn continuation_with_trailing_whitespace_after_escape() {
        let k = one("RUN echo hello \\  \t\nworld\n");
        assert_eq!(
            k,
            InstructionKind::Run(Command::Shell("echo hello world".into()))
        );
    }

    #[test]
    fn continuation_at_eof_is_fine() {
        let k = one("RUN something \\");
        assert_eq!(k, InstructionKind::Run(Command::Shell("something".into())));
        let k = one("RUN something \\\n\n# trailing comment\n");
        assert_eq!(k, InstructionKind::Run(Command::Shell("something".into())));
    }

    #[test]
    fn escaped_escape_at_end_is_not_a_continuation() {
        let k = kinds("ENV C trailing\\\\\nENV D next\n");
        assert_eq!(
            k[0],
            InstructionKind::Env(vec![("C".into(), "trailing\\\\".into())])
        );
        assert_eq!(
            k[1],
            InstructionKind::Env(vec![("D".into(), "next".into())])
        );
    }

    #[test]
    fn lone_escape_lines_inside_continuation() {
        let k = one("RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n");
        assert_eq!(
            k,
            InstructionKind::Run(Command::Shell("echo hi   world  goodnight".into()))
        );
    }

    #[test]
    fn comment_lines_are_dropped_and_hash_inside_args_kept() {
        let k = kinds("# comment\n   # indented\nRUN echo # not a comment\n");
        assert_eq!(
            k,
            vec![InstructionKind::Run(Command::Shell(
                "echo # not a comment".into()
            ))]
        );
    }

    // ----- ENV / LABEL / ARG --------------------------------------------

    #[test]
    fn env_legacy_form_keeps_rest_of_line() {
        assert_eq!(
            one("ENV PATH /usr/local/bin:$PATH  and more"),
            InstructionKind::Env(vec![(
                "PATH".into(),
                "/usr/local/bin:$PATH  and more".into()
            )])
        );
        assert_eq!(
            one("ENV\tA\t\"quoted value\""),
            InstructionKind::Env(vec![("A".into(), "\"quoted value\"".into())])
        );
    }

    #[test]
    fn env_key_value_form_keeps_quotes_raw() {
        assert_eq!(
            one("ENV k1=v1 k2=\"v 2\" k3=v\\ 3 k4='a b' k5="),
            InstructionKind::Env(vec![
                ("k1".into(), "v1".into()),
                ("k2".into(), "\"v 2\"".into()),
                ("k3".into(), "v\\ 3".into()),
                ("k4".into(), "'a b'".into()),
                ("k5".into(), "".into()),
            ])
        );
    }

    #[test]
    fn env_quotes_and_escapes_inside_values() {
        assert_eq!(
            one("ENV name=\"a\\\"b\" other='a\\'b''"),
            InstructionKind::Env(vec![
                ("name".into(), "\"a\\\"b\"".into()),
                ("other".into(), "'a\\'b''".into()),
            ])
        );
        // Expansion later removes the quotes.
        assert_eq!(x("\"a\\\"b\"", &[]).as_deref(), Ok("a\"b"));
    }

    #[test]
    fn env_multiline_with_continuations() {
        assert_eq!(
            one("ENV a=1 \\\n    b=\"two \\\n       lines\" \\\n    c=3\n"),
            InstructionKind::Env(vec![
                ("a".into(), "1".into()),
                ("b".into(), "\"two        lines\"".into()),
                ("c".into(), "3".into()),
            ])
        );
    }

    #[test]
    fn label_both_forms() {
        assert_eq!(
            one("LABEL a=b \"com.example.x\"=\"y z\""),
            InstructionKind::Label(vec![
                ("a".into(), "b".into()),
                ("\"com.example.x\"".into(), "\"y z\"".into()),
            ])
        );
        assert_eq!(
            one("LABEL maintainer Jane Doe <jane@example.com>"),
            InstructionKind::Label(vec![(
                "maintainer".into(),
                "Jane Doe <jane@example.com>".into()
            )])
        );
    }

    #[test]
    fn arg_forms() {
        let i = instrs("\nARG a\nARG b=c d=\"e f\" g\n");
        assert_eq!(
            i[0].kind,
            InstructionKind::Arg(vec![ArgDecl {
                name: "a".into(),
                default: None,
                line: 3
            }])
        );
        assert_eq!(
            i[1].kind,
            InstructionKind::Arg(vec![
                ArgDecl {
                    name: "b".into(),
                    default: Some("c".into()),
                    line: 4
                },
                ArgDecl {
                    name: "d".into(),
                    default: Some("\"e f\"".into()),
                    line: 4
                },
                ArgDecl {
                    name: "g".into(),
                    default: None,
                    line: 4
                },
            ])
        );
    }

    // ----- COPY / ADD ---------------------------------------------------

    #[test]
    fn copy_plain_and_original() {
        let i = instrs("COPY app /app\n");
        assert_eq!(i[0].original, "COPY app /app");
        let c = copy_args(i[0].kind.clone());
        assert_eq!(c.sources, s(&["app"]));
        assert_eq!(c.dest, "/app");
        assert_eq!(
            (c.from, c.chown, c.chmod, c.link),
            (None, None, None, false)
        );
    }

    #[test]
    fn copy_flags() {
        let c = copy_args(one(
            "COPY --from=builder --chown=1000:1000 --chmod=0755 --link a b /dst/",
        ));
        assert_eq!(c.sources, s(&["a", "b"]));
        assert_eq!(c.dest, "/dst/");
        assert_eq!(c.from.as_deref(), Some("builder"));
        assert_eq!(c.chown.as_deref(), Some("1000:1000"));
        assert_eq!(c.chmod.as_deref(), Some("0755"));
        assert!(c.link);
        let c = copy_args(one("COPY --link=false --chown=\"app user\" a b"));
        assert!(!c.link);
        assert_eq!(c.chown.as_deref(), Some("app user"));
        assert_eq!(
            instrs("COPY --link=true a b")[0].original,
            "COPY --link=true a b"
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        let c = copy_args(one("COPY -- --weird-name /dst"));
        assert_eq!(c.sources, s(&["--weird-name"]));
        assert_eq!(c.dest, "/dst");
    }

    #[test]
    fn copy_and_add_json_form() {
        let c = copy_args(one("COPY [\"test file\", \"/tmp/dir with space/\"]"));
        assert_eq!(c.sources, s(&["test file"]));
        assert_eq!(c.dest, "/tmp/dir with space/");
        let k = one("ADD --chown=a [ \"x\", \"y\", \"/z\" ]");
        match k {
            InstructionKind::Add(c) => {
                assert_eq!(c.sources, s(&["x", "y"]));
                assert_eq!(c.chown.as_deref(), Some("a"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn add_with_url_and_link() {
        let c = copy_args(one("ADD --link https://example.com/a.tgz?x=1&y=2 /tmp/"));
        assert_eq!(c.sources, s(&["https://example.com/a.tgz?x=1&y=2"]));
        assert!(c.link);
    }

    // ----- heredocs -----------------------------------------------------

    #[test]
    fn copy_heredoc() {
        let i = instrs("COPY <<EOF /etc/app.conf\nkey = $VALUE\nsecond line\nEOF\nRUN next\n");
        assert_eq!(i.len(), 2);
        let c = copy_args(i[0].kind.clone());
        assert_eq!(c.sources, s(&["EOF"]));
        assert_eq!(c.dest, "/etc/app.conf");
        let expected = Heredoc {
            name: "EOF".into(),
            content: "key = $VALUE\nsecond line\n".into(),
            expand: true,
            chomp_tabs: false,
        };
        assert_eq!(c.heredocs, vec![expected.clone()]);
        assert_eq!(i[0].heredocs, vec![expected]);
        assert_eq!(i[0].original, "COPY <<EOF /etc/app.conf");
        assert_eq!(i[1].line, 6);
    }

    #[test]
    fn run_heredoc_quoted_and_chomped() {
        let i = instrs("RUN <<-\"SCRIPT\" bash\n\t\techo $HOME\n\tdone\n\tSCRIPT\nUSER x\n");
        assert_eq!(
            i[0].kind,
            InstructionKind::Run(Command::Shell("<<-\"SCRIPT\" bash".into()))
        );
        assert_eq!(
            i[0].heredocs,
            vec![Heredoc {
                name: "SCRIPT".into(),
                content: "echo $HOME\ndone\n".into(),
                expand: false,
                chomp_tabs: true,
            }]
        );
        assert_eq!(i[1].kind, InstructionKind::User("x".into()));
        let i = instrs("RUN cat <<'EOF' > /f\n  keep indent\nEOF\n");
        assert_eq!(i[0].heredocs[0].content, "  keep indent\n");
        assert!(!i[0].heredocs[0].expand);
        assert!(!i[0].heredocs[0].chomp_tabs);
    }

    #[test]
    fn several_heredocs_in_one_instruction() {
        let i = instrs("COPY <<A <<B /dst/\na-content\nA\nb1\nb2\nB\nCMD [\"x\"]\n");
        let c = copy_args(i[0].kind.clone());
        assert_eq!(c.sources, s(&["A", "B"]));
        assert_eq!(c.heredocs.len(), 2);
        assert_eq!(c.heredocs[0].content, "a-content\n");
        assert_eq!(c.heredocs[1].content, "b1\nb2\n");
        assert_eq!(i[1].line, 8);
    }

    #[test]
    fn heredoc_markers_elsewhere_are_not_heredocs() {
        let i = instrs(
            "RUN echo \"<<EOF\" a<<b 'x<<y'\nRUN [\"sh\", \"-c\", \"cat <<EOF\"]\nENV X <<EOF\n",
        );
        assert_eq!(i.len(), 3);
        assert!(i.iter().all(|i| i.heredocs.is_empty()));
    }

    #[test]
    fn empty_heredoc() {
        let i = instrs("COPY <<EOF /empty\nEOF\n");
        assert_eq!(copy_args(i[0].kind.clone()).heredocs[0].content, "");
    }

    // ----- commands -----------------------------------------------------

    #[test]
    fn exec_and_shell_forms() {
        assert_eq!(
            one("CMD [\"a\",\"b\"]"),
            InstructionKind::Cmd(Command::Exec(s(&["a", "b"])))
        );
        assert_eq!(
            one("CMD\t[\t\"a\",\t\"b\"\t]\t"),
            InstructionKind::Cmd(Command::Exec(s(&["a", "b"])))
        );
        assert_eq!(one("CMD []"), InstructionKind::Cmd(Command::Exec(vec![])));
        assert_eq!(
            one("ENTRYPOINT [\"/bin/app\", \"--flag\"]"),
            InstructionKind::Entrypoint(Command::Exec(s(&["/bin/app", "--flag"])))
        );
        assert_eq!(
            one("ENTRYPOINT exec app"),
            InstructionKind::Entrypoint(Command::Shell("exec app".into()))
        );
        assert_eq!(
            one("RUN [\"ls\", \"-la\"]"),
            InstructionKind::Run(Command::Exec(s(&["ls", "-la"])))
        );
        assert_eq!(
            one("RUN echo 'a b' | wc -c"),
            InstructionKind::Run(Command::Shell("echo 'a b' | wc -c".into()))
        );
    }

    #[test]
    fn invalid_json_falls_back_to_shell_form() {
        for text in [
            "['single', 'quotes']",
            "[\"unterminated\"",
            "[\"no end quote]",
            "[\"a\",]",
            "[\"a\"] trailing",
            "'[\"in\", \"string\"]'",
        ] {
            assert_eq!(
                one(&format!("CMD {text}")),
                InstructionKind::Cmd(Command::Shell(text.into())),
                "{text}"
            );
        }
    }

    #[test]
    fn json_string_escapes() {
        assert_eq!(
            one(
                r#"CMD ["\" \\ \/ \b \f \n \r \t \u0000", "\u00e9\u2603", "\ud83d\ude00", "\ud800x"]"#
            ),
            InstructionKind::Cmd(Command::Exec(s(&[
                "\" \\ / \u{8} \u{c} \n \r \t \u{0}",
                "é☃",
                "😀",
                "\u{FFFD}x",
            ])))
        );
    }

    #[test]
    fn shell_instruction() {
        assert_eq!(
            one("SHELL [\"powershell\", \"-command\"]"),
            InstructionKind::Shell(s(&["powershell", "-command"]))
        );
    }

    // ----- simple instructions ------------------------------------------

    #[test]
    fn expose_volume_user_workdir_stopsignal_maintainer() {
        assert_eq!(
            one("EXPOSE 80 443/tcp\t53/udp"),
            InstructionKind::Expose(s(&["80", "443/tcp", "53/udp"]))
        );
        assert_eq!(
            one("VOLUME /a /b"),
            InstructionKind::Volume(s(&["/a", "/b"]))
        );
        assert_eq!(
            one("VOLUME [\"/a b\", \" /c \"]"),
            InstructionKind::Volume(s(&["/a b", "/c"]))
        );
        assert_eq!(one("USER app:app"), InstructionKind::User("app:app".into()));
        assert_eq!(
            one("WORKDIR /path with spaces/$X"),
            InstructionKind::Workdir("/path with spaces/$X".into())
        );
        assert_eq!(
            one("STOPSIGNAL SIGTERM"),
            InstructionKind::StopSignal("SIGTERM".into())
        );
        assert_eq!(
            one("MAINTAINER Jane <j@example.com>"),
            InstructionKind::Maintainer("Jane <j@example.com>".into())
        );
    }

    #[test]
    fn healthcheck_forms() {
        let none = Healthcheck {
            test: s(&["NONE"]),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        };
        assert_eq!(
            one("HEALTHCHECK none"),
            InstructionKind::Healthcheck(none.clone())
        );
        assert_eq!(
            one(
                "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=0s --start-interval=2.5s --retries=3 \\\n  CMD curl -f http://localhost/ || exit 1"
            ),
            InstructionKind::Healthcheck(Healthcheck {
                test: s(&["CMD-SHELL", "curl -f http://localhost/ || exit 1"]),
                interval: Some(Duration::from_secs(90)),
                timeout: Some(Duration::from_millis(500)),
                start_period: Some(Duration::ZERO),
                start_interval: Some(Duration::from_millis(2500)),
                retries: Some(3),
            })
        );
        assert_eq!(
            one("HEALTHCHECK cmd [\"/bin/check\", \"-q\"]"),
            InstructionKind::Healthcheck(Healthcheck {
                test: s(&["CMD", "/bin/check", "-q"]),
                ..none
            })
        );
    }

    #[test]
    fn onbuild_trigger() {
        assert_eq!(
            one("ONBUILD RUN [\"echo\", \"x\"]"),
            InstructionKind::Onbuild("RUN [\"echo\", \"x\"]".into())
        );
        assert_eq!(
            one("onbuild copy . /app"),
            InstructionKind::Onbuild("copy . /app".into())
        );
        assert_eq!(
            instrs("ONBUILD copy . /app")[0].original,
            "ONBUILD copy . /app"
        );
    }

    #[test]
    fn go_durations() {
        let d = |t: &str| parse_go_duration(t);
        assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(d("1h2m3s4ms5us6ns"), Ok(Duration::new(3723, 4_005_006)));
        assert_eq!(d("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(d(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(d("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(d("0"), Ok(Duration::ZERO));
        assert_eq!(d("+2s"), Ok(Duration::from_secs(2)));
        assert!(d("").is_err());
        assert!(d("s").is_err());
        assert!(d("10").is_err());
        assert!(d("10x").is_err());
        assert!(d("-1s").is_err());
        assert!(d("1..5s").is_err());
        assert!(d("99999999999999999999999h").is_err());
        assert!(d("3000000h").is_err());
    }

    // ----- malformed Dockerfiles: line numbers and messages -------------

    #[test]
    fn error_display_format() {
        let e = match parse("FROM a\nRUN x\n\n\n\n\nCOPY onlyone\n", "Dockerfile") {
            Err(e) => e,
            Ok(d) => panic!("{d:?}"),
        };
        assert_eq!(
            e.to_string(),
            "Dockerfile:7: COPY requires at least two arguments, got 1"
        );
        assert_eq!(e.file, "Dockerfile");
    }

    #[test]
    fn malformed_unknown_instruction() {
        assert_err("FROM a\n\nCOPPY a b\n", 3, "unknown instruction: COPPY");
        assert_err(
            "FROM a\nRUN x \\\n  y\nfrobnicate\n",
            4,
            "unknown instruction: FROBNICATE",
        );
    }

    #[test]
    fn malformed_unknown_flags() {
        assert_err(
            "FROM a\nCOPY --frm=x a b\n",
            2,
            "unknown flag for COPY: --frm",
        );
        assert_err(
            "FROM a\nADD --from=x a b\n",
            2,
            "unknown flag for ADD: --from",
        );
        assert_err("FROM --plat=x a\n", 1, "unknown flag for FROM: --plat");
        assert_err(
            "FROM a\nRUN --mount=type=cache,target=/x make\n",
            2,
            "unknown flag for RUN: --mount",
        );
        assert_err(
            "FROM a\nCMD --doit [\"a\"]\n",
            2,
            "unknown flag for CMD: --doit",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --every=5s CMD x\n",
            2,
            "unknown flag for HEALTHCHECK: --every",
        );
    }

    #[test]
    fn errors_do_not_echo_what_is_not_a_dockerfile() {
        // /proc/self/environ, /etc/passwd, a token: no keyword, so nothing echoed.
        for secret in [
            "PATH=/usr/bin\0DOCKLESS_WEBHOOK_SECRET=hunter2\0",
            "root:x:0:0:root:/root:/bin/bash\n",
            "ghp_0123456789abcdef\n",
        ] {
            let (line, m) = err(secret);
            assert_eq!(line, 1);
            assert_eq!(
                m,
                "unknown instruction: the line does not start with a Dockerfile keyword"
            );
        }
        assert_err(
            &format!("{}\n", "A".repeat(100)),
            1,
            &format!("unknown instruction: {}…", "A".repeat(20)),
        );
        assert_err(
            "FROM a\nONBUILD x=1\n",
            2,
            "unknown instruction in ONBUILD trigger: the line does not start with a Dockerfile keyword",
        );
        // Other quoted values are cut at 40 characters.
        let long = "x".repeat(1000);
        let (_, m) = err(&format!("FROM a\nCOPY --{long} a b\n"));
        assert_eq!(m, format!("unknown flag for COPY: --{}…", "x".repeat(40)));
        let (_, m) = err(&format!("FROM a\nHEALTHCHECK --interval={long} CMD x\n"));
        assert!(m.len() < 120, "{m}");
        let (_, m) = err(&format!("FROM a AS 9{long}\n"));
        assert!(m.len() < 200, "{m}");
    }

    #[test]
    fn malformed_flag_values() {
        assert_err(
            "FROM a\nCOPY --from a b\n",
            2,
            "COPY flag --from requires a value (--from=...)",
        );
        assert_err(
            "FROM a\nCOPY --from= a b\n",
            2,
            "COPY flag --from requires a value (--from=...)",
        );
        assert_err(
            "FROM a\nCOPY --link=maybe a b\n",
            2,
            "COPY flag --link expects true or false, got \"maybe\"",
        );
        assert_err(
            "FROM a\nCOPY --from=x --from=y a b\n",
            2,
            "duplicate flag for COPY: --from",
        );
        assert_err(
            "FROM --platform a\n",
            1,
            "FROM flag --platform requires a value (--platform=...)",
        );
        assert_err(
            "FROM a\nADD --checksum=sha256:abc https://x/y /y\n",
            2,
            "ADD --checksum is not supported",
        );
    }

    #[test]
    fn malformed_before_from() {
        assert_err(
            "CMD [\"a\"]\nFROM a\n",
            1,
            "CMD cannot be used before the first FROM (only ARG can)",
        );
        assert_err(
            "ARG X\n\nRUN echo\n",
            3,
            "RUN cannot be used before the first FROM (only ARG can)",
        );
    }

    #[test]
    fn malformed_no_stages() {
        assert_err(
            "",
            1,
            "no FROM instruction: a Dockerfile needs at least one build stage",
        );
        assert_err(
            "# only\n# comments\n",
            1,
            "no FROM instruction: a Dockerfile needs at least one build stage",
        );
        assert_err_contains("ARG A=1\nARG B\n", 3, "no FROM instruction");
    }

    #[test]
    fn malformed_directives() {
        assert_err(
            "# escape=`\n# escape=\\\nFROM a\n",
            2,
            "only one escape parser directive can be used",
        );
        assert_err(
            "# syntax=a\n# SYNTAX=b\nFROM a\n",
            2,
            "only one syntax parser directive can be used",
        );
        assert_err(
            "# escape=x\nFROM a\n",
            1,
            "invalid escape token \"x\": must be \\ or `",
        );
    }

    #[test]
    fn malformed_copy_arity() {
        assert_err(
            "FROM a\nRUN x\n\n\n\n\nCOPY onlyone\n",
            7,
            "COPY requires at least two arguments, got 1",
        );
        assert_err(
            "FROM a\nADD\n",
            2,
            "ADD requires at least two arguments, got 0",
        );
        assert_err(
            "FROM a\nCOPY [\"one\"]\n",
            2,
            "COPY requires at least two arguments, got 1",
        );
        assert_err(
            "FROM a\nCOPY [\"a\", 1]\n",
            2,
            "COPY: a JSON array argument must contain only strings",
        );
        assert_err(
            "FROM a\nCOPY <<EOF\nx\nEOF\n",
            2,
            "COPY requires at least two arguments, got 1",
        );
    }

    #[test]
    fn malformed_env_label_arg() {
        assert_err(
            "FROM busybox\n\nENV PATH\n",
            3,
            "ENV PATH has no value: use ENV PATH=value or ENV PATH value",
        );
        assert_err("FROM a\nENV\n", 2, "ENV requires at least one argument");
        assert_err(
            "FROM a\nENV =x\n",
            2,
            "ENV names can not be empty in \"=x\"",
        );
        assert_err(
            "FROM a\nLABEL a=b c\n",
            2,
            "LABEL: can't find = in \"c\"; each argument must be of the form name=value",
        );
        assert_err(
            "FROM a\nLABEL lonely\n",
            2,
            "LABEL lonely has no value: use LABEL lonely=value or LABEL lonely value",
        );
        assert_err("FROM a\nARG\n", 2, "ARG requires at least one argument");
        assert_err("FROM a\nARG =x\n", 2, "ARG name can not be empty in \"=x\"");
    }

    #[test]
    fn malformed_from() {
        assert_err("FROM\n", 1, "FROM requires an image name");
        assert_err(
            "FROM a b\n",
            1,
            "FROM requires either one argument (image) or three (image AS name), got 2",
        );
        assert_err(
            "FROM a AS b c\n",
            1,
            "FROM requires either one argument (image) or three (image AS name), got 4",
        );
        assert_err(
            "FROM a IS b\n",
            1,
            "FROM expects AS before the stage name, got \"IS\"",
        );
        assert_err_contains("FROM a AS 1st\n", 1, "invalid stage name \"1st\"");
        assert_err_contains("FROM a AS my/stage\n", 1, "invalid stage name \"my/stage\"");
        assert_err(
            "FROM a AS b\nFROM c AS B\n",
            2,
            "duplicate stage name \"b\", first defined on line 1",
        );
    }

    #[test]
    fn malformed_commands() {
        assert_err(
            "FROM a\nCMD [ \"echo\", [ \"nested json\" ] ]\n",
            2,
            "CMD: a JSON array argument must contain only strings",
        );
        assert_err("FROM a\nRUN\n", 2, "RUN requires a command");
        assert_err("FROM a\nENTRYPOINT\n", 2, "ENTRYPOINT requires a command");
        assert_err(
            "FROM a\nSHELL /bin/sh -c\n",
            2,
            "SHELL requires the arguments to be in JSON form, e.g. SHELL [\"/bin/sh\", \"-c\"]",
        );
        assert_err(
            "FROM a\nSHELL []\n",
            2,
            "SHELL requires at least one argument",
        );
        assert_err(
            "FROM a\nSHELL [\"sh\", null]\n",
            2,
            "SHELL: a JSON array argument must contain only strings",
        );
    }

    #[test]
    fn malformed_simple_instructions() {
        assert_err(
            "FROM a\nEXPOSE\n",
            2,
            "EXPOSE requires at least one argument",
        );
        assert_err(
            "FROM a\nUSER a b\n",
            2,
            "USER requires exactly one argument, got 2",
        );
        assert_err(
            "FROM a\nUSER\n",
            2,
            "USER requires exactly one argument, got 0",
        );
        assert_err(
            "FROM a\nSTOPSIGNAL\n",
            2,
            "STOPSIGNAL requires exactly one argument, got 0",
        );
        assert_err(
            "FROM a\nWORKDIR\n",
            2,
            "WORKDIR requires exactly one argument",
        );
        assert_err(
            "FROM a\nVOLUME\n",
            2,
            "VOLUME requires at least one argument",
        );
        assert_err(
            "FROM a\nVOLUME [\"/a\", \"  \"]\n",
            2,
            "VOLUME paths can not be empty strings",
        );
        assert_err("FROM a\nMAINTAINER\n", 2, "MAINTAINER requires an argument");
        assert_err("FROM a\nENV --x=1 A=b\n", 2, "unknown flag for ENV: --x");
    }

    #[test]
    fn malformed_healthcheck() {
        assert_err(
            "FROM a\nHEALTHCHECK\n",
            2,
            "HEALTHCHECK requires NONE or CMD followed by a command",
        );
        assert_err(
            "FROM a\nHEALTHCHECK CMD\n",
            2,
            "missing command after HEALTHCHECK CMD",
        );
        assert_err(
            "FROM a\nHEALTHCHECK CMD []\n",
            2,
            "missing command after HEALTHCHECK CMD",
        );
        assert_err(
            "FROM a\nHEALTHCHECK NONE x\n",
            2,
            "HEALTHCHECK NONE takes no arguments",
        );
        assert_err(
            "FROM a\nHEALTHCHECK CONNECT TCP 7000\n",
            2,
            "unknown type \"CONNECT\" in HEALTHCHECK (expected CMD or NONE)",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --interval=10x CMD x\n",
            2,
            "HEALTHCHECK --interval: unknown unit \"x\" in duration \"10x\"",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --timeout=10 CMD x\n",
            2,
            "HEALTHCHECK --timeout: missing unit in duration \"10\" (use e.g. 30s, 1m30s, 500ms)",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --interval=500us CMD x\n",
            2,
            "HEALTHCHECK --interval cannot be less than 1ms, got \"500us\"",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --start-period=-5s CMD x\n",
            2,
            "HEALTHCHECK --start-period: duration \"-5s\" cannot be negative",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --retries=-1 CMD x\n",
            2,
            "HEALTHCHECK --retries cannot be negative, got -1",
        );
        assert_err(
            "FROM a\nHEALTHCHECK --retries=abc CMD x\n",
            2,
            "HEALTHCHECK --retries expects a whole number, got \"abc\"",
        );
    }

    #[test]
    fn malformed_onbuild() {
        assert_err(
            "FROM a\nONBUILD\n",
            2,
            "ONBUILD requires a trigger instruction",
        );
        assert_err(
            "FROM a\nONBUILD ONBUILD RUN x\n",
            2,
            "chaining ONBUILD via ONBUILD ONBUILD is not allowed",
        );
        assert_err(
            "FROM a\nONBUILD from b\n",
            2,
            "FROM is not allowed as an ONBUILD trigger",
        );
        assert_err(
            "FROM a\nONBUILD MAINTAINER me\n",
            2,
            "MAINTAINER is not allowed as an ONBUILD trigger",
        );
        assert_err(
            "FROM a\nONBUILD RUUN x\n",
            2,
            "unknown instruction in ONBUILD trigger: RUUN",
        );
        assert_err(
            "FROM a\nONBUILD COPY a\n",
            2,
            "invalid ONBUILD trigger: COPY requires at least two arguments, got 1",
        );
    }

    #[test]
    fn malformed_heredoc() {
        assert_err(
            "FROM a\nRUN true\nCOPY <<EOF /x\nline\nEOFX\n",
            3,
            "unterminated heredoc <<EOF: no line equal to \"EOF\" before end of file",
        );
        // The second heredoc is the one left open; the error names the instruction's line.
        assert_err_contains(
            "FROM a\n\nRUN <<A <<B\na\nA\nb\n",
            3,
            "unterminated heredoc <<B",
        );
    }

    #[test]
    fn error_lines_after_multiline_instructions() {
        assert_err(
            "FROM a\nRUN a \\\n  b \\\n  # c\n\n  d\nCOPY x\n",
            7,
            "COPY requires at least two arguments, got 1",
        );
        assert_err(
            "FROM a\nCOPY <<EOF /x\n1\n2\nEOF\nBAD\n",
            6,
            "unknown instruction: BAD",
        );
        // A blank line does not end a continuation, so COPY joins the RUN.
        assert_eq!(
            one("RUN x \\\n\nCOPY\n"),
            InstructionKind::Run(Command::Shell("x COPY".into()))
        );
    }

    // ----- expansion ----------------------------------------------------

    #[test]
    fn expand_basic_forms() {
        let vars = [("A", "apple"), ("E", ""), ("S", "a b")];
        assert_eq!(x("$A", &vars).as_deref(), Ok("apple"));
        assert_eq!(x("${A}pie", &vars).as_deref(), Ok("applepie"));
        assert_eq!(x("$A-$B.", &vars).as_deref(), Ok("apple-."));
        assert_eq!(x("${B:-def}", &vars).as_deref(), Ok("def"));
        assert_eq!(x("${E:-def}", &vars).as_deref(), Ok("def"));
        assert_eq!(x("${E-def}", &vars).as_deref(), Ok(""));
        assert_eq!(x("${B-def}", &vars).as_deref(), Ok("def"));
        assert_eq!(x("${A:+alt}", &vars).as_deref(), Ok("alt"));
        assert_eq!(x("${E:+alt}", &vars).as_deref(), Ok(""));
        assert_eq!(x("${E+alt}", &vars).as_deref(), Ok("alt"));
        assert_eq!(x("${B+alt}", &vars).as_deref(), Ok(""));
        assert_eq!(x("${A:?oops}", &vars).as_deref(), Ok("apple"));
        assert_eq!(x("${E?oops}", &vars).as_deref(), Ok(""));
        assert_eq!(x("${B:-${A}-x}", &vars).as_deref(), Ok("apple-x"));
        assert_eq!(x("${B:-\"q }\"}", &vars).as_deref(), Ok("q }"));
    }

    #[test]
    fn expand_quotes_and_escapes() {
        let vars = [("A", "apple")];
        assert_eq!(x("'$A'", &vars).as_deref(), Ok("$A"));
        assert_eq!(x("\"$A\"", &vars).as_deref(), Ok("apple"));
        assert_eq!(
            x("\"a\\$A\\\"\\\\\\n\"", &vars).as_deref(),
            Ok("a$A\"\\\\n")
        );
        assert_eq!(x("\\$A", &vars).as_deref(), Ok("$A"));
        assert_eq!(x("a\\ b\\x", &vars).as_deref(), Ok("a bx"));
        assert_eq!(x("trailing\\", &vars).as_deref(), Ok("trailing"));
        assert_eq!(
            x("it's", &vars),
            Err("unexpected end of input: missing closing single quote".into())
        );
        assert_eq!(x("'a'\"b\"c", &vars).as_deref(), Ok("abc"));
        assert_eq!(x("cost: $ 5 $", &vars).as_deref(), Ok("cost: $ 5 $"));
        assert_eq!(x("$-x$/", &vars).as_deref(), Ok("$-x$/"));
    }

    #[test]
    fn expand_with_backtick_escape() {
        let look = env(&[("A", "apple")]);
        assert_eq!(
            expand_word("C:\\dir\\$A", '`', &look).as_deref(),
            Ok("C:\\dir\\apple")
        );
        assert_eq!(expand_word("`$A", '`', &look).as_deref(), Ok("$A"));
        assert_eq!(
            expand_word("\"`\"`$ \\\"", '`', &look).as_deref(),
            Ok("\"$ \\")
        );
    }

    #[test]
    fn expand_errors() {
        assert_eq!(x("${A", &[]), Err("missing '}' in substitution ${A".into()));
        assert_eq!(
            x("${A:-x", &[]),
            Err("missing '}' in variable substitution".into())
        );
        assert_eq!(
            x("${}", &[]),
            Err("bad substitution: missing variable name after ${".into())
        );
        assert_eq!(
            x("${A#x}", &[]),
            Err("unsupported modifier \"#\" in substitution ${A...}".into())
        );
        assert_eq!(
            x("${A:=x}", &[]),
            Err("unsupported modifier \":=\" in substitution ${A...}".into())
        );
        assert_eq!(
            x("${A:?must be set}", &[("A", "")]),
            Err("A: must be set".into())
        );
        assert_eq!(x("${A?}", &[]), Err("A: is not allowed to be unset".into()));
        assert_eq!(
            x("\"abc", &[]),
            Err("unexpected end of input: missing closing double quote".into())
        );
        let deep = format!("{}x{}", "${A:-".repeat(200), "}".repeat(200));
        assert_eq!(
            x(&deep, &[]),
            Err("variable substitution nested too deeply".into())
        );
    }

    #[test]
    fn expand_words_splits_on_unquoted_whitespace() {
        let look = env(&[("P", "80 443"), ("Q", "a b")]);
        assert_eq!(
            expand_words("80  $P\t\"x y\" 'z w'", '\\', &look),
            Ok(s(&["80", "80", "443", "x y", "z w"]))
        );
        assert_eq!(
            expand_words("\"$Q\" pre$Q", '\\', &look),
            Ok(s(&["a b", "prea", "b"]))
        );
        assert_eq!(expand_words("a\\ b  ", '\\', &look), Ok(s(&["a b"])));
        assert_eq!(expand_words("   ", '\\', &look), Ok(vec![]));
        assert_eq!(expand_words("$NOPE", '\\', &look), Ok(vec![]));
    }

    // ----- robustness ---------------------------------------------------

    /// Deterministic fuzzing: parse and expansion must return, never panic.
    #[test]
    fn fuzz_never_panics() {
        let fragments = [
            "FROM ",
            "RUN ",
            "COPY ",
            "ADD ",
            "ENV ",
            "LABEL ",
            "ARG ",
            "CMD ",
            "ONBUILD ",
            "HEALTHCHECK ",
            "SHELL ",
            "VOLUME ",
            "EXPOSE ",
            "USER ",
            "WORKDIR ",
            "AS ",
            "x",
            "--from=",
            "--link",
            "--interval=",
            "1m30s",
            "5",
            "ms",
            " ",
            "\t",
            "\n",
            "\r\n",
            "\\",
            "`",
            "#",
            "# escape=`\n",
            "# syntax=x\n",
            "[",
            "]",
            "\"",
            "'",
            ",",
            "{",
            "}",
            ":",
            "=",
            "$",
            "${",
            ":-",
            ":?",
            "+",
            "<<",
            "<<-",
            "EOF",
            "\nEOF\n",
            "\\u",
            "d83d",
            "é",
            "☃",
            "\u{feff}",
            "\0",
            "NONE",
            "CMD",
            "--",
            "-",
            ".",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let look = |name: &str| {
            if name.len().is_multiple_of(2) {
                Some(name.to_string())
            } else {
                None
            }
        };
        for _ in 0..4000 {
            let mut text = String::new();
            let n = (next() % 40) as usize;
            for _ in 0..n {
                let r = next();
                if r % 5 == 0 {
                    text.push(char::from_u32((r >> 8) as u32 % 0x800).unwrap_or('?'));
                } else {
                    text.push_str(fragments[(r >> 8) as usize % fragments.len()]);
                }
            }
            let _ = parse(&text, "fuzz");
            let _ = parse(&format!("FROM a\n{text}"), "fuzz");
            let _ = expand_word(&text, '\\', &look);
            let _ = expand_words(&text, '`', &look);
            let _ = parse_go_duration(&text);
        }
    }

    #[test]
    fn deeply_nested_json_is_not_a_crash() {
        let deep = format!(
            "FROM a\nCMD {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let k = &ok(&deep).stages[0].instructions[0].kind;
        assert!(matches!(k, InstructionKind::Cmd(Command::Shell(_))));
        let many = format!("FROM a\nRUN {}\n", "ONBUILD ".repeat(10_000));
        assert!(parse(&many, "x").is_ok());
        let many = format!("FROM a\nONBUILD {}RUN x\n", "ONBUILD ".repeat(10_000));
        assert!(parse(&many, "x").is_err());
    }
}
