//! The glob patterns of `on:` filters: `*` and `?` stay within one path segment (`/`), `**`
//! crosses segments. Matching is linear in pattern × text at worst (no backtracking blow-up).

/// Whether `text` matches `pattern`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // reach[j]: the pattern read so far matches t[..j].
    let mut reach = vec![false; t.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < p.len() {
        let mut next = vec![false; t.len() + 1];
        match p[i] {
            '*' if p.get(i + 1) == Some(&'*') => {
                // `**` matches any run of characters, `/` included; `**/` also matches nothing.
                let mut on = false;
                for j in 0..=t.len() {
                    on |= reach[j];
                    next[j] = on;
                }
                i += 2;
                if p.get(i) == Some(&'/') {
                    let mut after = vec![false; t.len() + 1];
                    for j in 0..=t.len() {
                        if next[j] && j < t.len() && t[j] == '/' {
                            after[j + 1] = true;
                        }
                        // `**/x` matches `x` at the start too.
                        if reach[j] {
                            after[j] = true;
                        }
                    }
                    next = after;
                    i += 1;
                }
                reach = next;
                continue;
            }
            '*' => {
                let mut on = false;
                for j in 0..=t.len() {
                    on = reach[j] || (on && j > 0 && t[j - 1] != '/');
                    next[j] = on;
                }
            }
            '?' => {
                for j in 0..t.len() {
                    next[j + 1] = reach[j] && t[j] != '/';
                }
            }
            c => {
                for j in 0..t.len() {
                    next[j + 1] = reach[j] && t[j] == c;
                }
            }
        }
        reach = next;
        i += 1;
    }
    reach[t.len()]
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn stars_stay_in_a_segment_and_double_stars_cross_them() {
        let table = [
            ("main", "main", true),
            ("main", "mainline", false),
            ("release/*", "release/1.0", true),
            ("release/*", "release/1.0/hotfix", false),
            ("release/**", "release/1.0/hotfix", true),
            ("**", "any/thing/at/all", true),
            ("*", "feature/x", false),
            ("v*", "v1.2.3", true),
            ("v?.?", "v1.2", true),
            ("v?.?", "v1/2", false),
            ("services/**", "services/api/main.rs", true),
            ("services/**", "libs/x.rs", false),
            ("**/*.md", "README.md", true),
            ("**/*.md", "docs/deep/page.md", true),
            ("**/*.md", "docs/page.rs", false),
            ("docs/**/x", "docs/x", true),
            ("*.rs", "src/main.rs", false),
            ("", "", true),
            ("a*b*c*d", "aXbYcZd", true),
        ];
        for (pattern, text, expected) in table {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn a_pathological_pattern_stays_fast() {
        let text = "a".repeat(2000);
        let pattern = format!("{}b", "*a".repeat(200));
        assert!(!glob_match(&pattern, &text));
    }
}
