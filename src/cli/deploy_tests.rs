//! The manifests of `deploy/kubernetes/`: every document is read into its `k8s-openapi` type
//! without losing a field (a misspelt field would be dropped, and the comparison fails), the
//! containers' command lines parse as this binary's, their `HODEI_*` variables are settings of
//! the command they run, and every name they refer to (Secrets and their keys, the volume
//! claim, the service account, the pods a Service selects) is defined beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde_json::Value;

use super::Cli;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every object of every manifest (but the kustomization), by file.
#[derive(Default)]
struct Objects {
    namespaces: Vec<Namespace>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    secrets: Vec<Secret>,
    claims: Vec<PersistentVolumeClaim>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    configs: Vec<ConfigMap>,
}

/// Reads `doc` as a `T`, and checks that nothing of it was lost on the way.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &str, doc: &Value) -> T {
    let object: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|err| panic!("{file}: {err}: {doc:#}"));
    let back = serde_json::to_value(&object).expect("serialise");
    assert_eq!(
        &back, doc,
        "{file}: a field is unknown to k8s-openapi or has another shape"
    );
    object
}

fn read_all() -> (Objects, Vec<String>) {
    let mut objects = Objects::default();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir()).expect("deploy/kubernetes/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(name.ends_with(".yaml"), "{name}: expected only .yaml files");
        if name == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(!docs.is_empty(), "{name}: no document");
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or_default();
            match kind {
                "Namespace" => objects.namespaces.push(typed(&name, doc)),
                "ServiceAccount" => objects.accounts.push(typed(&name, doc)),
                "Role" => objects.roles.push(typed(&name, doc)),
                "RoleBinding" => objects.bindings.push(typed(&name, doc)),
                "Secret" => objects.secrets.push(typed(&name, doc)),
                "PersistentVolumeClaim" => objects.claims.push(typed(&name, doc)),
                "Deployment" => objects.deployments.push(typed(&name, doc)),
                "Service" => objects.services.push(typed(&name, doc)),
                "ConfigMap" => objects.configs.push(typed(&name, doc)),
                other => panic!("{name}: a `{other}` is not expected in the manifests"),
            }
        }
        files.push(name);
    }
    files.sort();
    (objects, files)
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let (_, files) = read_all();
    let text = std::fs::read_to_string(dir().join("kustomization.yaml")).expect("read");
    let doc: Value = serde_saphyr::from_str(&text).expect("parses");
    let mut listed: Vec<String> = doc["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a file").to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, files);
}

#[test]
fn every_manifest_is_in_the_namespace_and_reads_into_its_type() {
    let (objects, _) = read_all();
    assert_eq!(objects.namespaces.len(), 1);
    let namespace = objects.namespaces[0].metadata.name.clone().expect("name");
    let namespaces: Vec<Option<String>> = objects
        .accounts
        .iter()
        .map(|o| o.metadata.namespace.clone())
        .chain(objects.roles.iter().map(|o| o.metadata.namespace.clone()))
        .chain(
            objects
                .bindings
                .iter()
                .map(|o| o.metadata.namespace.clone()),
        )
        .chain(objects.secrets.iter().map(|o| o.metadata.namespace.clone()))
        .chain(objects.claims.iter().map(|o| o.metadata.namespace.clone()))
        .chain(
            objects
                .deployments
                .iter()
                .map(|o| o.metadata.namespace.clone()),
        )
        .chain(
            objects
                .services
                .iter()
                .map(|o| o.metadata.namespace.clone()),
        )
        .chain(objects.configs.iter().map(|o| o.metadata.namespace.clone()))
        .collect();
    assert!(namespaces.len() >= 9);
    assert!(namespaces.iter().all(|n| n.as_deref() == Some(&namespace)));
}

#[test]
fn the_role_grants_what_pods_of_jobs_need_and_nothing_cluster_wide() {
    let (objects, _) = read_all();
    let role = &objects.roles[0];
    let granted: BTreeMap<String, BTreeSet<String>> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| {
            let verbs: BTreeSet<String> = rule.verbs.iter().cloned().collect();
            rule.resources
                .iter()
                .flatten()
                .map(move |r| (r.clone(), verbs.clone()))
        })
        .collect();
    let verbs = |list: &[&str]| {
        list.iter()
            .map(|v| (*v).to_owned())
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        granted["pods"],
        verbs(&["create", "delete", "get", "list", "watch"])
    );
    assert_eq!(granted["pods/log"], verbs(&["get"]));
    assert_eq!(granted["pods/attach"], verbs(&["create", "get"]));
    assert_eq!(
        granted["secrets"],
        verbs(&["create", "delete", "get", "list"])
    );
    assert_eq!(granted.len(), 4);
    let binding = &objects.bindings[0];
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let account = objects.accounts[0].metadata.name.clone();
    let subjects = binding.subjects.as_ref().expect("subjects");
    assert_eq!(Some(subjects[0].name.clone()), account);
}

/// The containers of the deployments, with their pod's spec.
fn containers(objects: &Objects) -> Vec<(String, Container)> {
    objects
        .deployments
        .iter()
        .flat_map(|d| {
            let name = d.metadata.name.clone().expect("name");
            let spec = d.spec.template.spec.clone().expect("pod");
            spec.containers.into_iter().map(move |c| (name.clone(), c))
        })
        .collect()
}

#[test]
fn the_containers_run_commands_and_variables_of_this_binary() {
    let (objects, _) = read_all();
    let all = containers(&objects);
    assert_eq!(all.len(), 2, "the server and the agents");
    for (deployment, container) in all {
        let args = container.args.clone().expect("args");
        let argv = std::iter::once("hodei".to_owned()).chain(args.iter().cloned());
        if let Err(err) = Cli::try_parse_from(argv) {
            panic!(
                "{deployment}: `hodei {}` does not parse: {err}",
                args.join(" ")
            );
        }
        let names: Vec<String> = container
            .env
            .iter()
            .flatten()
            .map(|var| var.name.clone())
            .collect();
        let command = Cli::command();
        let sub = command.find_subcommand(&args[0]).expect("a command");
        let flags: Vec<String> = sub
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        let unknown: Vec<&String> = match args[0].as_str() {
            "server" => names
                .iter()
                .filter(|name| {
                    !crate::config::unknown_variables(std::iter::once((*name).clone())).is_empty()
                })
                .collect(),
            _ => names.iter().filter(|name| !flags.contains(name)).collect(),
        };
        assert!(
            unknown.is_empty(),
            "{deployment}: unknown variables {unknown:?}"
        );
    }
}

#[test]
fn the_servers_configuration_is_read_by_hodeis_own_rules() {
    let (objects, _) = read_all();
    let config = objects
        .configs
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("hodei-config"))
        .expect("the ConfigMap hodei-config");
    let text = config
        .data
        .as_ref()
        .and_then(|data| data.get("hodei.toml"))
        .expect("its key hodei.toml");
    let path = std::path::Path::new("deploy/kubernetes/config.yaml");
    let resolved = crate::config::resolve(
        Some((path, text)),
        &|_| None,
        &crate::config::Flags::default(),
    )
    .unwrap_or_else(|err| panic!("hodei.toml of the ConfigMap: {err}"));
    let kubernetes = resolved.kubernetes.expect("a [kubernetes] table");
    assert_eq!(kubernetes.namespace, "hodei");
    assert_eq!(resolved.pools.len(), 1, "one pool");
    // The server reads it where the ConfigMap is mounted.
    let server = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("hodei"))
        .expect("the server");
    let pod = server.spec.clone().template.spec.expect("pod");
    let args = pod.containers[0].args.clone().expect("args");
    let at = args.iter().position(|a| a == "--config").expect("--config");
    let mounted = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| args[at + 1].starts_with(&format!("{}/", m.mount_path)))
        .expect("the file is under a mount");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mounted.name)
        .expect("the mount's volume");
    assert_eq!(
        volume.config_map.as_ref().map(|c| c.name.as_str()),
        Some("hodei-config")
    );
}

#[test]
fn every_name_a_manifest_refers_to_is_defined_beside_it() {
    let (objects, _) = read_all();
    let secret_keys: BTreeMap<String, BTreeSet<String>> = objects
        .secrets
        .iter()
        .map(|s| {
            let keys = s
                .string_data
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            (s.metadata.name.clone().expect("name"), keys)
        })
        .collect();
    for (deployment, container) in containers(&objects) {
        for var in container.env.iter().flatten() {
            let Some(reference) = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            else {
                continue;
            };
            let keys = secret_keys
                .get(&reference.name)
                .unwrap_or_else(|| panic!("{deployment}: no Secret `{}`", reference.name));
            assert!(
                keys.contains(&reference.key),
                "{deployment}: Secret `{}` has no key `{}`",
                reference.name,
                reference.key
            );
        }
    }
    let claims: BTreeSet<String> = objects
        .claims
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let accounts: BTreeSet<String> = objects
        .accounts
        .iter()
        .filter_map(|a| a.metadata.name.clone())
        .collect();
    for deployment in &objects.deployments {
        let spec = deployment.spec.clone();
        let pod = spec.template.spec.clone().expect("pod");
        for volume in pod.volumes.iter().flatten() {
            if let Some(claim) = &volume.persistent_volume_claim {
                assert!(
                    claims.contains(&claim.claim_name),
                    "no claim {}",
                    claim.claim_name
                );
            }
        }
        if let Some(account) = &pod.service_account_name {
            assert!(accounts.contains(account), "no service account {account}");
        }
        let labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        let selected = spec.selector.match_labels.unwrap_or_default();
        assert!(selected.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }
    for service in &objects.services {
        let selector = service
            .spec
            .clone()
            .and_then(|s| s.selector)
            .unwrap_or_default();
        let matches = objects.deployments.iter().any(|d| {
            let labels = d
                .spec
                .template
                .metadata
                .clone()
                .and_then(|m| m.labels)
                .unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        });
        assert!(matches, "the Service selects no deployment's pods");
    }
}

/// Several replicas of the server must each have a name, an address where the others reach it
/// (from variables defined before it, as Kubernetes expands `$(NAME)`), on the container's
/// port, and one data directory they all can write.
#[test]
fn the_servers_replicas_reach_each_other_and_share_their_data_directory() {
    let (objects, _) = read_all();
    let server = objects
        .deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some("hodei"))
        .expect("the server");
    let spec = server.spec.clone();
    assert!(spec.replicas.unwrap_or(1) > 1, "the server runs replicas");
    let pod = spec.template.spec.expect("pod");
    let container = &pod.containers[0];
    let env: Vec<_> = container.env.clone().unwrap_or_default();
    let position = |name: &str| env.iter().position(|v| v.name == name);
    let node = position("HODEI_NODE_NAME").expect("HODEI_NODE_NAME");
    assert_eq!(
        env[node]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("metadata.name"),
        "each replica is named after its pod"
    );
    let at = position("HODEI_ADVERTISE_URL").expect("HODEI_ADVERTISE_URL");
    let url = env[at].value.clone().expect("a value");
    let mut rest = url.as_str();
    while let Some(start) = rest.find("$(") {
        let end = rest[start..].find(')').expect("a closed $(") + start;
        let name = &rest[start + 2..end];
        let defined = position(name).unwrap_or_else(|| panic!("`{name}` is not defined"));
        assert!(
            defined < at,
            "`{name}` is defined after HODEI_ADVERTISE_URL"
        );
        rest = &rest[end + 1..];
    }
    let port = container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .expect("the http port")
        .container_port;
    assert!(
        url.ends_with(&format!(":{port}")),
        "{url} is not on port {port}"
    );
    let args = container.args.clone().expect("args");
    let data = &args[args.iter().position(|a| a == "--data").expect("--data") + 1];
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| &m.mount_path == data)
        .expect("the data directory is mounted");
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .expect("on a claim")
        .claim_name
        .clone();
    let claim = objects
        .claims
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(&claim))
        .expect("the claim");
    let modes = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    assert_eq!(
        modes,
        ["ReadWriteMany"],
        "every replica writes the data directory"
    );
}
