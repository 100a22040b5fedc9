//! "Did you mean" suggestions for near-miss names: typos are the commonest pipeline bug.

/// The candidate closest to `input` by edit distance (transpositions count once), if it is close
/// enough to be a likely typo: at most one edit for short names, a third of the length for longer.
pub fn did_you_mean<'a, I>(input: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let limit = (input.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for candidate in candidates {
        if candidate == input {
            continue;
        }
        let distance = if candidate.eq_ignore_ascii_case(input) {
            0
        } else {
            edit_distance(input, candidate)
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and adjacent
/// transpositions each cost one. Quadratic, so only call it on short names.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut rows = vec![0usize; (a.len() + 1) * width];
    for (j, cell) in rows.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        rows[i * width] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[(i - 1) * width + j] + 1)
                .min(rows[i * width + j - 1] + 1)
                .min(rows[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[(i - 2) * width + j - 2] + 1);
            }
            rows[i * width + j] = best;
        }
    }
    rows[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_a_transposed_name() {
        assert_eq!(
            did_you_mean("biuld", ["build", "lint", "deploy"]),
            Some("build")
        );
    }

    #[test]
    fn suggests_nothing_for_a_distant_name() {
        assert_eq!(did_you_mean("zzz", ["build", "lint"]), None);
    }

    #[test]
    fn prefers_the_closest_candidate() {
        assert_eq!(
            did_you_mean("neds", ["needs", "nodes", "env"]),
            Some("needs")
        );
        assert_eq!(did_you_mean("ENV", ["env", "name"]), Some("env"));
    }

    #[test]
    fn edit_distance_counts_each_kind_of_edit_once() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "acb"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
