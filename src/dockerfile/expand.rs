//! Variable expansion.

use crate::context::untrusted::excerpt;

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
