//! The parser's tests, one file per part of the parser; the helpers here
//! parse a Dockerfile and pick out what a test looks at.

mod expand;
mod fuzz;
mod instruction;
mod json;
mod malformed;
mod parse;
mod run;

use super::instruction::parse_go_duration;
use super::*;
use std::collections::HashMap;

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
