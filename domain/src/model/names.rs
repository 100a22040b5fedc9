//! Names with a syntax: job and pipeline names, worker labels, container images.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::ValueError;

fn valid(text: &str, max: usize, first: fn(u8) -> bool, rest: fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max
        && first(bytes[0])
        && bytes[1..].iter().all(|&b| rest(b))
}

macro_rules! text_newtype {
    ($(#[$doc:meta])* $name:ident, $expected:expr, $check:expr) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(try_from = "String", into = "String")]
        // Shared text: a plan copies the names, labels and images of its pipeline into every
        // job, and a copy is then a count, not an allocation.
        pub struct $name(Arc<str>);

        impl $name {
            /// What the text must look like.
            pub const EXPECTED: &'static str = $expected;

            /// A value taken as it is, for a best-effort model that is never handed out.
            #[allow(dead_code)]
            pub(crate) fn unchecked(text: &str) -> Self {
                $name(text.into())
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ValueError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let check: fn(&str) -> bool = $check;
                if check(text) {
                    Ok($name(text.into()))
                } else {
                    Err(ValueError::new(text, Self::EXPECTED))
                }
            }
        }

        impl TryFrom<&str> for $name {
            type Error = ValueError;

            fn try_from(text: &str) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValueError;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

text_newtype!(
    /// The name of a pipeline, job, service or concurrency group: 1 to 63 letters, digits, `-`,
    /// `_` or `.`, starting with a letter or digit.
    Name,
    "a name of 1 to 63 letters, digits, `-`, `_` or `.`, starting with a letter or digit",
    |text| valid(
        text,
        63,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
    )
);

text_newtype!(
    /// A worker label such as `linux`, `gpu` or `arch=arm64`.
    Label,
    "a label of 1 to 63 letters, digits, `-`, `_`, `.`, `:`, `/` or `=`, starting with a letter or digit",
    |text| valid(
        text,
        63,
        |b| b.is_ascii_alphanumeric(),
        |b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'=')
    )
);

impl Label {
    /// `docker`: the label of a worker that runs jobs with an `image` in containers. Such a job
    /// needs it beside its own `runs_on`; a worker offers it while its engine answers.
    pub fn docker() -> Label {
        Label("docker".into())
    }

    /// `checkout`: the label of a worker that can check out a registered repository (the
    /// server's machine and every agent; not the Kubernetes worker). A job of a run from a
    /// repository needs it, unless its pipeline says `checkout: false`.
    pub fn checkout() -> Label {
        Label("checkout".into())
    }
}

text_newtype!(
    /// A container image reference such as `rust:1`, `postgres:16` or `registry.local/app@sha256:…`.
    Image,
    "an image reference such as `rust:1` or `registry.example/team/app:2.1` (no spaces, at most 255 characters)",
    |text| !text.is_empty()
        && text.len() <= 255
        && !text.starts_with(['-', ':', '@', '/'])
        && text.bytes().all(|b| b.is_ascii_graphic())
);

/// Whether `text` is a valid environment variable name: a letter or `_`, then letters, digits or
/// `_`, at most 128 characters.
pub fn is_env_name(text: &str) -> bool {
    valid(
        text,
        128,
        |b| b.is_ascii_alphabetic() || b == b'_',
        |b| b.is_ascii_alphanumeric() || b == b'_',
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_usual_spellings() {
        for text in ["build", "web-app", "x", "v1.2", "build_release", "A1"] {
            assert!(text.parse::<Name>().is_ok(), "{text}");
        }
    }

    #[test]
    fn names_reject_spaces_leading_punctuation_and_length() {
        for text in [
            "",
            " build",
            "build job",
            "-x",
            ".x",
            "jobs/x",
            "é",
            &"a".repeat(64),
        ] {
            let err = text.parse::<Name>().unwrap_err();
            assert!(err.expected.starts_with("a name"), "{text}");
        }
    }

    #[test]
    fn labels_allow_key_value_spellings() {
        assert!("arch=arm64".parse::<Label>().is_ok());
        assert!("os/linux".parse::<Label>().is_ok());
        assert!("has space".parse::<Label>().is_err());
    }

    #[test]
    fn images_reject_whitespace_and_leading_separators() {
        assert!("postgres:16".parse::<Image>().is_ok());
        assert!(
            "registry.local:5000/team/app@sha256:abc"
                .parse::<Image>()
                .is_ok()
        );
        for text in ["", "rust 1", ":1", "-x", "a\tb"] {
            assert!(text.parse::<Image>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn env_names_follow_the_shell_rules() {
        assert!(is_env_name("RUST_LOG"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("A-B"));
        assert!(!is_env_name(""));
    }
}
