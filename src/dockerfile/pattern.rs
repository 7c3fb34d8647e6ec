//! Shell patterns in `${V#pat}`, `${V%pat}` and `${V/pat/repl}`, turned
//! into regular expressions as BuildKit's `convertShellPatternToRegex`
//! (`frontend/dockerfile/shell/lex.go`) does: `*` and `?` are wildcards,
//! `\*`, `\?` and `\\` are literal, and there are no bracket expressions.
//! The `regex` crate matches as Go's RE2 does (leftmost-first, `.` not
//! matching a newline), so the results are the same.

use regex::{NoExpand, Regex};

fn to_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<Regex, String> {
    let invalid = |why: String| format!("invalid pattern ({pattern}) in substitution: {why}");
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str(if greedy { ".*" } else { ".*?" }),
            '?' => out.push('.'),
            '\\' => {
                // `\}` and `\/` escape the substitution's own syntax, not the pattern.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(n @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(n);
                    }
                    Some(n) => return Err(invalid(format!("invalid escape '\\{n}'"))),
                    None => return Err(invalid("invalid escape '\\'".to_string())),
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Regex::new(&out).map_err(|e| invalid(e.to_string()))
}

/// `${V#pattern}` (shortest) and `${V##pattern}` (longest).
pub(super) fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let re = to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// `${V%pattern}` and `${V%%pattern}`: a regular expression cannot find the
/// shortest rightmost match, so pattern and value are reversed and the
/// prefix rule applies.
pub(super) fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, String> {
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

/// Reverses a pattern but keeps each `\x` pair in order (`a\*c` → `c\*a`).
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut pieces = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            pieces.push(&chars[i..i + 2]);
            i += 2;
        } else {
            pieces.push(&chars[i..i + 1]);
            i += 1;
        }
    }
    pieces.iter().rev().flat_map(|p| p.iter()).collect()
}

/// `${V/pattern/repl}` replaces the first match literally; `${V//pattern/repl}`
/// replaces every match and, like Go's `ReplaceAllString`, expands `$1` in `repl`.
pub(super) fn replace(
    pattern: &str,
    value: &str,
    replacement: &str,
    all: bool,
) -> Result<String, String> {
    let re = to_regex(pattern, true, false)?;
    Ok(if all {
        re.replace_all(value, replacement).into_owned()
    } else {
        re.replace(value, NoExpand(replacement)).into_owned()
    })
}
