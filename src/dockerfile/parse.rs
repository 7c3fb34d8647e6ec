//! Lines to instructions: parser directives, continuations, comments,
//! heredoc bodies and stages.

use super::instruction::{parse_from, parse_kind, unknown_instruction, KNOWN_INSTRUCTIONS};
use super::words::{extract_flags, parse_heredoc_word, split_keyword, split_words_raw};
use super::{Dockerfile, Heredoc, Instruction, InstructionKind, ParseError, Stage};
use crate::context::untrusted::excerpt;
use std::collections::HashMap;

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

/// The delimiter of a heredoc word (`<<EOF`, `<<-"EOF"`), or None when the
/// word is not one.
pub fn heredoc_name(word: &str) -> Option<String> {
    parse_heredoc_word(word).map(|h| h.name)
}
