//! The rules that span a whole pipeline: references between jobs, cycles, parameters used by
//! `when`, matrix sizes, paths that must stay in the workspace. Every problem is reported, each
//! with its path; the YAML loader adds line and column.
//!
//! Linear in the size of the pipeline (matrix expansion aside, which is bounded).

use std::collections::{HashMap, HashSet};

use crate::diagnostic::{Code, Diagnostic, Path, PathRef};
use crate::expr::Scope;
use crate::model::{Duration, Env, Hooks, Job, Pipeline, Retry, Step, is_env_name};
use crate::plan::matrix_instances;
use crate::suggest::did_you_mean;

/// Up to this many `needs`, a job's are checked for duplicates by looking back over them.
const SCAN_NEEDS: usize = 16;

/// The most instances one job's matrix may expand to.
pub const MAX_MATRIX_INSTANCES: usize = 256;
/// The most jobs a pipeline may hold once matrices are expanded.
pub const MAX_JOBS: usize = 10_000;

/// Every problem of the pipeline that concerns more than one value.
pub fn validate(pipeline: &Pipeline) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let root = PathRef::Root;
    env_names(&pipeline.env, &root.key("env"), &mut out);
    parameters(pipeline, &mut out);
    secret_names_at(&pipeline.secrets, &root.key("secrets"), &mut out);
    hooks(
        &pipeline.post,
        &root.key("post"),
        pipeline.defaults.timeout,
        &mut out,
    );
    let on = &pipeline.on;
    if !on.manual && on.push.is_none() && on.pull_request.is_none() && on.schedule.is_empty() {
        out.push(
            Diagnostic::warning(
                Code::Suspicious,
                root.key("on").to_path(),
                "the pipeline has no trigger: nothing can start it",
            )
            .expected("at least one of push, pull_request, schedule or manual"),
        );
    }
    if let Some(retry) = pipeline.defaults.retry {
        retry_limit(retry, &root.key("defaults").key("retry"), &mut out);
    }
    if pipeline.jobs.is_empty() {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                root.key("jobs").to_path(),
                "the pipeline has no job",
            )
            .expected("at least one job"),
        );
    }
    let index = job_index(pipeline, &mut out);
    let param_names: Vec<&str> = pipeline.parameters.keys().map(String::as_str).collect();
    let mut total_jobs = 0usize;
    let mut needs = Needs::with_capacity(pipeline.jobs.len());
    let jobs = root.key("jobs");
    for job in &pipeline.jobs {
        let path = jobs.key(job.name.as_str());
        let timeout = job.timeout.or(pipeline.defaults.timeout);
        job_rules(
            job,
            &path,
            timeout,
            &index,
            &param_names,
            &mut needs,
            &mut out,
        );
        let no_image = job.image.is_none() && pipeline.defaults.image.is_none();
        if job.pull.is_some() && no_image && job.services.is_empty() {
            out.push(
                Diagnostic::warning(
                    Code::Suspicious,
                    path.key("pull").to_path(),
                    "`pull` says when the job's images are pulled, and the job has no `image` and no `services`: it has no effect",
                )
                .expected("an `image` or `services` with it, or no `pull`"),
            );
        }
        if job.user.is_some() && no_image {
            out.push(
                Diagnostic::warning(
                    Code::Suspicious,
                    path.key("user").to_path(),
                    "`user` is the user of the job's processes inside its container, and the job has no `image`: on the host its set-up fails",
                )
                .expected("an `image` with it, or no `user`"),
            );
        }
        total_jobs = total_jobs.saturating_add(matrix_rules(job, &path, &mut out));
    }
    if total_jobs > MAX_JOBS {
        out.push(
            Diagnostic::error(
                Code::Limit,
                root.key("jobs").to_path(),
                format!("the pipeline expands to {total_jobs} jobs"),
            )
            .expected(format!(
                "at most {MAX_JOBS} jobs once matrices are expanded"
            )),
        );
    }
    cycles(pipeline, &needs, &mut out);
    out
}

/// The `needs` of every job as indices of the jobs they name, in the order written (those
/// naming the job itself or no job left out): one list for all the jobs, looked up once.
struct Needs {
    targets: Vec<usize>,
    /// Where the needs of each job end in `targets`.
    ends: Vec<usize>,
}

impl Needs {
    fn with_capacity(jobs: usize) -> Needs {
        Needs {
            targets: Vec::with_capacity(jobs * 2),
            ends: Vec::with_capacity(jobs),
        }
    }

    /// The needs of the job at `job`.
    fn of(&self, job: usize) -> &[usize] {
        let start = job.checked_sub(1).map_or(0, |before| self.ends[before]);
        &self.targets[start..self.ends[job]]
    }
}

fn job_index<'p>(pipeline: &'p Pipeline, out: &mut Vec<Diagnostic>) -> HashMap<&'p str, usize> {
    let mut index = HashMap::with_capacity(pipeline.jobs.len());
    for (i, job) in pipeline.jobs.iter().enumerate() {
        if index.insert(job.name.as_str(), i).is_some() {
            out.push(
                Diagnostic::error(
                    Code::DuplicateKey,
                    Path::root().key("jobs").key(job.name.as_str()),
                    format!("job `{}` is defined twice", job.name),
                )
                .expected("unique job names"),
            );
        }
    }
    index
}

fn env_names(env: &Env, path: &PathRef<'_>, out: &mut Vec<Diagnostic>) {
    for name in env.keys().filter(|n| n.starts_with("HODEI_")) {
        out.push(
            Diagnostic::warning(
                Code::Suspicious,
                path.key(name).to_path(),
                format!("`{name}` is set by Hodei for every step"),
            )
            .expected("a name that does not start with `HODEI_`: Hodei's value wins"),
        );
    }
    for name in env.keys().filter(|n| !is_env_name(n)) {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.key(name).to_path(),
                format!("`{name}` is not a valid environment variable name"),
            )
            .expected("a letter or `_`, then letters, digits or `_`"),
        );
    }
}

/// The names of the secrets a pipeline uses: variable names, each once, none of Hodei's own.
pub fn secret_names(names: &[String], path: &Path, out: &mut Vec<Diagnostic>) {
    let mut seen = HashSet::new();
    for (i, name) in names.iter().enumerate() {
        let at = || path.index(i);
        if !is_secret_name(name) {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    at(),
                    format!("`{name}` is not a valid secret name"),
                )
                .expected("a letter or `_`, then letters, digits or `_`, not starting with `HODEI_` (it becomes an environment variable)"),
            );
        } else if !seen.insert(name) {
            out.push(
                Diagnostic::warning(
                    Code::Suspicious,
                    at(),
                    format!("secret `{name}` is listed twice"),
                )
                .expected("each secret once"),
            );
        }
    }
}

/// [`secret_names`] at a place that is only made a [`Path`] for a problem.
fn secret_names_at(names: &[String], path: &PathRef<'_>, out: &mut Vec<Diagnostic>) {
    if !names.is_empty() {
        secret_names(names, &path.to_path(), out);
    }
}

/// Whether `name` may name a secret: a variable name that is not one of Hodei's (`HODEI_*`).
pub fn is_secret_name(name: &str) -> bool {
    is_env_name(name) && !name.starts_with("HODEI_")
}

fn parameters(pipeline: &Pipeline, out: &mut Vec<Diagnostic>) {
    let root = PathRef::Root;
    let parameters = root.key("parameters");
    for (name, parameter) in &pipeline.parameters {
        let path = parameters.key(name);
        if !is_env_name(name) {
            out.push(
                Diagnostic::error(Code::InvalidValue, path.to_path(), format!("`{name}` is not a valid parameter name"))
                    .expected("a letter or `_`, then letters, digits or `_` (it becomes an environment variable)"),
            );
        }
        let mut seen = HashSet::new();
        for (i, choice) in parameter.choices.iter().enumerate() {
            if !seen.insert(choice) {
                out.push(
                    Diagnostic::warning(
                        Code::Suspicious,
                        path.key("choices").index(i).to_path(),
                        format!("choice `{choice}` is listed twice"),
                    )
                    .expected("each choice once"),
                );
            }
        }
        if let Some(default) = &parameter.default
            && !parameter.choices.is_empty()
            && !parameter.choices.contains(default)
        {
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    path.key("default").to_path(),
                    format!("default `{default}` is not one of the choices"),
                )
                .expected(format!("one of {}", parameter.choices.join(", ")))
                .suggest(did_you_mean(
                    default,
                    parameter.choices.iter().map(String::as_str),
                )),
            );
        }
    }
}

fn job_rules(
    job: &Job,
    path: &PathRef<'_>,
    job_timeout: Option<Duration>,
    index: &HashMap<&str, usize>,
    params: &[&str],
    resolved: &mut Needs,
    out: &mut Vec<Diagnostic>,
) {
    if job.steps.is_empty() {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.key("steps").to_path(),
                "a job needs at least one step",
            )
            .expected("a list of steps"),
        );
    }
    let steps = path.key("steps");
    for (i, step) in job.steps.iter().enumerate() {
        step_rules(step, &steps.index(i), job_timeout, out);
    }
    hooks(&job.post, &path.key("post"), job_timeout, out);
    env_names(&job.env, &path.key("env"), out);
    let services = path.key("services");
    for (name, service) in &job.services {
        env_names(&service.env, &services.key(name.as_str()).key("env"), out);
    }
    let needs = path.key("needs");
    // Duplicates: a look back over the few needs most jobs have, a set for long lists.
    let mut seen = (job.needs.len() > SCAN_NEEDS).then(HashSet::new);
    for (i, need) in job.needs.iter().enumerate() {
        let p = || needs.index(i).to_path();
        let target = index.get(need.as_str());
        if need == &job.name {
            out.push(
                Diagnostic::error(Code::Cycle, p(), format!("job `{need}` needs itself"))
                    .expected("the name of another job"),
            );
            continue;
        }
        if let Some(&target) = target {
            resolved.targets.push(target);
        }
        if target.is_none() {
            out.push(
                Diagnostic::error(Code::UnknownReference, p(), format!("unknown job `{need}`"))
                    .expected("the name of a job of this pipeline")
                    .suggest(did_you_mean(need.as_str(), index.keys().copied())),
            );
        } else if match &mut seen {
            Some(seen) => !seen.insert(need),
            // An earlier equal need named a job too: the first is kept, the others are
            // duplicates.
            None => job.needs[..i].contains(need),
        } {
            out.push(
                Diagnostic::warning(
                    Code::Suspicious,
                    p(),
                    format!("job `{need}` is needed twice"),
                )
                .expected("each job once"),
            );
        }
    }
    resolved.ends.push(resolved.targets.len());
    if let Some(retry) = job.retry {
        retry_limit(retry, &path.key("retry"), out);
    }
    if !Job::PRIORITY_RANGE.contains(&job.priority) {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.key("priority").to_path(),
                format!("priority {} is out of range", job.priority),
            )
            .expected("a whole number from -100 to 100"),
        );
    }
    if let Some(when) = &job.when {
        let scope = Scope { params };
        for err in when.expr().check(&scope) {
            let mut diag = Diagnostic::error(
                Code::Expression,
                path.key("when").to_path(),
                err.message.clone(),
            );
            diag.within = Some((err.offset, err.len));
            if let Some(expected) = err.expected {
                diag = diag.expected(expected);
            }
            if let Some(help) = err.help {
                diag = diag.help(help);
            }
            out.push(diag);
        }
    }
    let artifacts = path.key("artifacts");
    for (i, artifact) in job.artifacts.iter().enumerate() {
        workspace_path(artifact, &artifacts.index(i), out);
    }
    if let Some(cache) = &job.cache {
        let at = path.key("cache");
        let paths = at.key("paths");
        for (i, p) in cache.paths.iter().enumerate() {
            workspace_path(p, &paths.index(i), out);
        }
        cache_key(&cache.key, job, &at.key("key"), out);
        let fallback = at.key("fallback");
        for (i, key) in cache.fallback.iter().enumerate() {
            cache_key(key, job, &fallback.index(i), out);
        }
    }
}

fn step_rules(
    step: &Step,
    path: &PathRef<'_>,
    job_timeout: Option<Duration>,
    out: &mut Vec<Diagnostic>,
) {
    if step.run.trim().is_empty() {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.key("run").to_path(),
                "the step has nothing to run",
            )
            .expected("a command"),
        );
    }
    env_names(&step.env, &path.key("env"), out);
    if let Some(retry) = step.retry {
        retry_limit(retry, &path.key("retry"), out);
    }
    if let Some(dir) = &step.working_dir {
        workspace_path(dir, &path.key("working_dir"), out);
    }
    if let (Some(step_timeout), Some(job_timeout)) = (step.timeout, job_timeout)
        && step_timeout > job_timeout
    {
        out.push(
            Diagnostic::warning(
                Code::Suspicious,
                path.key("timeout").to_path(),
                format!(
                    "the step's timeout ({step_timeout}) is longer than its job's ({job_timeout})"
                ),
            )
            .expected("a step timeout no longer than the job's: the job's applies first"),
        );
    }
}

fn hooks(
    hooks: &Hooks,
    path: &PathRef<'_>,
    job_timeout: Option<Duration>,
    out: &mut Vec<Diagnostic>,
) {
    for (key, steps) in [
        ("always", &hooks.always),
        ("success", &hooks.success),
        ("failure", &hooks.failure),
        ("cancelled", &hooks.cancelled),
    ] {
        let at = path.key(key);
        for (i, step) in steps.iter().enumerate() {
            step_rules(step, &at.index(i), job_timeout, out);
        }
    }
}

fn retry_limit(retry: Retry, path: &PathRef<'_>, out: &mut Vec<Diagnostic>) {
    if retry.max > Retry::LIMIT {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.key("max").to_path(),
                format!("{} retries is over the limit", retry.max),
            )
            .expected(format!("a whole number from 0 to {}", Retry::LIMIT)),
        );
    }
}

fn workspace_path(text: &str, path: &PathRef<'_>, out: &mut Vec<Diagnostic>) {
    let escapes = text.starts_with('/') || text.split(['/', '\\']).any(|part| part == "..");
    if escapes {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                format!("`{text}` leaves the job's workspace"),
            )
            .expected("a path relative to the workspace, without `..`"),
        );
    }
}

fn cache_key(key: &str, job: &Job, path: &PathRef<'_>, out: &mut Vec<Diagnostic>) {
    let parts = match crate::cache_key::parse(key) {
        Ok(parts) => parts,
        Err(err) => {
            let expected = err.expected();
            out.push(
                Diagnostic::error(Code::InvalidValue, path.to_path(), err.to_string())
                    .expected(expected),
            );
            return;
        }
    };
    for part in parts {
        match part {
            crate::cache_key::Part::Matrix(axis)
                if !job
                    .matrix
                    .as_ref()
                    .is_some_and(|m| m.axes.iter().any(|(name, _)| *name == axis)) =>
            {
                let err = crate::cache_key::TemplateError::Unknown(format!("matrix.{axis}"));
                out.push(
                    Diagnostic::error(Code::InvalidValue, path.to_path(), err.to_string())
                        .expected(format!(
                            "an axis of this job's matrix after `matrix.` ({})",
                            err.expected()
                        )),
                );
            }
            crate::cache_key::Part::Hash(file) => workspace_path(&file, path, out),
            _ => {}
        }
    }
}

/// Checks the matrix and returns how many jobs this job becomes.
fn matrix_rules(job: &Job, path: &PathRef<'_>, out: &mut Vec<Diagnostic>) -> usize {
    let Some(matrix) = &job.matrix else { return 1 };
    let path = path.key("matrix");
    if matrix.axes.is_empty() && matrix.include.is_empty() {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                "the matrix has no variable",
            )
            .expected("at least one variable with a list of values"),
        );
        return 0;
    }
    let mut ok = true;
    for (axis, values) in &matrix.axes {
        if !is_env_name(axis) {
            out.push(
                Diagnostic::error(Code::InvalidValue, path.key(axis).to_path(), format!("`{axis}` is not a valid matrix variable name"))
                    .expected("a letter or `_`, then letters, digits or `_` (it becomes an environment variable)"),
            );
        }
        if values.is_empty() {
            ok = false;
            out.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    path.key(axis).to_path(),
                    format!("matrix variable `{axis}` has no value"),
                )
                .expected("a list of at least one value"),
            );
        }
        let mut seen = HashSet::new();
        for (i, value) in values.iter().enumerate() {
            if !seen.insert(value) {
                ok = false;
                out.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        path.key(axis).index(i).to_path(),
                        format!("value `{value}` is listed twice"),
                    )
                    .expected("each value once"),
                );
            }
        }
    }
    for (i, combo) in matrix.exclude.iter().enumerate() {
        for name in combo.keys() {
            if !matrix.axes.iter().any(|(axis, _)| axis == name) {
                out.push(
                    Diagnostic::error(
                        Code::UnknownReference,
                        path.key("exclude").index(i).key(name).to_path(),
                        format!("`{name}` is not a matrix variable"),
                    )
                    .expected("one of the matrix's variables")
                    .suggest(did_you_mean(
                        name,
                        matrix.axes.iter().map(|(a, _)| a.as_str()),
                    )),
                );
                ok = false;
            }
        }
    }
    let include = path.key("include");
    for (i, combo) in matrix.include.iter().enumerate() {
        env_names(combo, &include.index(i), out);
    }
    let product = matrix
        .axes
        .iter()
        .fold(1usize, |acc, (_, v)| acc.saturating_mul(v.len()));
    if product.saturating_add(matrix.include.len()) > MAX_MATRIX_INSTANCES.saturating_mul(64) {
        out.push(
            Diagnostic::error(
                Code::Limit,
                path.to_path(),
                format!("the matrix expands to {product} combinations"),
            )
            .expected(format!("at most {MAX_MATRIX_INSTANCES} instances")),
        );
        // Counted at the limit, so the pipeline-wide count does not report it a second time.
        return MAX_MATRIX_INSTANCES;
    }
    if !ok {
        return product;
    }
    let count = matrix_instances(matrix).len();
    if count > MAX_MATRIX_INSTANCES {
        out.push(
            Diagnostic::error(
                Code::Limit,
                path.to_path(),
                format!("the matrix expands to {count} instances"),
            )
            .expected(format!("at most {MAX_MATRIX_INSTANCES} instances")),
        );
    } else if count == 0 {
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                "the matrix excludes every combination",
            )
            .expected("at least one instance"),
        );
    }
    count.min(MAX_MATRIX_INSTANCES)
}

/// Reports every cycle of `needs`, spelled out: `a -> c -> b -> a`.
fn cycles(pipeline: &Pipeline, edges: &Needs, out: &mut Vec<Diagnostic>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let n = pipeline.jobs.len();
    let mut mark = vec![Mark::New; n];
    // Iterative depth-first search: (job, next edge to follow). One stack for every start.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..n {
        if mark[start] != Mark::New {
            continue;
        }
        stack.push((start, 0));
        mark[start] = Mark::Open;
        while let Some(&mut (job, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = edges.of(job).get(*next) {
                *next += 1;
                match mark[dep] {
                    Mark::New => {
                        mark[dep] = Mark::Open;
                        stack.push((dep, 0));
                    }
                    Mark::Open => {
                        let from = stack.iter().position(|(j, _)| *j == dep).unwrap_or(0);
                        let mut names: Vec<&str> = stack[from..]
                            .iter()
                            .map(|(j, _)| pipeline.jobs[*j].name.as_str())
                            .collect();
                        names.push(pipeline.jobs[dep].name.as_str());
                        let first = &pipeline.jobs[stack[from].0];
                        let second = names.get(1).copied().unwrap_or_default();
                        let at = first
                            .needs
                            .iter()
                            .position(|need| need.as_str() == second)
                            .unwrap_or(0);
                        out.push(
                            Diagnostic::error(
                                Code::Cycle,
                                Path::root()
                                    .key("jobs")
                                    .key(first.name.as_str())
                                    .key("needs")
                                    .index(at),
                                format!("jobs need each other in a cycle: {}", names.join(" -> ")),
                            )
                            .expected("`needs` that form no cycle")
                            .help("remove one of these `needs`"),
                        );
                    }
                    Mark::Done => {}
                }
            } else {
                mark[job] = Mark::Done;
                stack.pop();
            }
        }
    }
}
