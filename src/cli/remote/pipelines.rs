//! `hodei pipelines apply | list | show`.

use hodei_api::client::Client;
use hodei_api::views::AppliedPipeline;
use hodei_domain::diagnostic::Severity;
use hodei_domain::load::load_bytes;

use super::output::{Printer, Table, ago};
use super::{EXIT_OK, Failure, Outcome};
use crate::cli::validate;

/// Pipeline definitions on the server.
#[derive(Debug, clap::Subcommand)]
pub enum PipelinesCommand {
    /// Check pipeline files here, then store each as its pipeline's next version.
    ///
    /// Every file is validated first, with diagnostics as `hodei validate` prints them; if one
    /// is invalid, none is applied (exit 2). A file equal to the latest version stores nothing.
    #[command(
        after_help = "Examples:\n  hodei pipelines apply .hodei/web.yml\n  hodei pipelines apply -o json pipelines/*.yml"
    )]
    Apply {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<String>,
    },
    /// List pipelines with their latest version.
    #[command(
        after_help = "Examples:\n  hodei pipelines list\n  hodei pipelines list -o json | jq -r '.[].name'"
    )]
    List,
    /// Show a pipeline's latest definition and its versions.
    #[command(
        after_help = "Examples:\n  hodei pipelines show web\n  hodei pipelines show web -o json | jq -r .source"
    )]
    Show { name: String },
}

pub async fn run(cmd: PipelinesCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        PipelinesCommand::Apply { files } => apply(files, client, printer).await,
        PipelinesCommand::List => {
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = client.pipelines(cursor.as_deref(), 500).await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            printer.show(&items, |p| {
                let mut table = Table::new(vec!["NAME", "VERSION", "UPDATED", "CREATED"]);
                for item in &items {
                    table.row(vec![
                        p.bold(&item.name),
                        format!("v{}", item.latest),
                        ago(item.updated),
                        ago(item.created),
                    ]);
                }
                table.print();
            });
            Ok(EXIT_OK)
        }
        PipelinesCommand::Show { name } => {
            let view = client.pipeline(&name).await?;
            printer.show(&view, |p| {
                println!("{} v{}", p.bold(&view.name), view.version);
                let versions: Vec<String> = view
                    .versions
                    .iter()
                    .map(|v| format!("v{} ({})", v.version, ago(v.created)))
                    .collect();
                println!("versions: {}\n", versions.join(", "));
                print!("{}", view.source);
                if !view.source.ends_with('\n') {
                    println!();
                }
            });
            Ok(EXIT_OK)
        }
    }
}

/// Validates every file, then applies each.
async fn apply(files: Vec<String>, client: &Client, printer: Printer) -> Outcome {
    let color = printer.err_terminal && printer.color;
    let mut checked = Vec::new();
    let mut invalid = Vec::new();
    for file in &files {
        let bytes = validate::read(file)
            .map_err(|err| Failure::usage(format!("cannot read `{file}`: {err}")))?;
        let loaded = load_bytes(&bytes);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        validate::print_diagnostics(file, &text, &loaded.diagnostics, color);
        match loaded.pipeline {
            Some(pipeline) => checked.push((file.clone(), pipeline.name.to_string(), text)),
            None => invalid.push(format!(
                "{file} ({} errors)",
                loaded
                    .diagnostics
                    .iter()
                    .filter(|d| d.severity == Severity::Error)
                    .count()
            )),
        }
    }
    if !invalid.is_empty() {
        return Err(Failure::usage(format!(
            "nothing was applied: invalid pipeline(s): {}",
            invalid.join(", ")
        )));
    }
    let mut applied: Vec<AppliedPipeline> = Vec::new();
    let total = checked.len();
    for (i, (file, name, text)) in checked.into_iter().enumerate() {
        if printer.err_terminal && total > 1 {
            eprint!("\rapplying {}/{total}: {name}\x1b[K", i + 1);
        }
        let result = client.apply_pipeline(&name, text).await;
        if printer.err_terminal && total > 1 {
            eprint!("\r\x1b[K");
        }
        match result {
            Ok(done) => applied.push(done),
            Err(err) => {
                let mut failure = Failure::client(err);
                failure.message = format!("{file}: {}", failure.message);
                if !applied.is_empty() {
                    let names: Vec<&str> = applied.iter().map(|a| a.name.as_str()).collect();
                    failure
                        .message
                        .push_str(&format!("\n  applied before this: {}", names.join(", ")));
                }
                return Err(failure);
            }
        }
    }
    printer.show(&applied, |p| {
        for done in &applied {
            let how = if done.changed { "applied" } else { "unchanged" };
            println!("{} v{}: {how}", p.bold(&done.name), done.version);
        }
    });
    Ok(EXIT_OK)
}
