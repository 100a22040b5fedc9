//! What one attempt of a job runs: its steps with their complete environments, its hooks, its
//! limits and what the provider must prepare — made from the plan, the run's inputs and its
//! secrets, in one place.

use crate::ids::RunId;
use crate::model::{Duration, Env, PullPolicy, Shell, Step};
use crate::plan::{JobRef, POST_JOB, Plan, ResolvedRun};
use crate::ports::JobSpec;
use crate::state::{JobMachine, Verdict};

/// How long a hook without a `timeout` of its own may run: a hook that hangs must not hold its
/// job, its slot and its run forever.
pub const HOOK_TIMEOUT: Duration = Duration::parse_const("10m");

/// Everything one attempt of a job runs. Made by [`job_def`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobDef {
    pub run: RunId,
    pub job: JobRef,
    /// The job's steps; its hooks follow them, by outcome.
    pub steps: Vec<Step>,
    /// The complete environment of each step, secrets included.
    pub envs: Vec<Env>,
    pub hooks: HookSteps,
    pub shell: Shell,
    pub timeout: Option<Duration>,
    /// What the provider prepares.
    pub spec: JobSpec,
    /// Secret values to mask in the job's log.
    pub secrets: Vec<String>,
    /// The files the attempt keeps and is given: artifacts and cache.
    pub files: JobFiles,
}

/// The files of an attempt beyond its steps: the artifacts it keeps, the artifacts of its
/// needs it is given, its cache.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobFiles {
    /// The job's `artifacts` patterns, kept when the job succeeds.
    pub artifacts: Vec<String>,
    /// The jobs it needs that keep artifacts, by id: their artifacts are restored before its
    /// steps. Left empty by [`job_def`] (the plan knows no ids): the run actor fills it.
    pub needs: Vec<crate::ids::JobId>,
    pub cache: Option<CacheDef>,
}

/// A job's `cache`, ready to render once the workspace's files are hashed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheDef {
    pub key: Vec<crate::cache_key::Part>,
    pub fallback: Vec<Vec<crate::cache_key::Part>>,
    pub paths: Vec<String>,
    /// What the templates stand for, but the hashes.
    pub context: crate::cache_key::KeyContext,
    pub scope: crate::ports::CacheScope,
}

/// A job's own post hooks, by the attempt's outcome, each with its complete environment and a
/// timeout ([`HOOK_TIMEOUT`] unless it has one).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HookSteps {
    pub success: Vec<(Step, Env)>,
    pub failure: Vec<(Step, Env)>,
    pub cancelled: Vec<(Step, Env)>,
    pub always: Vec<(Step, Env)>,
}

/// What the attempt `attempt` of `job` runs. `secrets` are the run's secrets (name, value):
/// they reach every step as variables (Hodei's own `HODEI*` variables win) and are masked.
/// The post-hooks job runs the pipeline's hooks for `verdict` (then `always`), each allowed to
/// fail; `verdict` is unused for the other jobs.
pub fn job_def(
    plan: &Plan,
    resolved: &ResolvedRun,
    machine: &JobMachine,
    job: JobRef,
    secrets: &[(String, String)],
    verdict: Option<&Verdict>,
) -> JobDef {
    let env_of = |step: &Step| {
        let mut env = resolved.step_env(plan, job, step);
        for (name, value) in secrets
            .iter()
            .filter(|(name, _)| !name.starts_with("HODEI"))
        {
            env.insert(name.clone(), value.clone());
        }
        // Which run, job and attempt this is, as CI systems say it (GITHUB_RUN_ID,
        // CI_JOB_ID, GITHUB_RUN_ATTEMPT): for reports, caches and idempotent deploys.
        env.insert("HODEI_RUN_ID".into(), machine.run().0.to_string());
        env.insert("HODEI_JOB_ID".into(), machine.id().0.to_string());
        env.insert("HODEI_ATTEMPT".into(), machine.attempt().to_string());
        env
    };
    let mut spec = JobSpec {
        run: machine.run(),
        job: machine.id(),
        attempt: machine.attempt(),
        name: plan.job_name(job).to_owned(),
        image: None,
        pull: PullPolicy::IfNotPresent,
        user: None,
        services: Vec::new(),
        resources: Default::default(),
        checkout: plan.checkout_for(&resolved.inputs),
        secrets: crate::ports::SecretVars(
            secrets
                .iter()
                .filter(|(name, _)| !name.starts_with("HODEI"))
                .cloned()
                .collect(),
        ),
        timeout: None,
    };
    let secrets: Vec<String> = secrets.iter().map(|(_, value)| value.clone()).collect();
    let planned = match job {
        JobRef::Planned(i) => plan.jobs.get(i),
        JobRef::Post => None,
    };
    let Some(planned) = planned else {
        let post = &plan.post;
        let by_verdict = match verdict {
            Some(Verdict::Succeeded) => &post.success,
            Some(Verdict::Failed { .. }) => &post.failure,
            Some(Verdict::Cancelled) | None => &post.cancelled,
        };
        let steps: Vec<Step> = by_verdict
            .iter()
            .chain(post.always.iter())
            .map(|step| Step {
                continue_on_error: true,
                ..bounded(step)
            })
            .collect();
        spec.name = POST_JOB.to_owned();
        return JobDef {
            run: machine.run(),
            job,
            envs: steps.iter().map(env_of).collect(),
            steps,
            hooks: HookSteps::default(),
            shell: Shell::sh(),
            timeout: None,
            spec,
            secrets,
            files: JobFiles::default(),
        };
    };
    let hooks = |steps: &[Step]| -> Vec<(Step, Env)> {
        steps.iter().map(|s| (bounded(s), env_of(s))).collect()
    };
    spec.image = planned.image.clone();
    spec.pull = planned.pull;
    spec.user = planned.user.clone();
    spec.services = planned
        .services
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    spec.resources = planned.resources;
    spec.timeout = planned.timeout.map(crate::model::Duration::to_std);
    JobDef {
        run: machine.run(),
        job,
        steps: planned.steps.to_vec(),
        envs: planned.steps.iter().map(env_of).collect(),
        hooks: HookSteps {
            success: hooks(&planned.post.success),
            failure: hooks(&planned.post.failure),
            cancelled: hooks(&planned.post.cancelled),
            always: hooks(&planned.post.always),
        },
        shell: planned.shell.clone(),
        timeout: planned.timeout,
        spec,
        secrets,
        files: JobFiles {
            artifacts: planned.artifacts.clone(),
            needs: Vec::new(),
            cache: planned
                .cache
                .as_ref()
                .and_then(|cache| cache_def(plan, planned, &resolved.inputs, cache)),
        },
    }
}

/// A job's cache with its templates parsed; `None` for templates that do not parse (validation
/// refuses those, so only a definition stored under older rules can have them).
fn cache_def(
    plan: &Plan,
    planned: &crate::plan::PlannedJob,
    inputs: &crate::plan::RunInputs,
    cache: &crate::model::Cache,
) -> Option<CacheDef> {
    use crate::cache_key::{KeyContext, parse};
    let branch = inputs.branch.as_str();
    Some(CacheDef {
        key: parse(&cache.key).ok()?,
        fallback: cache
            .fallback
            .iter()
            .map(|key| parse(key).ok())
            .collect::<Option<_>>()?,
        paths: cache.paths.clone(),
        context: KeyContext {
            branch: branch.to_owned(),
            job: planned.template.as_str().to_owned(),
            pipeline: plan.pipeline.as_str().to_owned(),
            matrix: planned.matrix.iter().cloned().collect(),
            hashes: Default::default(),
        },
        scope: crate::ports::CacheScope {
            pipeline: plan.pipeline.as_str().to_owned(),
            branch: branch.to_owned(),
            default_branch: inputs.default_branch.clone(),
        },
    })
}

/// A hook with a timeout: its own, or [`HOOK_TIMEOUT`].
fn bounded(step: &Step) -> Step {
    Step {
        timeout: step.timeout.or(Some(HOOK_TIMEOUT)),
        ..step.clone()
    }
}
