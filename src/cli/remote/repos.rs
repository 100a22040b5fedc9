//! `hodei repos add | list | show | remove`: repositories whose forges send webhooks.

use hodei_api::client::Client;
use hodei_api::views::{RepositoryRequest, RepositoryView};

use super::output::{Printer, Table, ago};
use super::{EXIT_OK, Outcome};

/// Repositories whose pushes, tags and pull requests start runs (admin to change).
#[derive(Debug, clap::Subcommand)]
pub enum ReposCommand {
    /// Register a repository (or change its registration).
    ///
    /// The secrets it names are stored apart, in the repository's scope:
    /// `hodei secrets set NAME --repository REPO`. Point the forge's webhook at the
    /// `webhook_path` this prints, with the same secret.
    #[command(
        after_help = "Examples:\n  hodei secrets set HOOK --repository app\n  hodei repos add app --forge github --url https://github.com/acme/app.git --webhook-secret HOOK\n  hodei repos add app --forge gitlab --url https://gitlab.example/acme/app.git --webhook-secret HOOK --credentials GIT_TOKEN --pipeline-path ci/hodei.yml"
    )]
    Add {
        name: String,
        /// github, gitlab or gitea (also for Forgejo).
        #[arg(long)]
        forge: String,
        /// The clone URL, without credentials.
        #[arg(long, value_name = "URL")]
        url: String,
        /// The pipeline file's path in the repository.
        #[arg(long, value_name = "PATH", default_value = ".hodei.yml")]
        pipeline_path: String,
        /// The stored secret the forge signs webhooks with.
        #[arg(long, value_name = "SECRET")]
        webhook_secret: String,
        /// The stored secret with credentials to fetch (`USER:TOKEN` or a token).
        #[arg(long, value_name = "SECRET")]
        credentials: Option<String>,
        /// The stored secret with a token that may set commit statuses (none: no statuses).
        #[arg(long, value_name = "SECRET")]
        status_token: Option<String>,
        /// The forge's API base URL for statuses (default: from the clone URL).
        #[arg(long, value_name = "URL")]
        status_api: Option<String>,
    },
    /// List the registered repositories.
    #[command(after_help = "Examples:\n  hodei repos list\n  hodei repos list -o json")]
    List,
    /// Show a repository's registration and where its webhook goes.
    #[command(after_help = "Examples:\n  hodei repos show app")]
    Show { name: String },
    /// Remove a repository: its webhooks are refused from now on; its runs stay.
    #[command(after_help = "Examples:\n  hodei repos remove app")]
    Remove { name: String },
}

pub async fn run(cmd: ReposCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        ReposCommand::Add {
            name,
            forge,
            url,
            pipeline_path,
            webhook_secret,
            credentials,
            status_token,
            status_api,
        } => {
            let request = RepositoryRequest {
                forge,
                clone_url: url,
                pipeline_path: Some(pipeline_path),
                credentials,
                webhook_secret,
                status_token,
                status_api,
            };
            let repo = client.put_repo(&name, &request).await?;
            printer.show(&repo, |_| show(&repo));
        }
        ReposCommand::List => {
            let list = client.repos().await?;
            printer.show(&list.items, |_| {
                let mut table = Table::new(vec!["NAME", "FORGE", "URL", "PIPELINE", "CREATED"]);
                for r in &list.items {
                    table.row(vec![
                        r.name.clone(),
                        r.forge.clone(),
                        r.clone_url.clone(),
                        r.pipeline_path.clone(),
                        ago(r.created),
                    ]);
                }
                table.print();
            });
        }
        ReposCommand::Show { name } => {
            let repo = client.repo(&name).await?;
            printer.show(&repo, |_| show(&repo));
        }
        ReposCommand::Remove { name } => {
            client.remove_repo(&name).await?;
            let answer = serde_json::json!({ "name": name, "removed": true });
            printer.show(&answer, |_| println!("Repository {name} removed."));
        }
    }
    Ok(EXIT_OK)
}

fn show(repo: &RepositoryView) {
    println!("Repository {} ({})", repo.name, repo.forge);
    println!("  url:            {}", repo.clone_url);
    println!("  pipeline file:  {}", repo.pipeline_path);
    println!("  webhook:        POST {}", repo.webhook_path);
    println!("  webhook secret: {}", repo.webhook_secret);
    if let Some(c) = &repo.credentials {
        println!("  credentials:    {c}");
    }
    if let Some(t) = &repo.status_token {
        println!("  status token:   {t}");
    }
}
