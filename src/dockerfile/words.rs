//! Shell words as BuildKit splits them before expansion: the keyword,
//! leading `--flags`, raw words, heredoc markers.

use super::expand::expand_word;
use super::Heredoc;

pub(super) fn split_keyword(line: &str) -> (&str, &str) {
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
pub(super) fn extract_flags(line: &str, escape: char) -> (Vec<String>, &str) {
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
pub(super) fn split_words_raw(s: &str, escape: char) -> Vec<String> {
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
pub(super) fn parse_heredoc_word(word: &str) -> Option<Heredoc> {
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
