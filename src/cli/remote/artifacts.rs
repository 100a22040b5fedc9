//! `hodei runs artifacts RUN` and `hodei runs download RUN NAME`.

use std::io::Write as _;
use std::path::PathBuf;

use hodei_api::client::Client;
use hodei_api::views::ArtifactView;

use super::output::{Printer, Table};
use super::{EXIT_OK, Failure, Outcome};

/// Lists the files a run's jobs kept.
pub async fn list(client: &Client, run: u64, printer: Printer) -> Outcome {
    let artifacts = client.artifacts(run).await?.artifacts;
    printer.show(&artifacts, |_| {
        if artifacts.is_empty() {
            println!("run {run} kept no artifacts");
            return;
        }
        let mut table = Table::new(vec!["JOB", "PATH", "SIZE", "SHA256"]);
        for a in &artifacts {
            table.row(vec![
                a.job.clone(),
                a.path.clone(),
                a.size.to_string(),
                a.sha256[..12.min(a.sha256.len())].to_owned(),
            ]);
        }
        table.print();
    });
    Ok(EXIT_OK)
}

/// The artifact `name` (its path) of the run, of job `job` when several jobs kept that path.
fn pick<'a>(
    artifacts: &'a [ArtifactView],
    run: u64,
    name: &str,
    job: Option<&str>,
) -> Result<&'a ArtifactView, Failure> {
    let found: Vec<&ArtifactView> = artifacts
        .iter()
        .filter(|a| a.path == name && job.is_none_or(|j| a.job == j))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => {
            let names: Vec<&str> = artifacts.iter().map(|a| a.path.as_str()).collect();
            Err(Failure::usage(match names.is_empty() {
                true => format!("run {run} kept no artifacts"),
                false => format!(
                    "run {run} has no artifact `{name}`{}; its artifacts are: {}",
                    job.map(|j| format!(" of job `{j}`")).unwrap_or_default(),
                    names.join(", ")
                ),
            }))
        }
        several => {
            let jobs: Vec<&str> = several.iter().map(|a| a.job.as_str()).collect();
            Err(Failure::usage(format!(
                "several jobs of run {run} kept `{name}` ({}): choose one with --job",
                jobs.join(", ")
            )))
        }
    }
}

/// Downloads one artifact into `output` (`-` for standard output; by default its file name in
/// the current directory).
pub async fn download(
    client: &Client,
    run: u64,
    name: &str,
    job: Option<&str>,
    output: Option<PathBuf>,
) -> Outcome {
    let artifacts = client.artifacts(run).await?.artifacts;
    let artifact = pick(&artifacts, run, name, job)?;
    let output = output
        .unwrap_or_else(|| PathBuf::from(artifact.path.rsplit('/').next().unwrap_or("artifact")));
    if output.as_os_str() == "-" {
        let mut stdout = std::io::stdout();
        client
            .download_artifact(run, artifact.job_id, &artifact.path, &mut stdout)
            .await?;
        stdout
            .flush()
            .map_err(|err| Failure::usage(format!("cannot write to standard output: {err}")))?;
        return Ok(EXIT_OK);
    }
    // Written beside its place, then renamed: an interrupted download leaves no half file.
    let partial = output.with_extension("part");
    let mut file = std::fs::File::create(&partial)
        .map_err(|err| Failure::usage(format!("cannot create {}: {err}", partial.display())))?;
    let written = client
        .download_artifact(run, artifact.job_id, &artifact.path, &mut file)
        .await;
    let written = match written {
        Ok(n) => n,
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            return Err(err.into());
        }
    };
    std::fs::rename(&partial, &output)
        .map_err(|err| Failure::usage(format!("cannot write {}: {err}", output.display())))?;
    eprintln!("{}: {written} bytes", output.display());
    Ok(EXIT_OK)
}
