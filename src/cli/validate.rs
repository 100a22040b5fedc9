//! `hodei validate FILE...`: lints pipeline files and reports every problem at once.
//!
//! Exit 0 when every file is valid (one summary line each), 1 when any file has an error (each
//! diagnostic rustc-style, with the source line and a caret), 2 for a usage error or a file that
//! cannot be read. `--format json` prints one JSON document for editors and CI instead.

use std::io::{IsTerminal, Read, Write};

use clap::ValueEnum;
use hodei_domain::diagnostic::{Diagnostic, Severity};
use hodei_domain::load::load_bytes;
use hodei_domain::plan::plan;
use serde::Serialize;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};

/// Check pipeline files and report every problem with its line and column.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei validate pipeline.yml\n  hodei validate --format json a.yml b.yml\n  cat pipeline.yml | hodei validate -\n\nExit codes: 0 all valid, 1 a file has errors, 2 usage error or unreadable file."
)]
pub struct Args {
    /// Pipeline files to check (`-` reads standard input).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<String>,
    /// How to print the results.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Summaries and rustc-style diagnostics.
    Human,
    /// One JSON document on standard output.
    Json,
}

/// What `--format json` prints for one file.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pipeline: Option<String>,
    /// Jobs once matrices are expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    jobs: Option<usize>,
    /// `needs` edges between the expanded jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    edges: Option<usize>,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Serialize)]
struct Report {
    valid: bool,
    files: Vec<FileReport>,
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let mut sources = Vec::with_capacity(args.files.len());
    for file in &args.files {
        match read(file) {
            Ok(bytes) => sources.push((file.clone(), bytes)),
            Err(err) => {
                eprintln!("error: cannot read `{file}`: {err}");
                return EXIT_USAGE;
            }
        }
    }
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut reports = Vec::with_capacity(sources.len());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (file, bytes) in &sources {
        let loaded = load_bytes(bytes);
        let text = String::from_utf8_lossy(bytes);
        let errors = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        let warnings = loaded.diagnostics.len() - errors;
        let summary = loaded
            .pipeline
            .as_ref()
            .map(|p| (p.name.to_string(), plan(p)));
        if args.format == Format::Human {
            print_diagnostics(file, &text, &loaded.diagnostics, color);
            match &summary {
                Some((name, plan)) => {
                    let _ = writeln!(
                        out,
                        "{file}: ok: pipeline `{name}`, {} {}, {} {}{}",
                        plan.jobs.len(),
                        plural(plan.jobs.len(), "job", "jobs"),
                        plan.edges,
                        plural(plan.edges, "edge", "edges"),
                        if warnings > 0 {
                            format!(", {warnings} {}", plural(warnings, "warning", "warnings"))
                        } else {
                            String::new()
                        },
                    );
                }
                None => eprintln!(
                    "{file}: invalid: {errors} {}{}",
                    plural(errors, "error", "errors"),
                    if warnings > 0 {
                        format!(", {warnings} {}", plural(warnings, "warning", "warnings"))
                    } else {
                        String::new()
                    },
                ),
            }
        }
        reports.push(FileReport {
            file: file.clone(),
            valid: summary.is_some(),
            pipeline: summary.as_ref().map(|(name, _)| name.clone()),
            jobs: summary.as_ref().map(|(_, plan)| plan.jobs.len()),
            edges: summary.as_ref().map(|(_, plan)| plan.edges),
            errors,
            warnings,
            diagnostics: loaded.diagnostics,
        });
    }
    let valid = reports.iter().all(|r| r.valid);
    if args.format == Format::Json {
        let report = Report {
            valid,
            files: reports,
        };
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                let _ = writeln!(out, "{json}");
            }
            Err(err) => {
                eprintln!("error: cannot encode the report as JSON: {err}");
                return super::EXIT_INTERNAL;
            }
        }
    }
    if valid { EXIT_OK } else { EXIT_FAILED }
}

/// Prints diagnostics of `file` (whose text is `text`) on standard error, rustc-style.
pub fn print_diagnostics(file: &str, text: &str, diagnostics: &[Diagnostic], color: bool) {
    for diagnostic in diagnostics {
        eprint!("{}", diagnostic.render(file, text, color));
        eprintln!();
    }
}

fn plural(n: usize, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

/// Reads a file, or standard input for `-`, refusing anything far over the pipeline size limit
/// without reading it all.
pub fn read(file: &str) -> std::io::Result<Vec<u8>> {
    let limit = hodei_domain::yaml::Limits::default().max_bytes as u64 + 1;
    let mut bytes = Vec::new();
    if file == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)?;
    } else {
        let handle = std::fs::File::open(file)?;
        if handle.metadata()?.is_dir() {
            return Err(std::io::Error::other("it is a directory"));
        }
        handle.take(limit).read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}
