//! Variable expansion, as BuildKit's shell lexer does it
//! (`frontend/dockerfile/shell/lex.go`): quotes, escapes, `$NAME`, the
//! special parameters, and `${NAME...}` with `-`, `+`, `?` (each with or
//! without `:`), `#`, `##`, `%`, `%%`, `/` and `//`. The messages are
//! BuildKit's.

use super::pattern::{replace, trim_prefix, trim_suffix};

/// Bounds `${a:-${b:-...}}` nesting so hostile input cannot overflow the stack.
const MAX_EXPANSION_DEPTH: usize = 64;

/// Docker's shell-word processing for one word: removes quotes and escapes
/// and substitutes variables. Single quotes prevent substitution; unknown
/// variables expand to "".
pub fn expand_word(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    Lexer::new(word, escape, false, lookup)
        .process(None, 0)
        .map(|(s, _)| s)
}

/// Like [`expand_word`], but splits the result into words on unquoted
/// whitespace (including whitespace produced by unquoted substitutions).
pub fn expand_words(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    Lexer::new(word, escape, false, lookup)
        .process(None, 0)
        .map(|(_, w)| w.finish())
}

/// A heredoc body with an unquoted delimiter, expanded as BuildKit's
/// `SourcesAndDest.ExpandRaw` does (`instructions/commands.go`): once over
/// the whole body, with backslash as the escape character whatever the
/// `# escape=` directive says, and quotes as ordinary characters.
pub fn expand_heredoc(
    content: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    Lexer::new(content, '\\', true, lookup)
        .process(None, 0)
        .map(|(s, _)| s)
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
    /// Heredoc bodies: `'` and `"` are ordinary characters.
    skip_quotes: bool,
    /// Inside a `#`, `%` or `/` pattern the escape char is kept with the
    /// char it escapes, so the pattern still sees `\*`.
    raw_escapes: bool,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

/// Shell special parameters (`$@`, `$#`, ...); BuildKit reads them as names
/// that no variable has, so they expand to "".
fn is_special_param(c: char) -> bool {
    matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

fn unsupported(modifier: &str) -> String {
    format!("unsupported modifier ({modifier}) in substitution")
}

const MISSING_BRACE: &str = "syntax error: missing '}'";

impl<'a> Lexer<'a> {
    fn new(
        word: &str,
        escape: char,
        skip_quotes: bool,
        lookup: &'a dyn Fn(&str) -> Option<String>,
    ) -> Self {
        Lexer {
            chars: word.chars().collect(),
            pos: 0,
            escape,
            skip_quotes,
            raw_escapes: false,
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

    /// Processes until `stop` (consumed) or the end of input.
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
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                self.pos += 1;
                return Ok((out, words));
            }
            if c == '$' {
                let s = self.dollar(depth)?;
                // Unquoted substitution results are subject to word splitting.
                words.add_str(&s);
                out.push_str(&s);
            } else if c == '\'' && !self.skip_quotes {
                let s = self.single_quoted()?;
                words.add_raw_str(&s);
                out.push_str(&s);
            } else if c == '"' && !self.skip_quotes {
                let s = self.double_quoted(depth)?;
                words.add_raw_str(&s);
                out.push_str(&s);
            } else if c == self.escape {
                self.pos += 1;
                if self.raw_escapes {
                    words.add_raw_char(c);
                    out.push(c);
                }
                // A trailing escape is dropped, as BuildKit does.
                let Some(n) = self.bump() else { break };
                words.add_raw_char(n);
                out.push(n);
            } else {
                self.pos += 1;
                words.add_char(c);
                out.push(c);
            }
        }
        match stop {
            Some(s) => Err(format!(
                "unexpected end of statement while looking for matching {s}"
            )),
            None => Ok((out, words)),
        }
    }

    /// [`Self::process`] with `raw_escapes` set for the span of the call.
    fn process_raw(
        &mut self,
        stop: char,
        raw: bool,
        depth: usize,
    ) -> Result<(String, WordSplitter), String> {
        let saved = std::mem::replace(&mut self.raw_escapes, raw);
        let result = self.process(Some(stop), depth);
        self.raw_escapes = saved;
        result
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .to_string(),
                    );
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
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .to_string(),
                    );
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar(depth)?),
                Some(c) => {
                    self.pos += 1;
                    let mut ch = c;
                    if c == self.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        // Only these are escapable inside double quotes; any
                        // other escape char stays as it is.
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                ch = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// A variable name: digits only when it starts with one, a single
    /// special parameter, or letters, digits and `_`.
    fn name(&mut self) -> String {
        let mut name = String::new();
        match self.peek() {
            Some(c) if c.is_numeric() => {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
            }
            Some(c) if is_special_param(c) => {
                self.pos += 1;
                name.push(c);
            }
            _ => {
                while let Some(d) = self
                    .peek()
                    .filter(|d| d.is_alphabetic() || d.is_numeric() || *d == '_')
                {
                    name.push(d);
                    self.pos += 1;
                }
            }
        }
        name
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// Expands a `$` at the current position (BuildKit's `processDollar`).
    fn dollar(&mut self, depth: usize) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(self.var(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(MISSING_BRACE.to_string()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".to_string()),
            Some(_) => {}
        }
        let name = self.name();
        match self.bump() {
            // BuildKit names the end of input as an odd modifier; say what is missing.
            None => Err(MISSING_BRACE.to_string()),
            Some('}') => Ok(self.var(&name).unwrap_or_default()),
            Some(':') => {
                let modifier = self.bump();
                let shown = format!(":{}", modifier.map(String::from).unwrap_or_default());
                if matches!(modifier, Some('#' | '%')) {
                    return Err(unsupported(&shown));
                }
                let word = self.modifier_word(false, depth)?;
                apply_modifier(&name, modifier, &shown, self.var(&name), word, true)
            }
            Some(m @ ('+' | '-' | '?' | '#' | '%')) => {
                let word = self.modifier_word(matches!(m, '#' | '%'), depth)?;
                let value = self.var(&name);
                match m {
                    '#' | '%' => trim(m, word, value.unwrap_or_default()),
                    _ => apply_modifier(&name, Some(m), &m.to_string(), value, word, false),
                }
            }
            Some('/') => self.substitute(&name, depth),
            Some(m) => Err(unsupported(&m.to_string())),
        }
    }

    /// The word after a modifier, up to the closing `}`.
    fn modifier_word(&mut self, raw: bool, depth: usize) -> Result<String, String> {
        match self.process_raw('}', raw, depth + 1) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err(MISSING_BRACE.to_string()),
            Err(e) => Err(e),
        }
    }

    /// `${NAME/pattern/replacement}` and `${NAME//pattern/replacement}`.
    fn substitute(&mut self, name: &str, depth: usize) -> Result<String, String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.process_raw('/', true, depth + 1) {
            Ok((p, _)) => p,
            Err(_) if self.peek().is_none() => {
                return Err("syntax error: missing '/' in ${}".to_string())
            }
            Err(e) => return Err(e),
        };
        let replacement = match self.process_raw('}', true, depth + 1) {
            Ok((r, _)) => r,
            Err(_) if self.peek().is_none() => return Err(MISSING_BRACE.to_string()),
            Err(e) => return Err(e),
        };
        let value = self.var(name).unwrap_or_default();
        replace(&pattern, &value, &replacement, all)
    }
}

/// `-`, `+` and `?`; with a colon (`null_is_unset`) an empty value counts as unset.
fn apply_modifier(
    name: &str,
    modifier: Option<char>,
    shown: &str,
    value: Option<String>,
    word: String,
    null_is_unset: bool,
) -> Result<String, String> {
    let is_set = value
        .as_ref()
        .is_some_and(|v| !(null_is_unset && v.is_empty()));
    match modifier {
        Some('-') if is_set => Ok(value.unwrap_or_default()),
        Some('-') => Ok(word),
        Some('+') if is_set => Ok(word),
        Some('+') => Ok(String::new()),
        Some('?') if is_set => Ok(value.unwrap_or_default()),
        Some('?') => {
            let problem = match value {
                _ if !word.is_empty() => word,
                None => "is not allowed to be unset".to_string(),
                Some(_) => "is not allowed to be empty".to_string(),
            };
            Err(format!("{name}: {problem}"))
        }
        _ => Err(unsupported(shown)),
    }
}

/// `#`/`##` (prefix) and `%`/`%%` (suffix): a doubled modifier is greedy.
fn trim(modifier: char, word: String, value: String) -> Result<String, String> {
    let (greedy, pattern) = match word.strip_prefix(modifier) {
        Some(rest) => (true, rest),
        None => (false, word.as_str()),
    };
    if modifier == '%' {
        trim_suffix(pattern, &value, greedy)
    } else {
        trim_prefix(pattern, &value, greedy)
    }
}
