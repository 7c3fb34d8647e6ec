//! One instruction's arguments: flags, FROM, the per-keyword forms
//! (COPY/ADD, ENV/LABEL/ARG, commands, HEALTHCHECK, ONBUILD) and Go
//! durations.

use super::json::{parse_json_array, JsonArray};
use super::run::parse_run;
use super::words::{extract_flags, parse_heredoc_word, split_keyword, split_words_raw};
use super::{ArgDecl, Command, CopyArgs, From, Healthcheck, Heredoc, InstructionKind};
use crate::context::untrusted::{self, excerpt};
use std::collections::HashMap;
use std::time::Duration;

pub(super) const KNOWN_INSTRUCTIONS: &[&str] = &[
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

pub(super) fn parse_from(rest: &str, escape: char, line: usize) -> Result<From, String> {
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
pub(super) fn parse_kind(
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
            let checksum = string_flag(kw, &mut flags, "checksum")?;
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
                checksum,
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
            // BuildKit's `parseString`: the rest of the line is the one argument.
            if args.is_empty() {
                return Err(format!("{kw} requires exactly one argument"));
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
                return Err("VOLUME specified can not be an empty string".to_string());
            }
            Ok(InstructionKind::Volume(vols))
        }
        "ENTRYPOINT" | "CMD" | "RUN" => {
            if kw != "RUN" {
                reject_flags(kw, flag_words.clone())?;
            }
            let cmd = parse_command(kw, args)?;
            if matches!(&cmd, Command::Shell(s) if s.is_empty()) {
                return Err(format!("{kw} requires a command"));
            }
            Ok(match kw {
                "ENTRYPOINT" => InstructionKind::Entrypoint(cmd),
                "CMD" => InstructionKind::Cmd(cmd),
                _ => InstructionKind::Run(parse_run(flag_words, cmd)?),
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
pub(super) fn unknown_instruction(place: &str, keyword: &str) -> String {
    match untrusted::keyword(keyword) {
        Some(kw) => match crate::suggest::closest(&kw, KNOWN_INSTRUCTIONS) {
            Some(meant) => format!("unknown instruction{place}: {kw} (did you mean {meant}?)"),
            None => format!("unknown instruction{place}: {kw}"),
        },
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
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, String> {
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
