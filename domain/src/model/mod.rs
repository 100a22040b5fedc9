//! The pipeline as users write it, whether in YAML or with the Rust builder: one model for both.
//!
//! Values that have a syntax of their own are newtypes that validate when they are made:
//! [`Name`], [`Label`], [`Image`], [`Duration`], [`Cpu`], [`Memory`], [`Cron`]. Rules that span
//! several values (references between jobs, cycles, limits) live in [`crate::validate`].
//! Every key is documented for users in `docs/pipeline.md`.

mod cron;
mod names;
mod quantity;

use std::collections::BTreeMap;

pub use cron::Cron;
pub use names::{Image, Label, Name, is_env_name};
pub use quantity::{Cpu, Duration, Memory};

use crate::expr::Expr;

/// A value that does not have the syntax its key needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value `{value}`: expected {expected}")]
pub struct ValueError {
    /// The text that was given (cut to 80 characters).
    pub value: String,
    /// What was expected instead.
    pub expected: &'static str,
}

impl ValueError {
    pub(crate) fn new(value: &str, expected: &'static str) -> ValueError {
        let value = match value.char_indices().nth(80) {
            Some((cut, _)) => format!("{}…", &value[..cut]),
            None => value.to_owned(),
        };
        ValueError { value, expected }
    }
}

/// Environment variables by name. Values are text; the names are checked by validation.
pub type Env = BTreeMap<String, String>;

/// A pipeline definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub name: Name,
    pub description: Option<String>,
    pub on: Triggers,
    /// Run parameters by name; they reach steps as environment variables of the same name.
    pub parameters: BTreeMap<String, Parameter>,
    pub env: Env,
    /// The stored secrets the pipeline's steps get, by name, as environment variables of the
    /// same name (masked in every log). Their values come from Hodei's secret store (or, under
    /// `hodei run`, from the environment of Hodei itself).
    pub secrets: Vec<String>,
    /// How a run from a repository puts the code in each job's workspace.
    pub checkout: CheckoutSettings,
    pub defaults: Defaults,
    /// Jobs in the order they are written.
    pub jobs: Vec<Job>,
    pub post: Hooks,
}

impl Pipeline {
    /// The job named `name`, if any.
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|job| job.name.as_str() == name)
    }
}

/// What starts a run. Without an `on` key a pipeline runs when asked to (`manual`) only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Triggers {
    pub push: Option<RefFilter>,
    pub pull_request: Option<RefFilter>,
    pub schedule: Vec<Cron>,
    pub manual: bool,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            push: None,
            pull_request: None,
            schedule: Vec::new(),
            manual: true,
        }
    }
}

/// How a run from a registered repository puts the code in each job's workspace (`checkout:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckoutSettings {
    /// `checkout: false` leaves workspaces empty.
    pub enabled: bool,
    /// Commits of history to fetch; `None` for all of it. Default 1 (shallow).
    pub depth: Option<u32>,
    /// Check out the repository's submodules too.
    pub submodules: bool,
}

impl Default for CheckoutSettings {
    fn default() -> Self {
        CheckoutSettings {
            enabled: true,
            depth: Some(1),
            submodules: false,
        }
    }
}

impl Triggers {
    /// The kinds of start that `on:` allows, in a fixed order: `push`, `pull_request`,
    /// `schedule`, `manual`.
    pub fn kinds(&self) -> Vec<&'static str> {
        [
            (self.push.is_some(), "push"),
            (self.pull_request.is_some(), "pull_request"),
            (!self.schedule.is_empty(), "schedule"),
            (self.manual, "manual"),
        ]
        .into_iter()
        .filter_map(|(on, kind)| on.then_some(kind))
        .collect()
    }
}

/// Which pushes or pull requests start a run: glob patterns (`main`, `release/*`, `**`).
/// An empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefFilter {
    pub branches: Vec<String>,
    pub tags: Vec<String>,
    pub paths: Vec<String>,
    /// A newer push to a branch (or to a pull request's head) cancels the runs of this
    /// pipeline that it supersedes: those of the same branch still going.
    pub cancel_superseded: bool,
}

/// A run parameter. Without a default it must be given when the run starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parameter {
    pub default: Option<String>,
    /// When not empty, the only values accepted.
    pub choices: Vec<String>,
    pub description: Option<String>,
}

/// Values every job takes unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Defaults {
    pub image: Option<Image>,
    pub pull: Option<PullPolicy>,
    pub runs_on: Vec<Label>,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub shell: Option<Shell>,
}

/// When a container image is pulled from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PullPolicy {
    Never,
    IfNotPresent,
    Always,
}

impl PullPolicy {
    /// Every policy with its spelling in YAML.
    pub const ALL: [(&'static str, PullPolicy); 3] = [
        ("never", PullPolicy::Never),
        ("if-not-present", PullPolicy::IfNotPresent),
        ("always", PullPolicy::Always),
    ];
}

/// How often a failed step or job is tried again, and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    /// Attempts after the first one: `retry: 2` means at most three attempts.
    pub max: u32,
    pub delay: Option<Duration>,
}

impl Retry {
    /// The largest `max` accepted.
    pub const LIMIT: u32 = 10;
}

/// The program a step's `run` text is handed to, as its last argument.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shell {
    /// Shared: every job of a plan gets the pipeline's default shell, and a copy is then a
    /// count, not an allocation per word.
    #[serde(with = "shared_argv")]
    argv: std::sync::Arc<[String]>,
}

/// [`Shell::argv`] in serde as the list it is.
mod shared_argv {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        argv: &Arc<[String]>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        argv[..].serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Arc<[String]>, D::Error> {
        Vec::<String>::deserialize(deserializer).map(Arc::from)
    }
}

impl Shell {
    /// `/bin/sh -e -c`: stops at the first failing command.
    pub fn sh() -> Shell {
        Shell::from_argv(["/bin/sh", "-e", "-c"])
    }

    /// `bash --noprofile --norc -eo pipefail -c`: also fails on a failing command in a pipe.
    pub fn bash() -> Shell {
        Shell::from_argv(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"])
    }

    /// A shell by its short name (`sh`, `bash`) or, for any other text, the words of a command
    /// line such as `python3 -c`.
    pub fn named(text: &str) -> Option<Shell> {
        match text.trim() {
            "sh" => Some(Shell::sh()),
            "bash" => Some(Shell::bash()),
            other => {
                let argv: Vec<&str> = other.split_whitespace().collect();
                (!argv.is_empty()).then(|| Shell::from_argv(argv))
            }
        }
    }

    /// A shell from the words of its command line.
    pub fn from_argv<I, S>(argv: I) -> Shell
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Shell {
            argv: argv
                .into_iter()
                .map(Into::into)
                .collect::<Vec<String>>()
                .into(),
        }
    }

    /// The command line the script is appended to.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }
}

/// One job: steps that run in order on one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: Name,
    /// Shared with the jobs of every plan made from the pipeline: planning copies none.
    pub steps: std::sync::Arc<[Step]>,
    /// Jobs that must succeed first.
    pub needs: Vec<Name>,
    /// Labels the worker must all have.
    pub runs_on: Vec<Label>,
    pub image: Option<Image>,
    pub pull: Option<PullPolicy>,
    /// The user the job's processes run as, inside its container.
    pub user: Option<String>,
    pub services: BTreeMap<Name, Service>,
    pub resources: Resources,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    pub when: Option<When>,
    pub matrix: Option<Matrix>,
    /// At most one job of a concurrency group runs at a time, across all runs.
    pub concurrency: Option<Name>,
    pub approval: Option<Approval>,
    pub artifacts: Vec<String>,
    pub cache: Option<Cache>,
    pub env: Env,
    pub post: Hooks,
    /// A failure of this job does not fail the run, nor skip its dependents.
    pub continue_on_error: bool,
    /// Higher runs first when jobs compete for workers: from -100 to 100.
    pub priority: i32,
}

impl Job {
    /// The lowest and highest priority accepted.
    pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -100..=100;

    /// A job with this name and nothing else set.
    pub fn new(name: Name) -> Job {
        Job {
            name,
            steps: std::sync::Arc::default(),
            needs: Vec::new(),
            runs_on: Vec::new(),
            image: None,
            pull: None,
            user: None,
            services: BTreeMap::new(),
            resources: Resources::default(),
            timeout: None,
            retry: None,
            when: None,
            matrix: None,
            concurrency: None,
            approval: None,
            artifacts: Vec::new(),
            cache: None,
            env: Env::new(),
            post: Hooks::default(),
            continue_on_error: false,
            priority: 0,
        }
    }
}

/// One command of a job.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Step {
    pub name: Option<String>,
    /// The script, handed to the shell as one argument: never spliced with parameters or secrets.
    pub run: String,
    pub env: Env,
    pub timeout: Option<Duration>,
    pub retry: Option<Retry>,
    /// Relative to the job's workspace.
    pub working_dir: Option<String>,
    pub shell: Option<Shell>,
    pub continue_on_error: bool,
}

impl Step {
    /// A step that runs `script` and has nothing else set.
    pub fn run(script: impl Into<String>) -> Step {
        Step {
            name: None,
            run: script.into(),
            env: Env::new(),
            timeout: None,
            retry: None,
            working_dir: None,
            shell: None,
            continue_on_error: false,
        }
    }
}

/// Steps that run after the pipeline or a job, by its outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    pub always: Vec<Step>,
    pub success: Vec<Step>,
    pub failure: Vec<Step>,
    pub cancelled: Vec<Step>,
}

impl Hooks {
    /// Whether no hook is set.
    pub fn is_empty(&self) -> bool {
        self.always.is_empty()
            && self.success.is_empty()
            && self.failure.is_empty()
            && self.cancelled.is_empty()
    }
}

/// A container started beside a job, reachable by its name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    pub image: Image,
    pub env: Env,
    pub command: Vec<String>,
    /// TCP ports checked for readiness.
    pub ports: Vec<u16>,
}

/// CPU and memory a job needs on its worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resources {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
}

/// A condition on the run (`branch == 'main'`) that decides whether a job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct When {
    /// Shared: every instance of a job in a plan has its job's condition.
    expr: std::sync::Arc<Expr>,
}

impl When {
    /// Parses a condition; see `docs/expressions.md`.
    pub fn parse(source: &str) -> Result<When, crate::expr::ExprError> {
        crate::expr::parse(source).map(|expr| When {
            expr: std::sync::Arc::new(expr),
        })
    }

    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        self.expr.source()
    }
}

/// Copies of a job, one per combination of the axes' values, each value an environment variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matrix {
    /// Axes in the order they are written.
    pub axes: Vec<(String, Vec<String>)>,
    /// Combinations added to the product (each names a value for every axis, or new variables).
    pub include: Vec<BTreeMap<String, String>>,
    /// Combinations taken out of the product: every variable given must match.
    pub exclude: Vec<BTreeMap<String, String>>,
}

/// A manual gate: the job waits until someone with `role` approves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Approval {
    pub role: Role,
}

/// What an API token may do. Each role may do everything the roles before it may: a viewer
/// reads; an operator also applies pipelines, triggers and cancels runs; an admin also manages
/// tokens (and, later, workers).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    /// Every role with its spelling.
    pub const ALL: [(&'static str, Role); 3] = [
        ("viewer", Role::Viewer),
        ("operator", Role::Operator),
        ("admin", Role::Admin),
    ];

    /// The role's name, as pipelines, the API and the store spell it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether a caller with this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A role name that is none of `viewer`, `operator`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}`: expected one of viewer, operator, admin")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        Role::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, role)| *role)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// Files kept between runs under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// May use `{{ hash('FILE') }}`, `{{ branch }}`, `{{ job }}`, `{{ pipeline }}` and
    /// `{{ matrix.AXIS }}`.
    pub key: String,
    /// Keys to restore from when nothing is saved under `key` (templates too), in order; each
    /// matches the newest entry whose key starts with it.
    pub fallback: Vec<String>,
    pub paths: Vec<String>,
}

#[cfg(test)]
mod role_tests {
    use super::Role;

    #[test]
    fn each_role_may_do_what_the_weaker_roles_may_and_no_more() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
    }

    #[test]
    fn roles_parse_from_their_names_only() {
        for (name, role) in Role::ALL {
            assert_eq!(name.parse::<Role>(), Ok(role));
            assert_eq!(role.name(), name);
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role `root`: expected one of viewer, operator, admin"
        );
    }
}
