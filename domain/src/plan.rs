//! From a valid pipeline to the jobs a run will hold: matrix expansion (`test (os=deb, ver=1)`),
//! defaults applied, the `needs` DAG between instances, and — when a run starts — the resolution
//! of its inputs: parameters checked against the pipeline, `when` conditions evaluated, and the
//! environment each step gets.
//!
//! Parameters and secrets reach steps only as environment variables: a step's `run` text is never
//! spliced with them, so no input can inject shell code.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use crate::expr::EvalContext;
use crate::model::{
    Approval, Cache, Duration, Env, Hooks, Image, Label, Matrix, Name, Parameter, Pipeline,
    PullPolicy, Resources, Retry, Service, Shell, Step, When,
};
use crate::state::{Gate, JobPolicy, MaxAttempts};
use crate::suggest::did_you_mean;

/// The variables of one matrix instance, in the order the axes are written.
pub type Instance = Vec<(String, String)>;

/// Every instance of a matrix: the product of the axes in the order written (the last axis
/// varies fastest), less the excluded combinations. Then each `include` entry either adds its
/// extra variables to every instance whose axis values it matches (without changing those
/// values), or, when it matches none, becomes an instance of its own.
pub fn matrix_instances(matrix: &Matrix) -> Vec<Instance> {
    let mut instances: Vec<Instance> = vec![Vec::new()];
    for (axis, values) in &matrix.axes {
        let mut next = Vec::with_capacity(instances.len() * values.len());
        for instance in &instances {
            for value in values {
                let mut grown = instance.clone();
                grown.push((axis.clone(), value.clone()));
                next.push(grown);
            }
        }
        instances = next;
    }
    if matrix.axes.is_empty() {
        instances.clear();
    }
    instances.retain(|instance| {
        !matrix.exclude.iter().any(|combo| {
            combo
                .iter()
                .all(|(k, v)| instance.iter().any(|(ik, iv)| ik == k && iv == v))
        })
    });
    let product = instances.len();
    let is_axis = |key: &str| matrix.axes.iter().any(|(axis, _)| axis == key);
    for combo in &matrix.include {
        let mut matched = false;
        for instance in instances.iter_mut().take(product) {
            let fits = combo
                .iter()
                .filter(|(k, _)| is_axis(k))
                .all(|(k, v)| instance.iter().any(|(ik, iv)| ik == k && iv == v));
            if fits && combo.iter().any(|(k, _)| !is_axis(k)) {
                matched = true;
                for (k, v) in combo.iter().filter(|(k, _)| !is_axis(k)) {
                    match instance.iter_mut().find(|(ik, _)| ik == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => instance.push((k.clone(), v.clone())),
                    }
                }
            }
        }
        if matched {
            continue;
        }
        let mut instance: Instance = matrix
            .axes
            .iter()
            .filter_map(|(axis, _)| combo.get(axis).map(|v| (axis.clone(), v.clone())))
            .collect();
        instance.extend(
            combo
                .iter()
                .filter(|(k, _)| !is_axis(k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if !instances.contains(&instance) {
            instances.push(instance);
        }
    }
    instances
}

/// The display name of a matrix instance: `test (os=bookworm, rust=stable)`.
pub fn instance_name(job: &str, instance: &Instance) -> String {
    if instance.is_empty() {
        return job.to_owned();
    }
    let vars: Vec<String> = instance.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{job} ({})", vars.join(", "))
}
/// A job of a run, with the pipeline's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    /// `build`, or `test (os=bookworm, rust=stable)` for a matrix instance.
    pub name: String,
    /// The job of the pipeline this one comes from.
    pub template: Name,
    pub matrix: Instance,
    /// Indices into [`Plan::jobs`] of the jobs that must succeed first.
    pub needs: Vec<usize>,
    /// The steps of [`PlannedJob::template`], shared with it.
    pub steps: Arc<[Step]>,
    /// The job's own `env` (the pipeline's is [`Plan::env`]).
    pub env: Env,
    pub runs_on: Vec<Label>,
    pub image: Option<Image>,
    pub pull: PullPolicy,
    pub user: Option<String>,
    pub services: BTreeMap<Name, Service>,
    pub resources: Resources,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub shell: Shell,
    pub when: Option<When>,
    pub concurrency: Option<Name>,
    pub approval: Option<Approval>,
    pub artifacts: Vec<String>,
    pub cache: Option<Cache>,
    pub post: Hooks,
    pub continue_on_error: bool,
    pub priority: i32,
}

/// The jobs of a pipeline once expanded, in a dependency-respecting order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub pipeline: Name,
    pub parameters: BTreeMap<String, Parameter>,
    /// The pipeline's `env`.
    pub env: Env,
    /// Jobs in the order written, matrix instances in expansion order.
    pub jobs: Vec<PlannedJob>,
    /// Indices of [`Plan::jobs`] such that every job comes after the jobs it needs.
    pub order: Vec<usize>,
    /// How many `needs` edges join the jobs.
    pub edges: usize,
    pub post: Hooks,
    /// How runs from a repository fill workspaces.
    pub checkout: crate::model::CheckoutSettings,
}

impl Plan {
    /// What a job of a run with `inputs` checks out into its workspace: the run's repository
    /// at its commit, unless the run has none or the pipeline says `checkout: false`.
    pub fn checkout_for(&self, inputs: &RunInputs) -> Option<crate::ports::Checkout> {
        let repository = inputs.repository()?;
        (self.checkout.enabled && !inputs.commit.is_empty()).then(|| crate::ports::Checkout {
            repository: repository.to_owned(),
            commit: inputs.commit.clone(),
            depth: self.checkout.depth,
            submodules: self.checkout.submodules,
        })
    }
}

/// Expands a pipeline that has passed validation. References that do not resolve (which
/// validation reports) are left out rather than failing here.
pub fn plan(pipeline: &Pipeline) -> Plan {
    let defaults = &pipeline.defaults;
    // The instances of the matrix jobs first, so that `jobs` is allocated once, to its size.
    let matrices: Vec<Option<Vec<Instance>>> = pipeline
        .jobs
        .iter()
        .map(|job| job.matrix.as_ref().map(matrix_instances))
        .collect();
    let total = matrices
        .iter()
        .map(|m| m.as_ref().map_or(1, Vec::len))
        .sum();
    let mut jobs = Vec::with_capacity(total);
    // A job's instances are next to each other in `jobs`.
    let mut instances_of: HashMap<&str, Range<usize>> = HashMap::with_capacity(pipeline.jobs.len());
    for (job, matrix) in pipeline.jobs.iter().zip(matrices) {
        let first = jobs.len();
        // A job without a matrix is one instance with no variables.
        let plain = matrix.is_none().then(Instance::new);
        for instance in matrix.into_iter().flatten().chain(plain) {
            jobs.push(PlannedJob {
                name: instance_name(job.name.as_str(), &instance),
                template: job.name.clone(),
                matrix: instance,
                needs: Vec::new(),
                steps: Arc::clone(&job.steps),
                env: job.env.clone(),
                runs_on: if job.runs_on.is_empty() {
                    defaults.runs_on.clone()
                } else {
                    job.runs_on.clone()
                },
                image: job.image.clone().or_else(|| defaults.image.clone()),
                pull: job
                    .pull
                    .or(defaults.pull)
                    .unwrap_or(PullPolicy::IfNotPresent),
                user: job.user.clone(),
                services: job.services.clone(),
                resources: job.resources,
                timeout: job.timeout.or(defaults.timeout),
                retry: job.retry.or(defaults.retry).unwrap_or(Retry {
                    max: 0,
                    delay: None,
                }),
                shell: defaults.shell.clone().unwrap_or_else(Shell::sh),
                when: job.when.clone(),
                concurrency: job.concurrency.clone(),
                approval: job.approval,
                artifacts: job.artifacts.clone(),
                cache: job.cache.clone(),
                post: job.post.clone(),
                continue_on_error: job.continue_on_error,
                priority: job.priority,
            });
        }
        instances_of.insert(job.name.as_str(), first..jobs.len());
    }
    let mut edges = 0;
    for job in &pipeline.jobs {
        let mut needs: Vec<usize> = Vec::with_capacity(job.needs.len());
        for need in &job.needs {
            if need == &job.name {
                continue;
            }
            if let Some(targets) = instances_of.get(need.as_str()) {
                for t in targets.clone() {
                    if !needs.contains(&t) {
                        needs.push(t);
                    }
                }
            }
        }
        let instances = instances_of[job.name.as_str()].clone();
        edges += needs.len() * instances.len();
        // Each instance but the last gets a copy; the last one takes the list.
        if let Some((last, others)) = jobs[instances].split_last_mut() {
            for other in others {
                other.needs = needs.clone();
            }
            last.needs = needs;
        }
    }
    let order = topological_order(&jobs);
    Plan {
        pipeline: pipeline.name.clone(),
        parameters: pipeline.parameters.clone(),
        env: pipeline.env.clone(),
        jobs,
        order,
        edges,
        post: pipeline.post.clone(),
        checkout: pipeline.checkout,
    }
}

/// Kahn's algorithm, stable with respect to the written order. Jobs caught in a cycle (which
/// validation rejects) come last.
fn topological_order(jobs: &[PlannedJob]) -> Vec<usize> {
    let n = jobs.len();
    let mut waiting: Vec<usize> = jobs.iter().map(|j| j.needs.len()).collect();
    // The dependents of every job in one list, those of job `i` at `starts[i]..starts[i + 1]`,
    // in the order of the jobs.
    let mut starts = vec![0usize; n + 1];
    for job in jobs {
        for &need in &job.needs {
            starts[need + 1] += 1;
        }
    }
    for i in 0..n {
        starts[i + 1] += starts[i];
    }
    let mut next = starts.clone();
    let mut dependents = vec![0usize; starts[n]];
    for (i, job) in jobs.iter().enumerate() {
        for &need in &job.needs {
            dependents[next[need]] = i;
            next[need] += 1;
        }
    }
    // `order` is also the queue of the jobs ready to be placed: those before `placed_up_to` have
    // had their dependents released.
    let mut order: Vec<usize> = Vec::with_capacity(n);
    order.extend((0..n).filter(|&i| waiting[i] == 0));
    let mut placed = vec![false; n];
    let mut placed_up_to = 0;
    while let Some(&i) = order.get(placed_up_to) {
        placed_up_to += 1;
        placed[i] = true;
        for &d in &dependents[starts[i]..starts[i + 1]] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                order.push(d);
            }
        }
    }
    order.extend((0..n).filter(|&i| !placed[i]));
    order
}

/// What starts a run: where it comes from and the values the user gives.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunInputs {
    pub branch: String,
    /// `push`, `pull_request`, `tag`, `schedule` or `manual`.
    pub event: String,
    pub tag: String,
    /// The commit the run is for (from a webhook); empty for none.
    pub commit: String,
    pub params: BTreeMap<String, String>,
    /// Variables for every job and hook (`hodei run -e K=V`); they override the pipeline's.
    pub env: Env,
    /// Names of the secrets the run's steps get as environment variables. Only the names are
    /// stored; the values come from the [`SecretStore`](crate::ports::SecretStore) each time the
    /// run is (re)started, and are masked in every log.
    pub secrets: Vec<String>,
    /// The registered repository the run's pipeline came from; empty for none. Its secrets
    /// are the run's too, after the pipeline's own.
    pub repository: String,
    /// The default branch of the run's repository (from the webhook), whose caches a run of
    /// another branch falls back to; empty: the file store's own (`main`).
    pub default_branch: String,
    /// The server's address as the forge reached it (`https://ci.example`), for the links of
    /// the run's commit statuses; empty for a run no webhook started.
    pub server_url: String,
    /// Who started the run by hand although the pipeline's `on:` does not allow its `event`
    /// (an explicit override); empty when `on:` allowed it. The store records it as the run's
    /// first event, `run_start_overridden`.
    pub overridden_by: String,
}

impl RunInputs {
    /// The inputs of a rerun or retry of a run started with these: the same, without the
    /// override, which belongs to the first start only.
    pub fn again(&self) -> RunInputs {
        RunInputs {
            overridden_by: String::new(),
            ..self.clone()
        }
    }

    /// The registered repository the run came from, if any.
    pub fn repository(&self) -> Option<&str> {
        Some(self.repository.as_str()).filter(|r| !r.is_empty())
    }
}

/// A parameter given to a run that does not fit the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown parameter `{name}`{}", hint(suggestion))]
    UnknownParameter {
        name: String,
        suggestion: Option<String>,
    },
    #[error("parameter `{name}` is required: it has no default")]
    MissingParameter { name: String },
    #[error("parameter `{name}` is `{value}`, expected one of {}{}", choices.join(", "), hint(suggestion))]
    NotAChoice {
        name: String,
        value: String,
        choices: Vec<String>,
        suggestion: Option<String>,
    },
}

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

/// Why a job does not run. Small and `Copy`: a run keeps one per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Its `when` condition is false.
    WhenFalse,
    /// A job it needs is skipped: the needed job's index in [`Plan::jobs`].
    NeedSkipped { job: u32 },
}

/// A run's inputs, checked, with what follows from them for each job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRun {
    /// Every parameter with its value (given or default).
    pub params: BTreeMap<String, String>,
    /// For each job of the plan, whether it is skipped and why.
    pub skips: Vec<Option<Skip>>,
    pub inputs: RunInputs,
}

impl Plan {
    /// Checks a run's parameters against the pipeline (every error at once), fills in defaults,
    /// and evaluates each job's `when`; dependents of a skipped job are skipped too.
    pub fn resolve(&self, inputs: RunInputs) -> Result<ResolvedRun, Vec<InputError>> {
        let mut errors = Vec::new();
        let mut params = BTreeMap::new();
        for name in inputs.params.keys() {
            if !self.parameters.contains_key(name) {
                let suggestion = did_you_mean(name, self.parameters.keys().map(String::as_str))
                    .map(str::to_owned);
                errors.push(InputError::UnknownParameter {
                    name: name.clone(),
                    suggestion,
                });
            }
        }
        for (name, parameter) in &self.parameters {
            let value = match (inputs.params.get(name), &parameter.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) => default.clone(),
                (None, None) => {
                    errors.push(InputError::MissingParameter { name: name.clone() });
                    continue;
                }
            };
            if !parameter.choices.is_empty() && !parameter.choices.contains(&value) {
                let suggestion = did_you_mean(&value, parameter.choices.iter().map(String::as_str))
                    .map(str::to_owned);
                errors.push(InputError::NotAChoice {
                    name: name.clone(),
                    value,
                    choices: parameter.choices.clone(),
                    suggestion,
                });
                continue;
            }
            params.insert(name.clone(), value);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut skips: Vec<Option<Skip>> = vec![None; self.jobs.len()];
        for &i in &self.order {
            let job = &self.jobs[i];
            if let Some(&need) = job.needs.iter().find(|&&n| skips[n].is_some()) {
                skips[i] = Some(Skip::NeedSkipped { job: need as u32 });
                continue;
            }
            if let Some(when) = &job.when {
                let mut env = self.env.clone();
                env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                env.extend(job.matrix.iter().cloned());
                env.extend(inputs.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let ctx = EvalContext {
                    branch: &inputs.branch,
                    event: &inputs.event,
                    tag: &inputs.tag,
                    pipeline: self.pipeline.as_str(),
                    params: &params,
                    env: &env,
                };
                if !when.expr().eval(&ctx) {
                    skips[i] = Some(Skip::WhenFalse);
                }
            }
        }
        Ok(ResolvedRun {
            params,
            skips,
            inputs,
        })
    }
}

impl ResolvedRun {
    /// The environment of a step of `job`, from the lowest precedence to the highest: `CI=true`,
    /// the pipeline's `env`, the parameters, the job's `env`, the matrix variables, the step's
    /// `env`, the run's `env` inputs, and Hodei's own variables (`HODEI`, `HODEI_PIPELINE`,
    /// `HODEI_JOB`, `HODEI_BRANCH`, `HODEI_EVENT`, `HODEI_TAG`), which nothing overrides. The
    /// pipeline's post hooks ([`JobRef::Post`]) have no job or matrix variables.
    pub fn step_env(&self, plan: &Plan, job: JobRef, step: &Step) -> Env {
        let planned = match job {
            JobRef::Planned(i) => plan.jobs.get(i),
            JobRef::Post => None,
        };
        let mut env = Env::new();
        env.insert("CI".into(), "true".into());
        let layers = [&plan.env, &self.params];
        for layer in layers.into_iter().chain(planned.map(|p| &p.env)) {
            env.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(planned) = planned {
            env.extend(planned.matrix.iter().cloned());
        }
        env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(self.inputs.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.insert("HODEI".into(), "true".into());
        env.insert("HODEI_PIPELINE".into(), plan.pipeline.to_string());
        env.insert("HODEI_JOB".into(), plan.job_name(job).to_owned());
        env.insert("HODEI_BRANCH".into(), self.inputs.branch.clone());
        env.insert("HODEI_EVENT".into(), self.inputs.event.clone());
        env.insert("HODEI_TAG".into(), self.inputs.tag.clone());
        env
    }
}

/// The name of the job that runs the pipeline's `post` hooks: in parentheses, so that it never
/// clashes with a job of the pipeline.
pub const POST_JOB: &str = "(post)";

/// A job of a run: one of the plan's, or the job that runs the pipeline's `post` hooks once the
/// others are done.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum JobRef {
    /// The job at this index of [`Plan::jobs`].
    Planned(usize),
    /// The job of the pipeline's `post` hooks (named [`POST_JOB`]).
    Post,
}

impl Plan {
    /// Whether a run of this plan has a [`JobRef::Post`] job.
    pub fn has_post_job(&self) -> bool {
        !self.post.is_empty()
    }

    /// The names of a run's jobs, in the order the store keeps them: the plan's jobs, then
    /// [`POST_JOB`] if the pipeline has post hooks.
    pub fn run_jobs(&self) -> Vec<String> {
        let mut names: Vec<String> = self.jobs.iter().map(|j| j.name.clone()).collect();
        if self.has_post_job() {
            names.push(POST_JOB.to_owned());
        }
        names
    }

    /// The job at `position` of a run's jobs as stored ([`Plan::run_jobs`]).
    pub fn job_at(&self, position: usize) -> Option<JobRef> {
        match position.cmp(&self.jobs.len()) {
            std::cmp::Ordering::Less => Some(JobRef::Planned(position)),
            std::cmp::Ordering::Equal if self.has_post_job() => Some(JobRef::Post),
            _ => None,
        }
    }

    /// The display name of a job.
    pub fn job_name(&self, job: JobRef) -> &str {
        match job {
            JobRef::Planned(i) => self.jobs.get(i).map_or(POST_JOB, |j| j.name.as_str()),
            JobRef::Post => POST_JOB,
        }
    }

    /// The policy a job keeps for its whole life: its retries, its gate, whether its failure
    /// fails the run. The post-hooks job has one attempt and never fails the run.
    pub fn policy(&self, job: JobRef) -> JobPolicy {
        match job {
            JobRef::Planned(i) if i < self.jobs.len() => {
                let planned = &self.jobs[i];
                JobPolicy {
                    max_attempts: MaxAttempts::from_retries(planned.retry.max),
                    gate: if planned.approval.is_some() {
                        Gate::Approval
                    } else {
                        Gate::Open
                    },
                    continue_on_error: planned.continue_on_error,
                }
            }
            _ => JobPolicy {
                max_attempts: MaxAttempts::ONE,
                gate: Gate::Open,
                continue_on_error: true,
            },
        }
    }
}

impl PlannedJob {
    /// The labels its worker must have: its `runs_on`, and `docker` for a job with an `image`.
    pub fn labels(&self) -> Vec<Label> {
        let mut labels = self.runs_on.clone();
        let docker = Label::docker();
        if self.image.is_some() && !labels.contains(&docker) {
            labels.push(docker);
        }
        labels
    }
}
