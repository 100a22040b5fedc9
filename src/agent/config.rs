//! `hodei agent`'s settings: flags, then `HODEI_*` variables (both read by clap), then the
//! configuration file (`--config`, `HODEI_CONFIG`, or `hodei-agent.toml` in the working
//! directory if it exists), then defaults. A bad value in the file is refused with the file,
//! the key, the value and what was expected; an unknown key with a suggestion.

use std::path::{Path, PathBuf};

use super::{Args, Settings};

/// The file read when neither `--config` nor `HODEI_CONFIG` is given, if it exists.
pub const DEFAULT_FILE: &str = "hodei-agent.toml";

/// The keys of the file and what each takes.
const KEYS: [(&str, &str); 9] = [
    (
        "server",
        "the server's URL, such as \"https://ci.example:8080\"",
    ),
    (
        "token",
        "a registration token (needed at the first start only)",
    ),
    ("name", "the agent's name, unique on the server"),
    ("labels", "a list of labels, such as [\"linux\", \"arm64\"]"),
    ("slots", "a number of jobs at once from 1 to 1024"),
    (
        "data",
        "a directory path (relative: to the file's directory)",
    ),
    (
        "ca",
        "the path of a PEM certificate (relative: to the file's directory)",
    ),
    ("grace_seconds", "a number of seconds from 0 to 86400"),
    (
        "run_as",
        "the name or uid of an unprivileged user of this machine",
    ),
];

/// The settings from `args` (flags and variables) completed by the configuration file.
pub(super) fn settings(mut args: Args) -> Result<Settings, String> {
    let file = match args.config.clone() {
        Some(path) => Some(path),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|err| {
            format!(
                "cannot read the configuration file {}: {err}",
                path.display()
            )
        })?;
        fill(&mut args, &path, &text)?;
    }
    let Some(server) = args.server else {
        return Err(
            "no server: give --server URL, HODEI_SERVER, or `server` in the configuration file"
                .into(),
        );
    };
    let run_as = match args.run_as.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(user) => Some(
            hodei_adapters::local::RunAs::checked(user.trim())
                .map_err(|err| format!("run_as: {err}"))?,
        ),
        None => None,
    };
    Ok(Settings {
        server,
        token: args.token,
        name: args.name,
        labels: args.labels,
        slots: args.slots,
        data: args.data.unwrap_or_else(|| PathBuf::from("hodei-agent")),
        ca: args.ca,
        grace: args.grace.unwrap_or(30),
        run_as,
        one_job: args.one_job.then(|| super::OneJob {
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout.unwrap_or(120).max(1)),
        }),
        credential: args.credential.filter(|c| !c.trim().is_empty()),
    })
}

/// Fills what flags and variables left unset from the file's text.
fn fill(args: &mut Args, path: &Path, text: &str) -> Result<(), String> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
        format!(
            "{}: not valid TOML: {}",
            path.display(),
            err.to_string().trim_end()
        )
    })?;
    for (key, value) in table {
        let Some((_, expected)) = KEYS.iter().find(|(name, _)| *name == key) else {
            let hint = hodei_domain::suggest::did_you_mean(&key, KEYS.iter().map(|(n, _)| *n))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            let keys: Vec<&str> = KEYS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "{}: unknown key `{key}`{hint}; the keys are {}",
                path.display(),
                keys.join(", ")
            ));
        };
        let bad = || {
            format!(
                "{}: `{key}` is {value}: expected {expected}",
                path.display()
            )
        };
        let text = || value.as_str().map(str::to_owned).ok_or_else(bad);
        let beside = |p: String| crate::config::beside(path, &p);
        match key.as_str() {
            "server" => set(&mut args.server, text()?),
            "token" => set(&mut args.token, text()?),
            "name" => set(&mut args.name, text()?),
            "run_as" => set(&mut args.run_as, text()?),
            "data" => set(&mut args.data, beside(text()?)),
            "ca" => set(&mut args.ca, beside(text()?)),
            "labels" => {
                let labels = value
                    .as_array()
                    .and_then(|items| {
                        items
                            .iter()
                            .map(|v| v.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(bad)?;
                if args.labels.is_empty() {
                    args.labels = labels;
                }
            }
            "slots" => {
                let slots = value
                    .as_integer()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(bad)?;
                set(&mut args.slots, slots);
            }
            "grace_seconds" => {
                let grace = value
                    .as_integer()
                    .and_then(|n| u64::try_from(n).ok())
                    .filter(|n| *n <= 86_400)
                    .ok_or_else(bad)?;
                set(&mut args.grace, grace);
            }
            _ => unreachable!("every key of KEYS is handled"),
        }
    }
    Ok(())
}

/// Sets what flags and variables left unset.
fn set<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> Args {
        let mut all = vec!["hodei-agent"];
        all.extend_from_slice(flags);
        Cli::try_parse_from(all).unwrap().args
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset_and_paths_are_taken_from_its_directory() {
        let mut given = args(&["--slots", "3"]);
        let text = "server = \"http://ci:8080\"\nslots = 8\nlabels = [\"arm64\"]\ndata = \"state\"\nca = \"/etc/ca.pem\"\ngrace_seconds = 5\n";
        fill(&mut given, Path::new("/etc/hodei/agent.toml"), text).unwrap();
        assert_eq!(given.server.as_deref(), Some("http://ci:8080"));
        assert_eq!(given.slots, Some(3), "the flag wins");
        assert_eq!(given.labels, ["arm64"]);
        assert_eq!(given.data, Some(PathBuf::from("/etc/hodei/state")));
        assert_eq!(given.ca, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(given.grace, Some(5));
    }

    #[test]
    fn a_bad_value_or_an_unknown_key_says_where_and_what_was_expected() {
        let file = Path::new("agent.toml");
        let err = fill(&mut args(&[]), file, "slots = 0\n").unwrap_err();
        assert!(
            err.starts_with(
                "agent.toml: `slots` is 0: expected a number of jobs at once from 1 to 1024"
            ),
            "{err}"
        );
        let err = fill(&mut args(&[]), file, "label = [\"x\"]\n").unwrap_err();
        assert!(
            err.contains("unknown key `label` (did you mean `labels`?)"),
            "{err}"
        );
        let err = fill(&mut args(&[]), file, "server = 8080\n").unwrap_err();
        assert!(
            err.contains("`server` is 8080: expected the server's URL"),
            "{err}"
        );
        let err = fill(&mut args(&[]), file, "server = \n").unwrap_err();
        assert!(err.contains("not valid TOML"), "{err}");
    }

    #[test]
    fn without_a_server_anywhere_the_agent_says_where_to_give_one() {
        let mut given = args(&[]);
        given.config = Some(PathBuf::from("/nonexistent/agent.toml"));
        let err = settings(given).err().unwrap();
        assert!(
            err.contains("cannot read the configuration file /nonexistent/agent.toml"),
            "{err}"
        );
        let err = settings(args(&["--data", "x"])).err().unwrap();
        assert!(err.contains("no server"), "{err}");
    }
}
