//! The values of a run's secrets, read from the [`SecretStore`](hodei_domain::ports::SecretStore)
//! each time the run is (re)loaded: only their names are stored with the run.

use hodei_domain::ports::{RunRecord, SecretScope};

use crate::Ports;

/// The name and value of each secret the run names, looked up in the run's scopes (its pipeline,
/// then its repository). A secret that no scope has is an error naming it and where it was
/// looked for.
pub(crate) async fn run_secrets(
    ports: &Ports,
    record: &RunRecord,
) -> Result<Vec<(String, String)>, String> {
    let scopes = SecretScope::of_run(&record.pipeline, record.inputs.repository());
    let mut secrets = Vec::with_capacity(record.inputs.secrets.len());
    for name in &record.inputs.secrets {
        match ports.secrets.get(&scopes, name).await {
            Ok(Some(value)) => secrets.push((name.clone(), value)),
            Ok(None) => {
                let places: Vec<String> = scopes.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "secret `{name}` is not available (looked up for {})",
                    places.join(" and ")
                ));
            }
            Err(err) => return Err(format!("cannot read secret `{name}`: {err}")),
        }
    }
    Ok(secrets)
}
