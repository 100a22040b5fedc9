//! The `[kubernetes]` table of `hodei.toml`: a worker of the server whose jobs run as pods on a
//! cluster. Kept apart from the flat keys of [`config`](crate::config) since it is a table of
//! its own; checked the same way (where, which key, the value, what was expected).
//!
//! ```toml
//! [kubernetes]
//! kubeconfig = "/etc/hodei/kubeconfig"   # absent: KUBECONFIG, ~/.kube/config, or in-cluster
//! namespace = "hodei-jobs"
//! image = "registry.example/hodei:0.1.0" # Hodei's image: the pods' init container copies `hodei` from it
//! default_image = "debian:bookworm"       # the image of jobs that name none
//! labels = ["kubernetes"]
//! max_pods = 10
//! node_selector = { "kubernetes.io/arch" = "amd64" }
//! image_pull_secrets = ["registry-credentials"]
//!
//! [[kubernetes.tolerations]]
//! key = "dedicated"
//! operator = "Equal"
//! value = "ci"
//! effect = "NoSchedule"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hodei_domain::model::{Image, Label};
use k8s_openapi::api::core::v1::Toleration;

use crate::config::{ConfigError, Origin, beside};

/// A checked `[kubernetes]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesConfig {
    /// The kubeconfig file to use; `None`: inferred (`KUBECONFIG`, `~/.kube/config`, or the
    /// pod's service account when Hodei runs in a cluster).
    pub kubeconfig: Option<PathBuf>,
    pub namespace: String,
    /// Hodei's own image, which the pods' init container copies the entrypoint from.
    pub image: String,
    /// The image of a job that names none.
    pub default_image: Image,
    /// The labels of the Kubernetes worker.
    pub labels: Vec<Label>,
    /// The most pods (jobs) at once: the worker's slots.
    pub max_pods: u32,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub image_pull_secrets: Vec<String>,
}

// Every field compares as equal to itself (a toleration is strings and a number).
impl Eq for KubernetesConfig {}

/// The keys of the table, for the error about one that is not.
const KEYS: [&str; 9] = [
    "kubeconfig",
    "namespace",
    "image",
    "default_image",
    "labels",
    "max_pods",
    "node_selector",
    "tolerations",
    "image_pull_secrets",
];

const KEY_LIST: &str = "one of the keys kubeconfig, namespace, image, default_image, labels, max_pods, node_selector, tolerations, image_pull_secrets";
const NAME: &str = "a name of 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
const IMAGE: &str = "Hodei's image reference, such as registry.example/hodei:0.1.0 (required: the pods' init container copies `hodei` from it)";

/// Reads the table `value` of the file `path`.
pub fn parse(path: &Path, value: toml::Value) -> Result<KubernetesConfig, ConfigError> {
    let origin = Origin::File(path.to_owned());
    let invalid = |key: &'static str, value: String, expected: &'static str| ConfigError::Invalid {
        origin: origin.clone(),
        key,
        value,
        expected,
    };
    let toml::Value::Table(table) = value else {
        return Err(invalid(
            "kubernetes",
            format!("a TOML {}", value.type_str()),
            "a table `[kubernetes]`",
        ));
    };
    if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        let hint = hodei_domain::suggest::did_you_mean(unknown, KEYS)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        return Err(invalid(
            "kubernetes",
            format!("a table with the unknown key `{unknown}`{hint}"),
            KEY_LIST,
        ));
    }
    let text = |key: &'static str, expected: &'static str| -> Result<Option<String>, ConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(text)) => Ok(Some(text.trim().to_owned())),
            Some(other) => Err(invalid(key_of(key), shown(other), expected)),
        }
    };
    let strings = |key: &'static str, expected: &'static str| -> Result<Vec<String>, ConfigError> {
        match table.get(key) {
            None => Ok(Vec::new()),
            Some(toml::Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => Ok(text.trim().to_owned()),
                    other => Err(invalid(key_of(key), shown(other), expected)),
                })
                .collect(),
            Some(other) => Err(invalid(key_of(key), shown(other), expected)),
        }
    };
    let kubeconfig = text("kubeconfig", "the path of a kubeconfig file")?
        .filter(|t| !t.is_empty())
        .map(|t| beside(path, &t));
    let namespace = text("namespace", NAME)?.unwrap_or_else(|| "default".to_owned());
    if !dns_label(&namespace) {
        return Err(invalid(
            "kubernetes.namespace",
            format!("{namespace:?}"),
            NAME,
        ));
    }
    let image = match text("image", IMAGE)? {
        Some(image) if image.parse::<Image>().is_ok() => image,
        Some(image) => return Err(invalid("kubernetes.image", format!("{image:?}"), IMAGE)),
        None => return Err(invalid("kubernetes.image", "missing".into(), IMAGE)),
    };
    const DEFAULT_IMAGE: &str = "an image reference such as debian:bookworm: the image of jobs that name none (it must run Hodei's entrypoint: glibc and /bin/sh)";
    let default_image =
        text("default_image", DEFAULT_IMAGE)?.unwrap_or_else(|| "debian:bookworm".to_owned());
    let default_image = default_image.parse::<Image>().map_err(|_| {
        invalid(
            "kubernetes.default_image",
            format!("{default_image:?}"),
            DEFAULT_IMAGE,
        )
    })?;
    const LABELS: &str = "a list of worker labels such as [\"kubernetes\", \"linux\"]";
    let labels = match table.get("labels") {
        None => vec![kubernetes_label()],
        Some(_) => strings("labels", LABELS)?
            .iter()
            .map(|label| {
                label
                    .parse::<Label>()
                    .map_err(|_| invalid("kubernetes.labels", format!("{label:?}"), LABELS))
            })
            .collect::<Result<_, _>>()?,
    };
    const MAX_PODS: &str = "a number of pods (jobs at once) from 1 to 10000";
    let max_pods = match table.get("max_pods") {
        None => 10,
        Some(toml::Value::Integer(n)) if (1..=10_000).contains(n) => *n as u32,
        Some(other) => return Err(invalid("kubernetes.max_pods", shown(other), MAX_PODS)),
    };
    const SELECTOR: &str =
        "a table of node labels and values, such as { \"kubernetes.io/arch\" = \"amd64\" }";
    let node_selector = match table.get("node_selector") {
        None => BTreeMap::new(),
        Some(toml::Value::Table(selector)) => selector
            .iter()
            .map(|(key, value)| match value {
                toml::Value::String(value) if label_key(key) && label_value(value) => {
                    Ok((key.clone(), value.clone()))
                }
                other => Err(invalid(
                    "kubernetes.node_selector",
                    format!("{key:?} = {}", shown(other)),
                    SELECTOR,
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid("kubernetes.node_selector", shown(other), SELECTOR)),
    };
    let tolerations = match table.get("tolerations") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                toleration(item)
                    .map_err(|value| invalid("kubernetes.tolerations", value, TOLERATION))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid("kubernetes.tolerations", shown(other), TOLERATION)),
    };
    const SECRETS: &str =
        "a list of names of Secrets of the namespace, such as [\"registry-credentials\"]";
    let image_pull_secrets = strings("image_pull_secrets", SECRETS)?;
    if let Some(bad) = image_pull_secrets.iter().find(|name| !dns_subdomain(name)) {
        return Err(invalid(
            "kubernetes.image_pull_secrets",
            format!("{bad:?}"),
            SECRETS,
        ));
    }
    Ok(KubernetesConfig {
        kubeconfig,
        namespace,
        image,
        default_image,
        labels,
        max_pods,
        node_selector,
        tolerations,
        image_pull_secrets,
    })
}

/// `kubernetes`: the Kubernetes worker's label unless the table says otherwise.
fn kubernetes_label() -> Label {
    "kubernetes"
        .parse()
        .unwrap_or_else(|_| unreachable!("`kubernetes` is a valid label"))
}

/// The full name of a key of the table, for errors.
fn key_of(key: &'static str) -> &'static str {
    match key {
        "kubeconfig" => "kubernetes.kubeconfig",
        "namespace" => "kubernetes.namespace",
        "image" => "kubernetes.image",
        "default_image" => "kubernetes.default_image",
        "labels" => "kubernetes.labels",
        "image_pull_secrets" => "kubernetes.image_pull_secrets",
        _ => "kubernetes",
    }
}

fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(n) => n.to_string(),
        other => format!("a TOML {}", other.type_str()),
    }
}

const TOLERATION: &str = "tables { key, operator = \"Equal\" | \"Exists\", value, effect = \"NoSchedule\" | \"PreferNoSchedule\" | \"NoExecute\", toleration_seconds (NoExecute only) }, as a pod's tolerations; `Exists` takes no value";

/// One toleration, or what is wrong with it.
fn toleration(item: &toml::Value) -> Result<Toleration, String> {
    let toml::Value::Table(table) = item else {
        return Err(shown(item));
    };
    let text = |key: &str| -> Result<Option<String>, String> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(format!("`{key}` = {}", shown(other))),
        }
    };
    if let Some(unknown) = table.keys().find(|k| {
        !["key", "operator", "value", "effect", "toleration_seconds"].contains(&k.as_str())
    }) {
        return Err(format!("a toleration with the unknown key `{unknown}`"));
    }
    let key = text("key")?;
    let operator = text("operator")?.unwrap_or_else(|| "Equal".to_owned());
    let value = text("value")?;
    let effect = text("effect")?;
    if let Some(key) = &key
        && !label_key(key)
    {
        return Err(format!("`key` = {key:?}"));
    }
    match operator.as_str() {
        "Equal" if key.is_none() => {
            return Err("`operator` = \"Equal\" without a `key`".to_owned());
        }
        "Equal" => {}
        "Exists" if value.is_some() => {
            return Err("`operator` = \"Exists\" with a `value`".to_owned());
        }
        "Exists" => {}
        other => return Err(format!("`operator` = {other:?}")),
    }
    if let Some(effect) = &effect
        && !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect.as_str())
    {
        return Err(format!("`effect` = {effect:?}"));
    }
    let seconds = match table.get("toleration_seconds") {
        None => None,
        Some(toml::Value::Integer(n)) if *n >= 0 && effect.as_deref() == Some("NoExecute") => {
            Some(*n)
        }
        Some(other) => return Err(format!("`toleration_seconds` = {}", shown(other))),
    };
    Ok(Toleration {
        key,
        operator: Some(operator),
        value,
        effect,
        toleration_seconds: seconds,
    })
}

/// A DNS label (RFC 1123): a namespace's name.
fn dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// A DNS subdomain (RFC 1123): a Secret's name.
fn dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(dns_label)
}

/// A label's key: an optional DNS subdomain prefix and `/`, then a name.
fn label_key(text: &str) -> bool {
    let (prefix, name) = match text.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    prefix.is_none_or(dns_subdomain) && !name.is_empty() && label_value(name)
}

/// A label's value: at most 63 letters, digits, `-`, `_`, `.`, starting and ending with a
/// letter or digit (or empty).
fn label_value(text: &str) -> bool {
    text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && text
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<KubernetesConfig, String> {
        let table: toml::Table = text.parse().expect("TOML");
        let value = table
            .get("kubernetes")
            .cloned()
            .expect("a [kubernetes] table");
        parse(Path::new("/etc/hodei/hodei.toml"), value).map_err(|err| err.to_string())
    }

    #[test]
    fn a_table_with_hodeis_image_only_takes_the_defaults() {
        let config = parse_text("[kubernetes]\nimage = \"registry.example/hodei:1\"\n").unwrap();
        assert_eq!(
            config,
            KubernetesConfig {
                kubeconfig: None,
                namespace: "default".into(),
                image: "registry.example/hodei:1".into(),
                default_image: "debian:bookworm".parse().unwrap(),
                labels: vec!["kubernetes".parse().unwrap()],
                max_pods: 10,
                node_selector: BTreeMap::new(),
                tolerations: Vec::new(),
                image_pull_secrets: Vec::new(),
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
[kubernetes]
kubeconfig = "kube/config"
namespace = "ci-jobs"
image = "registry.example/hodei:1"
default_image = "registry.example/debian:12"
labels = ["k8s", "linux"]
max_pods = 40
node_selector = { "kubernetes.io/arch" = "amd64", pool = "ci" }
image_pull_secrets = ["registry-credentials"]

[[kubernetes.tolerations]]
key = "dedicated"
value = "ci"
effect = "NoSchedule"

[[kubernetes.tolerations]]
operator = "Exists"
effect = "NoExecute"
toleration_seconds = 30
"#;
        let config = parse_text(text).unwrap();
        assert_eq!(
            config.kubeconfig,
            Some(PathBuf::from("/etc/hodei/kube/config"))
        );
        assert_eq!(config.namespace, "ci-jobs");
        assert_eq!(
            config.default_image.to_string(),
            "registry.example/debian:12"
        );
        let labels: Vec<String> = config.labels.iter().map(ToString::to_string).collect();
        assert_eq!(labels, ["k8s", "linux"]);
        assert_eq!(config.max_pods, 40);
        assert_eq!(config.node_selector["kubernetes.io/arch"], "amd64");
        assert_eq!(config.node_selector["pool"], "ci");
        assert_eq!(config.image_pull_secrets, ["registry-credentials"]);
        assert_eq!(
            config.tolerations,
            [
                Toleration {
                    key: Some("dedicated".into()),
                    operator: Some("Equal".into()),
                    value: Some("ci".into()),
                    effect: Some("NoSchedule".into()),
                    toleration_seconds: None,
                },
                Toleration {
                    key: None,
                    operator: Some("Exists".into()),
                    value: None,
                    effect: Some("NoExecute".into()),
                    toleration_seconds: Some(30),
                },
            ]
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_the_value_and_what_is_expected() {
        let cases = [
            (
                "namespace = \"Team_CI\"",
                "`kubernetes.namespace` is \"Team_CI\": expected a name of 1 to 63 lowercase",
            ),
            (
                "",
                "`kubernetes.image` is missing: expected Hodei's image reference",
            ),
            (
                "image = \"has space\"",
                "`kubernetes.image` is \"has space\"",
            ),
            ("default_image = \"\"", "`kubernetes.default_image` is \"\""),
            (
                "labels = [\"-x\"]",
                "`kubernetes.labels` is \"-x\": expected a list of worker labels",
            ),
            ("labels = \"k8s\"", "`kubernetes.labels` is \"k8s\""),
            (
                "max_pods = 0",
                "`kubernetes.max_pods` is 0: expected a number of pods",
            ),
            ("max_pods = \"4\"", "`kubernetes.max_pods` is \"4\""),
            (
                "node_selector = { pool = 3 }",
                "`kubernetes.node_selector` is \"pool\" = 3",
            ),
            (
                "node_selector = { \"bad key\" = \"x\" }",
                "`kubernetes.node_selector` is \"bad key\" = \"x\"",
            ),
            (
                "image_pull_secrets = [\"Not_A_Name\"]",
                "`kubernetes.image_pull_secrets` is \"Not_A_Name\"",
            ),
            (
                "tolerations = [{ operator = \"Exists\", value = \"x\" }]",
                "`kubernetes.tolerations` is `operator` = \"Exists\" with a `value`",
            ),
            (
                "tolerations = [{ key = \"a\", operator = \"Maybe\" }]",
                "`kubernetes.tolerations` is `operator` = \"Maybe\"",
            ),
            (
                "tolerations = [{ key = \"a\", effect = \"NoRun\" }]",
                "`kubernetes.tolerations` is `effect` = \"NoRun\"",
            ),
            (
                "tolerations = [{ key = \"a\", toleration_seconds = 5 }]",
                "`kubernetes.tolerations` is `toleration_seconds` = 5",
            ),
            (
                "namespce = \"ci\"",
                "`kubernetes` is a table with the unknown key `namespce` (did you mean `namespace`?): expected one of the keys",
            ),
        ];
        for (line, expected) in cases {
            let image = if line.is_empty() || line.starts_with("image =") {
                ""
            } else {
                "image = \"hodei:1\"\n"
            };
            let text = format!("[kubernetes]\n{image}{line}\n");
            let err = parse_text(&text).expect_err(line);
            assert!(
                err.starts_with("/etc/hodei/hodei.toml: ") && err.contains(expected),
                "{line}: {err}"
            );
        }
        let table: toml::Table = "kubernetes = 3".parse().unwrap();
        let err = parse(Path::new("hodei.toml"), table["kubernetes"].clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hodei.toml: `kubernetes` is a TOML integer: expected a table `[kubernetes]`"
        );
    }
}
