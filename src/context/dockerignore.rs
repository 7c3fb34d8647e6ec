//! `.dockerignore` parsing and matching (moby/patternmatcher semantics).

use globset::{GlobBuilder, GlobMatcher};

use super::error::ContextError;
use super::untrusted;

/// The most of a `.dockerignore` that is read.
pub const IGNORE_MAX_BYTES: u64 = 1 << 20;

/// Patterns a `.dockerignore` may hold: each is a compiled glob tried
/// against every path of the context, so their number bounds the memory
/// and time a hostile file can cost (75,000 took 2.3 GB and 22 s).
pub const IGNORE_MAX_PATTERNS: usize = 1000;

/// Longest pattern, in bytes: Linux's PATH_MAX; no longer path can match.
const IGNORE_MAX_PATTERN_LEN: usize = 4096;

/// Per-component matcher used to decide whether an exception pattern could
/// re-include something below an excluded directory.
#[derive(Debug)]
enum CompMatch {
    /// A `**`-bearing component: can match any depth, so stay conservative.
    Any,
    Glob(GlobMatcher),
}

#[derive(Debug)]
struct Pattern {
    exclusion: bool,
    matcher: GlobMatcher,
    comps: Vec<CompMatch>,
}

impl Pattern {
    fn matches_or_parent(&self, comps: &[&str]) -> bool {
        // Docker's "parent paths excluded" rule: also try every ancestor.
        let mut prefix = String::new();
        for (i, c) in comps.iter().enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(c);
            if self.matcher.is_match(prefix.as_str()) {
                return true;
            }
        }
        false
    }

    /// True if this pattern could match `dir` itself, an ancestor, or
    /// anything below it. False negatives are not allowed; false positives
    /// only cost a needless directory scan.
    fn could_match_below(&self, dir: &[&str]) -> bool {
        for (i, d) in dir.iter().enumerate() {
            match self.comps.get(i) {
                None | Some(CompMatch::Any) => return true,
                Some(CompMatch::Glob(g)) => {
                    if !g.is_match(d) {
                        return false;
                    }
                }
            }
        }
        true
    }
}

/// Parsed `.dockerignore`.
#[derive(Debug, Default)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

impl DockerIgnore {
    pub fn parse(text: &str, source_name: &str) -> Result<DockerIgnore, ContextError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = idx + 1;
            // Docker only treats '#' as a comment in column one (before trimming).
            if raw.starts_with('#') {
                continue;
            }
            let trimmed = raw.trim();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: &str| ContextError::InvalidPattern {
                file: source_name.to_string(),
                line,
                pattern: untrusted::excerpt(trimmed),
                reason: reason.to_string(),
            };
            let (exclusion, body) = match trimmed.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, trimmed),
            };
            if body.is_empty() {
                return Err(bad("illegal exclusion pattern"));
            }
            if body.len() > IGNORE_MAX_PATTERN_LEN {
                return Err(bad("longer than 4096 bytes, the longest path Linux takes"));
            }
            if patterns.len() == IGNORE_MAX_PATTERNS {
                return Err(ContextError::TooManyPatterns {
                    file: source_name.to_string(),
                    max: IGNORE_MAX_PATTERNS,
                });
            }
            let mut cleaned = go_clean(body);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let glob = translate_pattern(&cleaned);
            let matcher = compile_glob(&glob).map_err(|e| bad(&e))?;
            let comps = glob
                .split('/')
                .map(|c| {
                    if c.contains("**") {
                        CompMatch::Any
                    } else {
                        // A component that fails on its own (e.g. a class
                        // spanning '/') just becomes conservative.
                        compile_glob(c).map_or(CompMatch::Any, CompMatch::Glob)
                    }
                })
                .collect();
            patterns.push(Pattern {
                exclusion,
                matcher,
                comps,
            });
        }
        Ok(DockerIgnore { patterns })
    }

    /// rel_path: context-relative, '/'-separated, no leading '/'.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let cleaned = go_clean(rel_path);
        let cleaned = cleaned.trim_start_matches('/');
        if cleaned.is_empty() || cleaned == "." || cleaned == ".." || cleaned.starts_with("../") {
            // The root itself (or anything outside) is never excluded.
            return false;
        }
        let comps: Vec<&str> = cleaned.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            if p.matches_or_parent(&comps) {
                excluded = !p.exclusion;
            }
        }
        excluded
    }

    /// Whether some `!` pattern might re-include a path at or below `dir`
    /// (so an excluded directory must still be scanned).
    pub fn may_reinclude_below(&self, dir: &str) -> bool {
        let cleaned = go_clean(dir);
        let cleaned = cleaned.trim_start_matches('/');
        let comps: Vec<&str> = if cleaned.is_empty() || cleaned == "." {
            Vec::new()
        } else {
            cleaned.split('/').collect()
        };
        self.patterns
            .iter()
            .any(|p| p.exclusion && p.could_match_below(&comps))
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

pub(super) fn compile_glob(glob: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

/// Converts Go/patternmatcher syntax to globset syntax: braces are literal in
/// Go, and patternmatcher treats `**x` at a component start like `**/x`.
pub(super) fn translate_pattern(pat: &str) -> String {
    let chars: Vec<char> = pat.chars().collect();
    let mut out = String::with_capacity(pat.len() + 4);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(&n) = chars.get(i + 1) {
                    out.push(n);
                    i += 1;
                }
            }
            '[' => {
                // Copy a class verbatim; braces inside it are already literal.
                let mut j = i + 1;
                if matches!(chars.get(j), Some('!') | Some('^')) {
                    j += 1;
                }
                if chars.get(j) == Some(&']') {
                    j += 1;
                }
                while chars.get(j).is_some_and(|&x| x != ']') {
                    j += 1;
                }
                let end = j.min(chars.len().saturating_sub(1));
                out.extend(chars.get(i..=end).unwrap_or_default());
                i = end;
            }
            '{' | '}' => {
                out.push('\\');
                out.push(c);
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                let at_start = i == 0 || chars.get(i - 1) == Some(&'/');
                out.push_str("**");
                i += 1;
                if at_start && chars.get(i + 1).is_some_and(|&n| n != '/' && n != '*') {
                    out.push('/');
                }
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// Lexical cleaning with Go's `path.Clean` rules.
fn go_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            _ => out.push(c),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ign(text: &str) -> DockerIgnore {
        DockerIgnore::parse(text, ".dockerignore").expect("valid patterns")
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let i = ign("# comment\n\n   \n  foo.txt  \n#bar.txt\n");
        assert!(i.is_excluded("foo.txt"));
        assert!(!i.is_excluded("bar.txt"));
        assert!(!i.is_excluded("#bar.txt"));
        // Docker only honours '#' in column one.
        let i = ign("  #x\n");
        assert!(i.is_excluded("#x"));
    }

    #[test]
    fn bom_and_crlf() {
        let i = ign("\u{feff}a.txt\r\nb.txt\r\n");
        assert!(i.is_excluded("a.txt"));
        assert!(i.is_excluded("b.txt"));
    }

    #[test]
    fn parent_directory_rule() {
        let i = ign("build\n");
        assert!(i.is_excluded("build"));
        assert!(i.is_excluded("build/x/y"));
        assert!(!i.is_excluded("src/build"));
        assert!(!i.is_excluded("buildx"));
    }

    #[test]
    fn star_and_question_do_not_cross_slash() {
        let i = ign("*.md\nlog?\n");
        assert!(i.is_excluded("README.md"));
        assert!(!i.is_excluded("docs/README.md"));
        assert!(i.is_excluded("log1"));
        assert!(!i.is_excluded("log12"));
        assert!(i.is_excluded(".hidden.md"));
        let i = ign("*/*.o\n");
        assert!(i.is_excluded("a/x.o"));
        assert!(!i.is_excluded("a/b/x.o"));
    }

    #[test]
    fn double_star_start_middle_end() {
        let i = ign("**/*.pyc\n");
        assert!(i.is_excluded("x.pyc"));
        assert!(i.is_excluded("a/b/c/x.pyc"));
        assert!(!i.is_excluded("a/x.py"));

        let i = ign("a/**/z\n");
        assert!(i.is_excluded("a/z"));
        assert!(i.is_excluded("a/b/c/z"));
        assert!(i.is_excluded("a/b/z/inner"));
        assert!(!i.is_excluded("b/a/z"));

        let i = ign("logs/**\n");
        assert!(i.is_excluded("logs/a"));
        assert!(i.is_excluded("logs/a/b"));
        assert!(!i.is_excluded("logs"));

        let i = ign("**\n!keep\n");
        assert!(i.is_excluded("anything/at/all"));
        assert!(!i.is_excluded("keep"));
        assert!(!i.is_excluded("keep/inner"));

        // patternmatcher: `**x` at a component start behaves like `**/x`.
        let i = ign("**.log\n");
        assert!(i.is_excluded(".log"));
        assert!(i.is_excluded("a/.log"));
        assert!(!i.is_excluded("a.log"));
    }

    #[test]
    fn exceptions_last_match_wins() {
        let i = ign("*.md\n!README.md\n");
        assert!(i.is_excluded("CHANGES.md"));
        assert!(!i.is_excluded("README.md"));

        let i = ign("!README.md\n*.md\n");
        assert!(i.is_excluded("README.md"));

        let i = ign("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(!i.is_excluded("README.md"));
        assert!(i.is_excluded("README-secret.md"));
    }

    #[test]
    fn reinclusion_under_excluded_dir() {
        let i = ign("docs\n!docs/README.md\n");
        assert!(i.is_excluded("docs"));
        assert!(i.is_excluded("docs/other.md"));
        assert!(!i.is_excluded("docs/README.md"));
        assert!(i.may_reinclude_below("docs"));
        assert!(!i.may_reinclude_below("src"));
        let i = ign("vendor\n!**/keep\n");
        assert!(i.may_reinclude_below("vendor/x/y"));
        let i = ign("vendor\n");
        assert!(!i.may_reinclude_below("vendor"));
    }

    #[test]
    fn leading_slash_dot_slash_trailing_slash_cleaning() {
        let i = ign("/abs\n./rel\ntrail/\na/../b\n!/abs/keep\n");
        assert!(i.is_excluded("abs"));
        assert!(i.is_excluded("abs/x"));
        assert!(!i.is_excluded("abs/keep"));
        assert!(i.is_excluded("rel"));
        assert!(i.is_excluded("trail"));
        assert!(i.is_excluded("trail/f"));
        assert!(i.is_excluded("b"));
        assert!(!i.is_excluded("a"));
        // Non-normalized query paths are cleaned too; the root never matches.
        assert!(i.is_excluded("./abs//x/"));
        assert!(!i.is_excluded(""));
        assert!(!i.is_excluded("."));
        assert!(!ign("*\n").is_excluded(""));
    }

    #[test]
    fn character_classes_braces_and_escapes() {
        let i = ign("file[0-9].txt\n[^a]x\n{a,b}\n\\*star\n");
        assert!(i.is_excluded("file3.txt"));
        assert!(!i.is_excluded("filex.txt"));
        assert!(i.is_excluded("bx"));
        assert!(!i.is_excluded("ax"));
        // Braces are literal in Go patterns.
        assert!(i.is_excluded("{a,b}"));
        assert!(!i.is_excluded("a"));
        assert!(i.is_excluded("*star"));
        assert!(!i.is_excluded("xstar"));
    }

    #[test]
    fn invalid_patterns_name_file_line_and_pattern() {
        let e = DockerIgnore::parse("# c\nok\n\n[a\n", ".dockerignore").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(".dockerignore:4: invalid pattern \"[a\""),
            "{msg}"
        );
        assert!(msg.contains("unclosed character class"), "{msg}");

        let e = DockerIgnore::parse("x\n!\n", "app.Dockerfile.dockerignore").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("app.Dockerfile.dockerignore:2: invalid pattern \"!\""));
        assert!(DockerIgnore::parse("trail\\", "f").is_err());
        assert!(DockerIgnore::parse("[z-a]", "f").is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for text in [
            "[", "]", "[!", "[]", "\\", "**/**/**", "***", "/", "..", "!!", "a/[", "[/]", "\u{0}",
        ] {
            if let Ok(i) = DockerIgnore::parse(text, "f") {
                for p in ["", "/", "..", "a/../..", "[", "x//y", "\u{0}"] {
                    let _ = i.is_excluded(p);
                    let _ = i.may_reinclude_below(p);
                }
            }
        }
    }

    #[test]
    fn ignore_patterns_are_bounded_in_number_and_length() {
        let many = |n: usize| (0..n).map(|i| format!("a{i}/**\n")).collect::<String>();
        assert!(DockerIgnore::parse(&many(IGNORE_MAX_PATTERNS), ".dockerignore").is_ok());
        // Comments and blank lines are not patterns.
        let padded = format!("# c\n\n{}", many(IGNORE_MAX_PATTERNS));
        assert!(DockerIgnore::parse(&padded, ".dockerignore").is_ok());
        let e = DockerIgnore::parse(&many(IGNORE_MAX_PATTERNS + 1), ".dockerignore").unwrap_err();
        assert_eq!(
            e.to_string(),
            ".dockerignore: more than 1000 patterns, the most that is used; fold them with wildcards"
        );
        let e = DockerIgnore::parse(&format!("ok\n{}\n", "a".repeat(4097)), "x").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("x:2: invalid pattern \"{}…\"", "a".repeat(40))),
            "{msg}"
        );
        assert!(
            msg.ends_with("longer than 4096 bytes, the longest path Linux takes"),
            "{msg}"
        );
    }
}
