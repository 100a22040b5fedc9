//! `hodei agents`: registration tokens and registered agents (see `docs/agents.md`). Their live
//! state — slots, jobs, draining — is in `hodei workers`.

use hodei_api::client::Client;

use super::output::{Printer, Table, ago};
use super::{EXIT_OK, Outcome};

/// Agents on other machines: registration tokens, registered agents.
#[derive(Debug, clap::Subcommand)]
pub enum AgentsCommand {
    /// Registration tokens, with which agents register once.
    #[command(
        subcommand,
        after_help = "Examples:\n  hodei agents tokens create --name builders --labels linux\n  hodei agents tokens list\n  hodei agents tokens revoke 2"
    )]
    Tokens(TokensCommand),
    /// List the registered agents.
    #[command(
        after_help = "Examples:\n  hodei agents list\n  hodei workers list   # their slots, jobs and state"
    )]
    List,
    /// Delete an agent: its credential is refused at once; its jobs are lost with it.
    #[command(after_help = "Examples:\n  hodei agents delete builder-3")]
    Delete { name: String },
}

/// Registration tokens (admin).
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a registration token; its secret is printed this once.
    #[command(
        after_help = "Examples:\n  hodei agents tokens create --name arm-builders --labels linux,arm64 --expires-in 3600\n  hodei agent --server URL --token \"$(hodei agents tokens create -o json | jq -r .token)\""
    )]
    Create {
        /// What it is for.
        #[arg(long, default_value = "agents")]
        name: String,
        /// The labels of every agent it registers (comma-separated), whatever they ask.
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// Seconds until it registers no one (default: never).
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<u64>,
    },
    /// List the registration tokens (without their secrets).
    #[command(
        after_help = "Examples:\n  hodei agents tokens list\n  hodei agents tokens list -o json | jq '.[].expires'"
    )]
    List,
    /// Revoke a registration token; the agents it registered keep working.
    #[command(after_help = "Examples:\n  hodei agents tokens revoke 2")]
    Revoke { id: u64 },
}

pub async fn run(cmd: AgentsCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        AgentsCommand::Tokens(TokensCommand::Create {
            name,
            labels,
            expires_in,
        }) => {
            let created = client
                .create_agent_token(&name, labels.as_deref(), expires_in)
                .await?;
            printer.show(&created, |_| {
                println!("{}", created.token.as_deref().unwrap_or_default());
                eprintln!(
                    "Registration token {} (`{}`) created: it is shown this once. Start an agent with\n  hodei agent --server {} --token <this token>",
                    created.id,
                    created.name,
                    client.url()
                );
            });
        }
        AgentsCommand::Tokens(TokensCommand::List) => {
            let list = client.agent_tokens().await?;
            printer.show(&list.items, |_| {
                let mut table = Table::new(vec!["ID", "NAME", "LABELS", "CREATED", "EXPIRES"]);
                for t in &list.items {
                    table.row(vec![
                        t.id.to_string(),
                        t.name.clone(),
                        t.labels
                            .as_ref()
                            .map_or("(the agent's)".into(), |l| l.join(",")),
                        ago(t.created),
                        t.expires.map_or("never".into(), ago),
                    ]);
                }
                table.print();
            });
        }
        AgentsCommand::Tokens(TokensCommand::Revoke { id }) => {
            client.revoke_agent_token(id).await?;
            let answer = serde_json::json!({ "id": id, "revoked": true });
            printer.show(&answer, |_| println!("Registration token {id} revoked."));
        }
        AgentsCommand::List => {
            let list = client.agents().await?;
            printer.show(&list.items, |_| {
                let mut table = Table::new(vec!["NAME", "LABELS", "REGISTERED"]);
                for a in &list.items {
                    table.row(vec![a.name.clone(), a.labels.join(","), ago(a.registered)]);
                }
                table.print();
            });
        }
        AgentsCommand::Delete { name } => {
            client.delete_agent(&name).await?;
            let answer = serde_json::json!({ "name": name, "deleted": true });
            printer.show(&answer, |_| println!("Agent `{name}` deleted."));
        }
    }
    Ok(EXIT_OK)
}
