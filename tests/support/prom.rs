//! A small parser of the Prometheus text exposition format (0.0.4), enough
//! to check values and count series in tests.

use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses an exposition; panics on a line that is not valid (tests want to
/// know).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("not a valid sample line: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name_end, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, close) = parse_labels(&line[open + 1..])?;
            (open, labels, &line[open + 1 + close + 1..])
        }
        None => {
            let end = line.find(' ')?;
            (end, BTreeMap::new(), &line[end..])
        }
    };
    let name = line[..name_end].to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return None;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().ok()?,
    };
    Some(Sample { name, labels, value })
}

/// Labels up to the closing `}`; returns them and the index of the `}`.
fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, usize)> {
    let mut labels = BTreeMap::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if bytes.get(i) == Some(&b'}') {
            return Some((labels, i));
        }
        let eq = i + s[i..].find('=')?;
        let key = s[i..eq].trim().to_string();
        if bytes.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut value = String::new();
        let mut j = eq + 2;
        loop {
            match *bytes.get(j)? {
                b'\\' => {
                    match *bytes.get(j + 1)? {
                        b'n' => value.push('\n'),
                        other => value.push(other as char),
                    }
                    j += 2;
                }
                b'"' => break,
                _ => {
                    let c = s[j..].chars().next()?;
                    value.push(c);
                    j += c.len_utf8();
                }
            }
        }
        labels.insert(key, value);
        i = j + 1;
    }
}

/// The value of the one sample named `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_escapes_and_specials() {
        let samples =
            parse("# HELP x y\n# TYPE x counter\nx{a=\"1\",b=\"q\\\"uote\"} 3\ny 4.5\nz_bucket{le=\"+Inf\"} 7\n");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels["b"], "q\"uote");
        assert_eq!(value(&samples, "x", &[("a", "1")]), Some(3.0));
        assert_eq!(value(&samples, "y", &[]), Some(4.5));
    }
}
