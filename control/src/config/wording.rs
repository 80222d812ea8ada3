//! serde's error messages, reworded for someone editing `deploy.yaml`.
//!
//! serde speaks of fields, variants, `i64` and maps; the user wrote keys,
//! values, numbers and mappings. The message shapes matched here are the ones
//! serde's `de::Error` helpers produce (`unknown_field`, `unknown_variant`,
//! `invalid_type`); anything else passes through unchanged.

/// Rewords one serde error message.
pub(crate) fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return unknown("key", rest);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        return unknown("value", rest);
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            return format!("expected {}, found {}", expected_type(expected), found_type(found));
        }
    }
    message.to_string()
}

/// For an unknown-key message, the expected key the user probably meant.
pub(crate) fn suggestion(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, choices) = name_and_choices(rest);
    closest(name, &choices).map(str::to_string)
}

/// Splits "NAME`, expected one of `a`, `b`" into the name and the choices.
fn name_and_choices(rest: &str) -> (&str, Vec<&str>) {
    // rest: "NAME`, expected one of `a`, `b`" | "NAME`, expected `a` or `b`"
    //     | "NAME`, there are no fields"
    let mut parts = rest.split('`');
    let name = parts.next().unwrap_or_default();
    (name, parts.skip(1).step_by(2).collect())
}

/// `comand`, expected one of `command`, `cwd`` → a sentence naming the
/// valid choices and the closest one.
fn unknown(what: &str, rest: &str) -> String {
    let (name, choices) = name_and_choices(rest);
    let mut text = format!("unknown {what} \"{name}\"");
    if let Some(near) = closest(name, &choices) {
        text.push_str(&format!(" (did you mean \"{near}\"?)"));
    }
    match choices.as_slice() {
        [] => text.push_str("; this mapping takes no keys"),
        [only] => text.push_str(&format!("; expected {only}")),
        [first, second] => text.push_str(&format!("; expected {first} or {second}")),
        all => text.push_str(&format!("; expected one of {}", all.join(", "))),
    }
    text
}

fn expected_type(expected: &str) -> &str {
    match expected {
        "i64" | "u64" | "u32" | "usize" => "a whole number",
        "a boolean" => "true or false",
        "a sequence" => "a list",
        "a map" => "a mapping",
        "option" => "a value",
        "field identifier" => "a plain key name",
        other => other,
    }
}

fn found_type(found: &str) -> String {
    if let Some(text) = found.strip_prefix("string ") {
        return format!("the string {text}");
    }
    for number in ["integer `", "floating point `"] {
        if let Some(text) = found.strip_prefix(number) {
            return format!("the number {}", text.trim_end_matches('`'));
        }
    }
    if let Some(text) = found.strip_prefix("boolean `") {
        return text.trim_end_matches('`').to_string();
    }
    match found {
        "map" => "a mapping".to_string(),
        "sequence" => "a list".to_string(),
        "unit value" => "an empty value".to_string(),
        other => other.to_string(),
    }
}

/// The choice closest to `word` when it is a plausible typo of it: at most
/// two edits, and fewer than half the word's length.
pub(crate) fn closest<'a>(word: &str, choices: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 2).clamp(1, 2);
    choices
        .iter()
        .map(|choice| (edit_distance(word, choice), *choice))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, choice)| choice)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string
/// alignment), ASCII-case-insensitive: `wbe` is one edit from `web`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_become_unknown_keys_with_the_choices() {
        assert_eq!(
            humanize("unknown field `comand`, expected one of `command`, `cwd`, `env`"),
            "unknown key \"comand\" (did you mean \"command\"?); expected one of command, cwd, env"
        );
        assert_eq!(
            humanize("unknown field `zzz`, expected `listen` or `token_env`"),
            "unknown key \"zzz\"; expected listen or token_env"
        );
        assert_eq!(
            humanize("unknown field `x`, there are no fields"),
            "unknown key \"x\"; this mapping takes no keys"
        );
    }

    #[test]
    fn unknown_variants_become_unknown_values() {
        assert_eq!(
            humanize("unknown variant `rollin`, expected `rolling` or `stopstart`"),
            "unknown value \"rollin\" (did you mean \"rolling\"?); expected rolling or stopstart"
        );
    }

    #[test]
    fn type_errors_name_what_was_expected_and_found() {
        assert_eq!(
            humanize("invalid type: string \"two\", expected i64"),
            "expected a whole number, found the string \"two\""
        );
        assert_eq!(
            humanize("invalid type: sequence, expected a map"),
            "expected a mapping, found a list"
        );
        assert_eq!(
            humanize("invalid type: string \"yes\", expected a boolean"),
            "expected true or false, found the string \"yes\""
        );
    }

    #[test]
    fn other_messages_pass_through() {
        assert_eq!(humanize("something else"), "something else");
    }

    #[test]
    fn suggestions_only_for_plausible_typos() {
        assert_eq!(closest("helth", &["health", "hooks"]), Some("health"));
        assert_eq!(closest("xyz", &["health", "hooks"]), None);
        assert_eq!(closest("a", &["b"]), Some("b"));
        assert_eq!(closest("wbe", &["api", "web"]), Some("web"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("ab", "ba"), 1);
    }
}
