//! Pipelines written in Rust: builders that produce the same [`Pipeline`] the YAML format does,
//! and the macros `pipeline!`, `job!`, `sh!`, `retry!` and `timeout!` on top of them.
//!
//! Text that has a syntax (names, images, CPU, memory, `when`) is checked when the pipeline is
//! built; [`PipelineBuilder::build`] then runs the same validation as for YAML and returns every
//! problem at once, each with its path.
//!
//! ```
//! use hodei_domain::{job, pipeline, retry, sh, timeout};
//!
//! let pipeline = pipeline! {
//!     name: "web",
//!     env: { "RUST_LOG" => "info" },
//!     jobs: [
//!         job! { name: "build", steps: [sh!("cargo build")] },
//!         job! {
//!             name: "test",
//!             needs: ["build"],
//!             steps: [sh!("cargo test", timeout: timeout!(10m), retry: retry!(2))],
//!         },
//!     ],
//! }
//! .expect("a valid pipeline");
//! assert_eq!(pipeline.jobs.len(), 2);
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;

use crate::diagnostic::{Code, Diagnostic, Path};
use crate::model::{
    Approval, Cache, Duration, Env, Hooks, Job, Matrix, Name, Parameter, Pipeline, PullPolicy,
    RefFilter, Retry, Role, Service, Shell, Step, Triggers, ValueError, When,
};

/// Problems found while building, each at a path relative to the builder.
#[derive(Debug, Clone, Default)]
struct Problems(Vec<Diagnostic>);

impl Problems {
    fn parse<T: FromStr<Err = ValueError>>(&mut self, text: &str, path: Path) -> Option<T> {
        match text.parse() {
            Ok(value) => Some(value),
            Err(err) => {
                self.0.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        path,
                        format!("invalid value `{}`", err.value),
                    )
                    .expected(err.expected),
                );
                None
            }
        }
    }

    fn adopt(&mut self, prefix: &Path, other: Problems) {
        self.0.extend(other.0.into_iter().map(|mut d| {
            d.path = prefix.join(&d.path);
            d
        }));
    }
}

/// Builds a [`Pipeline`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PipelineBuilder {
    pipeline: Pipeline,
    problems: Problems,
}

impl PipelineBuilder {
    /// A pipeline named `name`, triggered manually, with no job yet.
    pub fn new(name: &str) -> Self {
        let mut problems = Problems::default();
        let name = problems
            .parse(name, Path::root().key("name"))
            .unwrap_or_else(|| Name::unchecked(name));
        PipelineBuilder {
            pipeline: Pipeline {
                name,
                description: None,
                on: Triggers::default(),
                parameters: BTreeMap::new(),
                env: Env::new(),
                secrets: Vec::new(),
                checkout: Default::default(),
                defaults: Default::default(),
                jobs: Vec::new(),
                post: Hooks::default(),
            },
            problems,
        }
    }

    /// A stored secret the pipeline's steps get as the environment variable `name`.
    pub fn secret(mut self, name: &str) -> Self {
        self.pipeline.secrets.push(name.to_owned());
        self
    }

    /// A description shown with the pipeline.
    pub fn description(mut self, text: &str) -> Self {
        self.pipeline.description = Some(text.to_owned());
        self
    }

    fn triggers(&mut self) -> &mut Triggers {
        // The first trigger set replaces the implicit `manual`, as an `on` key does in YAML.
        if self.pipeline.on == Triggers::default() {
            self.pipeline.on.manual = false;
        }
        &mut self.pipeline.on
    }

    /// Runs on pushes to these branches (all branches when empty).
    pub fn on_push<'a>(mut self, branches: impl IntoIterator<Item = &'a str>) -> Self {
        let filter = RefFilter {
            branches: branches.into_iter().map(str::to_owned).collect(),
            ..RefFilter::default()
        };
        self.triggers().push = Some(filter);
        self
    }

    /// Runs on pull requests into these branches (all branches when empty).
    pub fn on_pull_request<'a>(mut self, branches: impl IntoIterator<Item = &'a str>) -> Self {
        let filter = RefFilter {
            branches: branches.into_iter().map(str::to_owned).collect(),
            ..RefFilter::default()
        };
        self.triggers().pull_request = Some(filter);
        self
    }

    /// Runs on a cron schedule such as `0 3 * * *`.
    pub fn schedule(mut self, cron: &str) -> Self {
        let index = self.pipeline.on.schedule.len();
        if let Some(cron) = self
            .problems
            .parse(cron, Path::root().key("on").key("schedule").index(index))
        {
            self.triggers().schedule.push(cron);
        }
        self
    }

    /// Can be started by hand.
    pub fn manual(mut self, manual: bool) -> Self {
        self.triggers().manual = manual;
        self
    }

    /// A parameter with a default value and, when not empty, the only values accepted.
    pub fn param<'a>(
        mut self,
        name: &str,
        default: &str,
        choices: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let parameter = Parameter {
            default: Some(default.to_owned()),
            choices: choices.into_iter().map(str::to_owned).collect(),
            description: None,
        };
        self.pipeline.parameters.insert(name.to_owned(), parameter);
        self
    }

    /// A parameter that must be given when the run starts.
    pub fn required_param(mut self, name: &str) -> Self {
        self.pipeline
            .parameters
            .insert(name.to_owned(), Parameter::default());
        self
    }

    /// An environment variable for every job.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.pipeline.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The image of jobs that set none.
    pub fn default_image(mut self, image: &str) -> Self {
        self.pipeline.defaults.image = self
            .problems
            .parse(image, Path::root().key("defaults").key("image"));
        self
    }

    /// The pull policy of jobs that set none.
    pub fn default_pull(mut self, pull: PullPolicy) -> Self {
        self.pipeline.defaults.pull = Some(pull);
        self
    }

    /// The worker labels of jobs that set none.
    pub fn default_runs_on<'a>(mut self, labels: impl IntoIterator<Item = &'a str>) -> Self {
        let path = Path::root().key("defaults").key("runs_on");
        self.pipeline.defaults.runs_on = labels
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| self.problems.parse(l, path.index(i)))
            .collect();
        self
    }

    /// The timeout of jobs that set none.
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.pipeline.defaults.timeout = Some(timeout);
        self
    }

    /// The retry policy of jobs that set none.
    pub fn default_retry(mut self, retry: Retry) -> Self {
        self.pipeline.defaults.retry = Some(retry);
        self
    }

    /// The shell of every step: `sh`, `bash`, or a command line such as `python3 -c`.
    pub fn default_shell(mut self, shell: &str) -> Self {
        self.pipeline.defaults.shell = Shell::named(shell);
        self
    }

    /// Adds a job.
    pub fn job(mut self, job: JobBuilder) -> Self {
        let prefix = Path::root().key("jobs").key(job.job.name.as_str());
        self.problems.adopt(&prefix, job.problems);
        self.pipeline.jobs.push(job.job);
        self
    }

    /// Adds jobs, in order.
    pub fn jobs(self, jobs: impl IntoIterator<Item = JobBuilder>) -> Self {
        jobs.into_iter().fold(self, PipelineBuilder::job)
    }

    /// Steps run after every run, whatever its outcome.
    pub fn post_always(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.pipeline.post;
        set_hook(&mut self.problems, hooks, Hook::Always, steps);
        self
    }

    /// Steps run after a successful run.
    pub fn post_success(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.pipeline.post;
        set_hook(&mut self.problems, hooks, Hook::Success, steps);
        self
    }

    /// Steps run after a failed run.
    pub fn post_failure(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.pipeline.post;
        set_hook(&mut self.problems, hooks, Hook::Failure, steps);
        self
    }

    /// Steps run after a cancelled run.
    pub fn post_cancelled(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.pipeline.post;
        set_hook(&mut self.problems, hooks, Hook::Cancelled, steps);
        self
    }

    /// The pipeline, or every problem found while building it and validating it.
    pub fn build(self) -> Result<Pipeline, Vec<Diagnostic>> {
        let mut problems = self.problems.0;
        problems.extend(crate::validate::validate(&self.pipeline));
        if problems.iter().any(Diagnostic::is_error) {
            Err(problems)
        } else {
            Ok(self.pipeline)
        }
    }
}

/// Which post hook a builder method sets.
#[derive(Clone, Copy)]
enum Hook {
    Always,
    Success,
    Failure,
    Cancelled,
}

fn set_hook(
    problems: &mut Problems,
    hooks: &mut Hooks,
    hook: Hook,
    steps: impl IntoIterator<Item = StepBuilder>,
) {
    let (key, slot) = match hook {
        Hook::Always => ("always", &mut hooks.always),
        Hook::Success => ("success", &mut hooks.success),
        Hook::Failure => ("failure", &mut hooks.failure),
        Hook::Cancelled => ("cancelled", &mut hooks.cancelled),
    };
    *slot = adopt_steps(problems, &Path::root().key("post").key(key), steps);
}

fn adopt_steps(
    problems: &mut Problems,
    path: &Path,
    steps: impl IntoIterator<Item = StepBuilder>,
) -> Vec<Step> {
    steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            problems.adopt(&path.index(i), step.problems);
            step.step
        })
        .collect()
}

/// Builds a [`Job`].
#[derive(Debug, Clone)]
#[must_use]
pub struct JobBuilder {
    job: Job,
    problems: Problems,
}

impl JobBuilder {
    /// A job named `name` with no step yet.
    pub fn new(name: &str) -> Self {
        let mut problems = Problems::default();
        let name = problems
            .parse(name, Path::root())
            .unwrap_or_else(|| Name::unchecked(name));
        JobBuilder {
            job: Job::new(name),
            problems,
        }
    }

    /// Adds steps, in order.
    pub fn steps(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let mut all = self.job.steps.to_vec();
        let start = all.len();
        for (i, step) in steps.into_iter().enumerate() {
            self.problems
                .adopt(&Path::root().key("steps").index(start + i), step.problems);
            all.push(step.step);
        }
        self.job.steps = all.into();
        self
    }

    /// Adds one step.
    pub fn step(self, step: StepBuilder) -> Self {
        self.steps([step])
    }

    /// Jobs that must succeed first.
    pub fn needs<'a>(mut self, jobs: impl IntoIterator<Item = &'a str>) -> Self {
        let path = Path::root().key("needs");
        self.job.needs = jobs
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| self.problems.parse(n, path.index(i)))
            .collect();
        self
    }

    /// Labels the worker must have.
    pub fn runs_on<'a>(mut self, labels: impl IntoIterator<Item = &'a str>) -> Self {
        let path = Path::root().key("runs_on");
        self.job.runs_on = labels
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| self.problems.parse(l, path.index(i)))
            .collect();
        self
    }

    /// The container image the job runs in.
    pub fn image(mut self, image: &str) -> Self {
        self.job.image = self.problems.parse(image, Path::root().key("image"));
        self
    }

    /// When the image is pulled.
    pub fn pull(mut self, pull: PullPolicy) -> Self {
        self.job.pull = Some(pull);
        self
    }

    /// The user the job runs as inside its container.
    pub fn user(mut self, user: &str) -> Self {
        self.job.user = Some(user.to_owned());
        self
    }

    /// A service container beside the job, reachable by `name`.
    pub fn service(mut self, name: &str, service: ServiceBuilder) -> Self {
        let path = Path::root().key("services").key(name);
        self.problems.adopt(&path, service.problems);
        if let (Some(name), Some(service)) =
            (self.problems.parse::<Name>(name, path), service.service)
        {
            self.job.services.insert(name, service);
        }
        self
    }

    /// The CPU the job needs: `500m`, `2`.
    pub fn cpu(mut self, cpu: &str) -> Self {
        self.job.resources.cpu = self
            .problems
            .parse(cpu, Path::root().key("resources").key("cpu"));
        self
    }

    /// The memory the job needs: `512Mi`, `2Gi`.
    pub fn memory(mut self, memory: &str) -> Self {
        self.job.resources.memory = self
            .problems
            .parse(memory, Path::root().key("resources").key("memory"));
        self
    }

    /// How long the whole job may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.job.timeout = Some(timeout);
        self
    }

    /// How often the job is tried again after failing.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.job.retry = Some(retry);
        self
    }

    /// A condition on the run, such as `branch == 'main'`.
    pub fn when(mut self, condition: &str) -> Self {
        match When::parse(condition) {
            Ok(when) => self.job.when = Some(when),
            Err(err) => {
                let mut diag =
                    Diagnostic::error(Code::Expression, Path::root().key("when"), err.message);
                if let Some(expected) = err.expected {
                    diag = diag.expected(expected);
                }
                self.problems.0.push(diag);
            }
        }
        self
    }

    /// A matrix variable and its values; one job instance per combination of all variables.
    pub fn matrix<'a>(mut self, variable: &str, values: impl IntoIterator<Item = &'a str>) -> Self {
        let values = values.into_iter().map(str::to_owned).collect();
        self.job
            .matrix
            .get_or_insert_with(Matrix::default)
            .axes
            .push((variable.to_owned(), values));
        self
    }

    /// A combination left out of the matrix.
    pub fn exclude<'a>(
        mut self,
        combination: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let combination = combination
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.job
            .matrix
            .get_or_insert_with(Matrix::default)
            .exclude
            .push(combination);
        self
    }

    /// A combination added to the matrix.
    pub fn include<'a>(
        mut self,
        combination: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Self {
        let combination = combination
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.job
            .matrix
            .get_or_insert_with(Matrix::default)
            .include
            .push(combination);
        self
    }

    /// A concurrency group: one job of the group runs at a time.
    pub fn concurrency(mut self, group: &str) -> Self {
        self.job.concurrency = self.problems.parse(group, Path::root().key("concurrency"));
        self
    }

    /// A manual gate: someone with `role` must approve the job.
    pub fn approval(mut self, role: Role) -> Self {
        self.job.approval = Some(Approval { role });
        self
    }

    /// Files kept after the job.
    pub fn artifacts<'a>(mut self, paths: impl IntoIterator<Item = &'a str>) -> Self {
        self.job.artifacts = paths.into_iter().map(str::to_owned).collect();
        self
    }

    /// Files kept between runs under a key.
    pub fn cache<'a>(mut self, key: &str, paths: impl IntoIterator<Item = &'a str>) -> Self {
        self.job.cache = Some(Cache {
            key: key.to_owned(),
            fallback: Vec::new(),
            paths: paths.into_iter().map(str::to_owned).collect(),
        });
        self
    }

    /// An environment variable for the job's steps.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.job.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Steps run after the job, whatever its outcome.
    pub fn post_always(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.job.post;
        set_hook(&mut self.problems, hooks, Hook::Always, steps);
        self
    }

    /// Steps run after the job succeeded.
    pub fn post_success(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.job.post;
        set_hook(&mut self.problems, hooks, Hook::Success, steps);
        self
    }

    /// Steps run after the job failed.
    pub fn post_failure(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.job.post;
        set_hook(&mut self.problems, hooks, Hook::Failure, steps);
        self
    }

    /// Steps run after the job was cancelled.
    pub fn post_cancelled(mut self, steps: impl IntoIterator<Item = StepBuilder>) -> Self {
        let hooks = &mut self.job.post;
        set_hook(&mut self.problems, hooks, Hook::Cancelled, steps);
        self
    }

    /// Whether a failure of this job leaves the run and the dependents going.
    pub fn continue_on_error(mut self, yes: bool) -> Self {
        self.job.continue_on_error = yes;
        self
    }

    /// Higher runs first: from -100 to 100.
    pub fn priority(mut self, priority: i32) -> Self {
        self.job.priority = priority;
        self
    }
}

/// Builds a [`Step`].
#[derive(Debug, Clone)]
#[must_use]
pub struct StepBuilder {
    step: Step,
    problems: Problems,
}

impl StepBuilder {
    /// A step that runs `script`.
    pub fn new(script: &str) -> Self {
        StepBuilder {
            step: Step::run(script),
            problems: Problems::default(),
        }
    }

    /// The step's name in logs and the console.
    pub fn name(mut self, name: &str) -> Self {
        self.step.name = Some(name.to_owned());
        self
    }

    /// An environment variable for this step.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.step.env.insert(name.to_owned(), value.to_owned());
        self
    }

    /// How long the step may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.step.timeout = Some(timeout);
        self
    }

    /// How often the step is tried again after failing.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.step.retry = Some(retry);
        self
    }

    /// The directory the step runs in, relative to the workspace.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.step.working_dir = Some(dir.to_owned());
        self
    }

    /// `sh`, `bash`, or a command line such as `python3 -c`.
    pub fn shell(mut self, shell: &str) -> Self {
        self.step.shell = Shell::named(shell);
        self
    }

    /// Whether a failure of this step lets the job go on.
    pub fn continue_on_error(mut self, yes: bool) -> Self {
        self.step.continue_on_error = yes;
        self
    }
}

/// Builds a [`Service`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ServiceBuilder {
    service: Option<Service>,
    problems: Problems,
}

impl ServiceBuilder {
    /// A service running `image`.
    pub fn new(image: &str) -> Self {
        let mut problems = Problems::default();
        let service = problems
            .parse(image, Path::root().key("image"))
            .map(|image| Service {
                image,
                env: Env::new(),
                command: Vec::new(),
                ports: Vec::new(),
            });
        ServiceBuilder { service, problems }
    }

    /// An environment variable of the service.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        if let Some(service) = &mut self.service {
            service.env.insert(name.to_owned(), value.to_owned());
        }
        self
    }

    /// The command the service runs instead of its image's.
    pub fn command<'a>(mut self, argv: impl IntoIterator<Item = &'a str>) -> Self {
        if let Some(service) = &mut self.service {
            service.command = argv.into_iter().map(str::to_owned).collect();
        }
        self
    }

    /// A TCP port checked for readiness.
    pub fn port(mut self, port: u16) -> Self {
        if let Some(service) = &mut self.service {
            service.ports.push(port);
        }
        self
    }
}

/// `retry!(2)` or `retry!(2, delay: 10s)`: a [`Retry`] policy.
#[macro_export]
macro_rules! retry {
    ($max:expr) => {
        $crate::model::Retry { max: $max, delay: None }
    };
    ($max:expr, delay: $($delay:tt)+) => {
        $crate::model::Retry { max: $max, delay: Some($crate::timeout!($($delay)+)) }
    };
}

/// `timeout!(10m)`, `timeout!(1h30m)` or `timeout!("90s")`: a [`Duration`] checked at compile time.
#[macro_export]
macro_rules! timeout {
    ($($text:tt)+) => {
        const { $crate::model::Duration::parse_const(stringify!($($text)+)) }
    };
}

/// `sh!("cargo test")` or `sh!("cargo test", name: "test", timeout: timeout!(10m))`: a step.
#[macro_export]
macro_rules! sh {
    ($script:expr $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($crate::builder::StepBuilder::new($script); $($($rest)*)?)
    };
}

/// `job! { name: "build", needs: ["lint"], steps: [sh!("make")] }`: a job. Every key is a method
/// of [`JobBuilder`]; `env: { "K" => "V" }`, `matrix: { os: ["a", "b"] }` and
/// `services: { "db" => ServiceBuilder::new("postgres:16") }` take mappings.
#[macro_export]
macro_rules! job {
    (name: $name:expr $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($crate::builder::JobBuilder::new($name); $($($rest)*)?)
    };
}

/// `pipeline! { name: "web", env: { "K" => "V" }, jobs: [job! { .. }] }`: a built and validated
/// pipeline, `Result<Pipeline, Vec<Diagnostic>>`. Every key is a method of [`PipelineBuilder`].
#[macro_export]
macro_rules! pipeline {
    (name: $name:expr $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($crate::builder::PipelineBuilder::new($name); $($($rest)*)?).build()
    };
}

/// The key-by-key expansion shared by the builder macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __hodei_chain {
    ($acc:expr;) => { $acc };
    ($acc:expr; env: { $($k:expr => $v:expr),* $(,)? } $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($acc $(.env($k, $v))*; $($($rest)*)?)
    };
    ($acc:expr; services: { $($k:expr => $v:expr),* $(,)? } $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($acc $(.service($k, $v))*; $($($rest)*)?)
    };
    ($acc:expr; matrix: { $($axis:ident : [$($v:expr),* $(,)?]),* $(,)? } $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($acc $(.matrix(stringify!($axis), [$($v),*]))*; $($($rest)*)?)
    };
    ($acc:expr; $key:ident : ($($arg:expr),* $(,)?) $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($acc.$key($($arg),*); $($($rest)*)?)
    };
    ($acc:expr; $key:ident : $value:expr $(, $($rest:tt)*)?) => {
        $crate::__hodei_chain!($acc.$key($value); $($($rest)*)?)
    };
}
