//! A client of the API server, from a kubeconfig file or as `kubectl` infers one.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::error::KubeError;

/// A client of the API server of `kubeconfig` (its current context), or, without one, of the
/// configuration inferred as `kubectl` does: `KUBECONFIG`, then `~/.kube/config`, then the
/// service account of the pod Hodei runs in (`KUBERNETES_SERVICE_HOST`).
///
/// # Errors
/// [`KubeError::Config`] when the file cannot be read or used, or nothing can be inferred.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let from = || format!("the kubeconfig {}", path.display());
            let file = Kubeconfig::read_from(path).map_err(|err| KubeError::Config {
                from: from(),
                message: err.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|err| KubeError::Config {
                    from: from(),
                    message: err.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|err| KubeError::Config {
                from: "KUBECONFIG, ~/.kube/config or the pod's service account".to_owned(),
                message: err.to_string(),
            })?,
    };
    kube::Client::try_from(config).map_err(|err| KubeError::Config {
        from: "the configuration found".to_owned(),
        message: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_kubeconfig_that_is_not_there_or_not_one_is_refused_with_its_path() {
        let dir = std::env::temp_dir().join(format!("hodei-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let err = client(Some(&missing)).await.err().expect("refused");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot configure the Kubernetes client from the kubeconfig {}: ",
                missing.display()
            )),
            "{err}"
        );
        let garbage = dir.join("garbage");
        std::fs::write(&garbage, "clusters: 3\n").unwrap();
        let err = client(Some(&garbage)).await.err().expect("refused");
        assert!(err.to_string().contains("garbage"), "{err}");
        let good = dir.join("config");
        std::fs::write(
            &good,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: { server: \"http://127.0.0.1:9\" }\nusers:\n- name: u\n  user: {}\ncontexts:\n- name: x\n  context: { cluster: c, user: u, namespace: ci }\ncurrent-context: x\n",
        )
        .unwrap();
        let client = client(Some(&good)).await.expect("a client");
        assert_eq!(client.default_namespace(), "ci");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
