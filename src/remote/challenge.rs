//! `WWW-Authenticate` challenges (RFC 7235) as registries send them.

use std::collections::HashMap;

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// A scheme we do not speak (e.g. Negotiate); kept so callers can say so.
    Other {
        scheme: String,
    },
}

/// Parse every challenge of one `WWW-Authenticate` header value.
///
/// Follows RFC 7235: `scheme param=value, param="quoted, \"value\"", scheme2 ...`.
/// A Bearer challenge without a realm is useless and is dropped.
///
/// Hand-written because the maintained RFC 7235 parser (`http-auth`'s
/// `ChallengeParser`) fails a whole challenge over a trailing space or an
/// unquoted URL realm, which registries send; this one keeps every challenge
/// it can use and skips what it cannot read (fuzzed: `fuzz/www_authenticate`).
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    let mut current: Option<(String, HashMap<String, String>)> = None;
    loop {
        p.skip_ws_and_commas();
        if p.at_end() {
            break;
        }
        let Some(tok) = p.token() else {
            // Unparseable byte: skip it rather than fail the whole header.
            p.i += 1;
            continue;
        };
        p.skip_ws();
        if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip_ws();
            let value = if p.peek() == Some(b'"') {
                p.quoted()
            } else {
                p.token().unwrap_or_default()
            };
            if let Some((_, params)) = current.as_mut() {
                params.insert(tok.to_ascii_lowercase(), value);
            }
        } else {
            // A bare token starts a new challenge (or is token68, ignored).
            if let Some(done) = current.take() {
                out.extend(build_challenge(done));
            }
            current = Some((tok, HashMap::new()));
        }
    }
    if let Some(done) = current.take() {
        out.extend(build_challenge(done));
    }
    out
}

fn build_challenge((scheme, mut params): (String, HashMap<String, String>)) -> Option<Challenge> {
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic {
            realm: params.remove("realm"),
        }),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => Some(Challenge::Other { scheme }),
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn token(&mut self) -> Option<String> {
        let start = self.i;
        // tchar set of RFC 7230 plus '/' so token68-ish values survive.
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn quoted(&mut self) -> String {
        // Caller saw the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    if let Some(n) = self.peek() {
                        out.push(n);
                        self.i += 1;
                    }
                }
                _ => out.push(c),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_quoted_commas() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push repository:c:pull""#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push repository:c:pull".into()),
            }]
        );
    }

    #[test]
    fn parses_basic_and_escapes_and_multiple() {
        let h = r#"Basic realm="a \"quoted\" realm", Bearer realm=https://x/t, Negotiate"#;
        assert_eq!(
            parse_www_authenticate(h),
            vec![
                Challenge::Basic {
                    realm: Some("a \"quoted\" realm".into())
                },
                Challenge::Bearer {
                    realm: "https://x/t".into(),
                    service: None,
                    scope: None
                },
                Challenge::Other {
                    scheme: "Negotiate".into()
                },
            ]
        );
    }

    #[test]
    fn bearer_without_realm_dropped_and_garbage_ok() {
        assert_eq!(parse_www_authenticate(r#"Bearer service="x""#), vec![]);
        assert_eq!(parse_www_authenticate(""), vec![]);
        let _ = parse_www_authenticate("\"\"\"==,,,\\");
        let _ = parse_www_authenticate("Bearer realm=\"unterminated");
    }
}
