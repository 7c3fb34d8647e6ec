//! The exec form: a JSON array of strings, read with BuildKit's rules.

pub(super) enum JsonArray {
    NotJson,
    NotStrings,
    Strings(Vec<String>),
}

/// Deep enough for any real Dockerfile; bounds recursion on hostile input.
const MAX_JSON_DEPTH: usize = 128;

/// Parses text that should be a JSON array of strings. Distinguishes invalid
/// JSON (callers fall back to shell form) from valid JSON that holds
/// something other than strings (an error, as in BuildKit).
pub(super) fn parse_json_array(text: &str) -> JsonArray {
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
