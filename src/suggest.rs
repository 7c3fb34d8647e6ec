//! "Did you mean": the known word closest to a mistyped one.

/// The candidate nearest to `word` (case-insensitive edit distance), when it
/// is near enough to be the word meant: at most a third of its letters
/// differ, and at least one is the same.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let allowed = (word.chars().count() / 3).max(1);
    candidates
        .iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&word, &c.to_ascii_lowercase()),
                *c,
            )
        })
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// `" (did you mean \"X\"?)"`, or nothing when no candidate is close.
pub fn did_you_mean(word: &str, candidates: &[&str]) -> String {
    closest(word, candidates)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_words_only() {
        let keys = ["service_name", "version", "type", "context", "dockerfile"];
        assert_eq!(closest("dockerfle", &keys), Some("dockerfile"));
        assert_eq!(closest("Versoin", &keys), Some("version"));
        assert_eq!(closest("colour", &keys), None);
        assert_eq!(
            did_you_mean("COPPY", &["COPY", "ADD"]),
            " (did you mean \"COPY\"?)"
        );
    }
}
