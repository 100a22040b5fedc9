//! The pure half of the local provider: where a job attempt's workspace lives, which directory,
//! command line and environment a step gets, the marker that names a step's processes, and how
//! an exit status becomes a [`StepExit`]. No I/O here; everything is table-tested below.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Env;
use hodei_domain::ports::{ProviderError, StepSpec};
use hodei_domain::state::{Attempt, StepExit};

/// The variable naming the Hodei store a step belongs to; `reap_orphans` matches on it so that
/// it never touches the processes of another Hodei on the same machine.
pub const INSTANCE_VAR: &str = "HODEI_PROVIDER_INSTANCE";
/// The variable naming the step a process belongs to:
/// `<job>/<job attempt>/<step index>/<step attempt>`, e.g. `7/1/0/2` (see `StepMarker`).
pub const STEP_VAR: &str = "HODEI_STEP";
/// The `PATH` a step gets when its environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The directory of a job attempt: `<base>/<run>-<job>-<attempt>`, e.g. `run-3-job-7-1`.
pub fn workspace_dir(base: &Path, run: RunId, job: JobId, attempt: Attempt) -> PathBuf {
    base.join(format!("{run}-{job}-{attempt}"))
}

/// The step's working directory: the workspace, or `dir` inside it. An absolute path or one
/// that climbs with `..` is refused, so a step starts inside its workspace.
pub fn working_dir(workspace: &Path, dir: Option<&str>) -> Result<PathBuf, ProviderError> {
    let Some(dir) = dir else {
        return Ok(workspace.to_path_buf());
    };
    for component in Path::new(dir).components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(start(format!(
                    "working directory `{dir}`: `..` is not allowed, the directory must stay \
                     inside the workspace"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(start(format!(
                    "working directory `{dir}`: expected a path relative to the workspace"
                )));
            }
        }
    }
    Ok(workspace.join(dir))
}

/// The program and the arguments before the script, from the step's shell command line.
pub fn shell(step: &StepSpec) -> Result<(&str, &[String]), ProviderError> {
    match step.shell.split_first() {
        Some((program, args)) if !program.is_empty() => Ok((program, args)),
        _ => Err(start(
            "the shell command line is empty: expected a program such as `/bin/sh -e -c`".into(),
        )),
    }
}

/// The complete environment of a step: exactly `env`, plus `PATH` when `env` has none, plus
/// the two markers (which win over variables of the same name in `env`).
pub fn step_env<'a>(
    env: &'a Env,
    instance: &'a str,
    marker: &'a str,
) -> Result<Vec<(&'a str, &'a str)>, ProviderError> {
    let mut vars = Vec::with_capacity(env.len() + 3);
    for (name, value) in env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(start(format!(
                "environment variable {name:?}: expected a non-empty name without `=` or NUL"
            )));
        }
        if value.contains('\0') {
            return Err(start(format!(
                "environment variable `{name}`: the value contains a NUL byte"
            )));
        }
        if name != INSTANCE_VAR && name != STEP_VAR {
            vars.push((name.as_str(), value.as_str()));
        }
    }
    if !env.contains_key("PATH") {
        vars.push(("PATH", DEFAULT_PATH));
    }
    vars.push((INSTANCE_VAR, instance));
    vars.push((STEP_VAR, marker));
    Ok(vars)
}

/// Which step a process belongs to: the value of [`STEP_VAR`],
/// `<job>/<job attempt>/<step index>/<step attempt>` with the job's number, e.g. `7/1/0/2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepMarker {
    pub job: JobId,
    pub job_attempt: Attempt,
    pub step: u32,
    pub step_attempt: Attempt,
}

impl StepMarker {
    /// Reads a marker back; `None` if it is not one.
    pub fn parse(text: &str) -> Option<StepMarker> {
        let mut parts = text.split('/');
        let job = JobId(parts.next()?.parse().ok()?);
        let job_attempt = Attempt::new(parts.next()?.parse().ok()?)?;
        let step = parts.next()?.parse().ok()?;
        let step_attempt = Attempt::new(parts.next()?.parse().ok()?)?;
        match parts.next() {
            None => Some(StepMarker {
                job,
                job_attempt,
                step,
                step_attempt,
            }),
            Some(_) => None,
        }
    }
}

impl fmt::Display for StepMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let StepMarker {
            job,
            job_attempt,
            step,
            step_attempt,
        } = self;
        write!(f, "{}/{job_attempt}/{step}/{step_attempt}", job.0)
    }
}

/// How a process ended, from `waitid`'s `si_code` and `si_status`; `None` for a code that is
/// not an end (stopped, continued).
pub fn step_exit(si_code: i32, si_status: i32) -> Option<StepExit> {
    match si_code {
        libc::CLD_EXITED => Some(StepExit::code(si_status)),
        libc::CLD_KILLED | libc::CLD_DUMPED => Some(StepExit::signal(si_status)),
        _ => None,
    }
}

fn start(reason: String) -> ProviderError {
    ProviderError::Start {
        reason,
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn attempt(n: u32) -> Attempt {
        Attempt::new(n).expect("attempts start at 1")
    }

    #[test]
    fn workspace_dirs_are_named_after_run_job_and_attempt() {
        let dir = workspace_dir(Path::new("/ws"), RunId(3), JobId(7), attempt(2));
        assert_eq!(dir, Path::new("/ws/run-3-job-7-2"));
    }

    #[test]
    fn working_dirs_stay_inside_the_workspace() {
        let ws = Path::new("/ws/run-1-job-1-1");
        let cases: [(Option<&str>, Option<&str>); 7] = [
            (None, Some("/ws/run-1-job-1-1")),
            (Some("sub"), Some("/ws/run-1-job-1-1/sub")),
            (Some("./a/b"), Some("/ws/run-1-job-1-1/./a/b")),
            (Some(""), Some("/ws/run-1-job-1-1/")),
            (Some("../other"), None),
            (Some("a/../../b"), None),
            (Some("/etc"), None),
        ];
        for (dir, expected) in cases {
            let got = working_dir(ws, dir);
            match expected {
                Some(path) => assert_eq!(got, Ok(PathBuf::from(path)), "{dir:?}"),
                None => assert!(
                    matches!(&got, Err(ProviderError::Start { reason, .. })
                        if reason.contains(dir.unwrap_or_default())),
                    "{dir:?} gave {got:?}"
                ),
            }
        }
    }

    fn spec(shell: &[&str]) -> StepSpec {
        StepSpec {
            index: 0,
            attempt: Attempt::FIRST,
            script: "true".into(),
            shell: shell.iter().map(|s| s.to_string()).collect(),
            env: Env::new(),
            working_dir: None,
        }
    }

    #[test]
    fn the_shell_is_its_first_word_and_an_empty_one_is_refused() {
        let step = spec(&["/bin/sh", "-e", "-c"]);
        let (program, args) = shell(&step).expect("a shell");
        assert_eq!((program, args), ("/bin/sh", &step.shell[1..]));
        assert!(matches!(
            shell(&spec(&[])),
            Err(ProviderError::Start { .. })
        ));
        assert!(matches!(
            shell(&spec(&[""])),
            Err(ProviderError::Start { .. })
        ));
    }

    #[test]
    fn the_environment_is_exactly_the_steps_plus_a_default_path_and_the_markers() {
        let env = Env::from([("A".into(), "1".into()), (STEP_VAR.into(), "forged".into())]);
        let vars = step_env(&env, "store-1", "7/1/0/1").expect("valid");
        let expected = [
            ("A", "1"),
            ("PATH", DEFAULT_PATH),
            (INSTANCE_VAR, "store-1"),
            (STEP_VAR, "7/1/0/1"),
        ];
        assert_eq!(vars, expected);

        let env = Env::from([("PATH".into(), "/opt/bin".into())]);
        let vars = step_env(&env, "i", "m").expect("valid");
        assert_eq!(vars[0], ("PATH", "/opt/bin"));
        assert_eq!(vars.len(), 3, "no second PATH: {vars:?}");
    }

    #[test]
    fn malformed_variables_are_refused_with_their_name() {
        for (name, value) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("GOOD_NAME", "a\0b")] {
            let env = Env::from([(name.to_owned(), value.to_owned())]);
            match step_env(&env, "i", "m") {
                Err(ProviderError::Start { reason, .. }) => {
                    assert!(reason.contains("environment variable"), "{reason}")
                }
                other => panic!("{name:?}={value:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn markers_read_back_and_reject_anything_else() {
        let marker = StepMarker {
            job: JobId(7),
            job_attempt: attempt(1),
            step: 0,
            step_attempt: attempt(2),
        };
        assert_eq!(marker.to_string(), "7/1/0/2");
        assert_eq!(StepMarker::parse("7/1/0/2"), Some(marker));
        for bad in [
            "",
            "7/1/0",
            "7/1/0/2/9",
            "7/0/0/1",
            "7/1/0/0",
            "x/1/0/1",
            "-7/1/0/1",
        ] {
            assert_eq!(StepMarker::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn exit_statuses_become_codes_or_signals() {
        assert_eq!(step_exit(libc::CLD_EXITED, 3), Some(StepExit::code(3)));
        assert_eq!(step_exit(libc::CLD_KILLED, 15), Some(StepExit::signal(15)));
        assert_eq!(step_exit(libc::CLD_DUMPED, 11), Some(StepExit::signal(11)));
        assert_eq!(step_exit(libc::CLD_STOPPED, 19), None);
    }

    proptest! {
        #[test]
        fn every_marker_reads_back(job: u64, ja in 1u32.., step: u32, sa in 1u32..) {
            let marker = StepMarker {
                job: JobId(job),
                job_attempt: attempt(ja),
                step,
                step_attempt: attempt(sa),
            };
            prop_assert_eq!(StepMarker::parse(&marker.to_string()), Some(marker));
        }
    }
}
