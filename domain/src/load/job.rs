//! Decoding of jobs, steps, hooks, services and matrices.

use std::collections::BTreeMap;

use super::cx::{Cx, Map, is_null};
use crate::diagnostic::{Code, Diagnostic, PathRef, Span};
use crate::model::{
    Approval, Cache, Job, Matrix, Name, PullPolicy, Resources, Retry, Role, Service, Shell, Step,
    When,
};
use crate::yaml::{Node, Style, Value};

pub(crate) const JOB_KEYS: &[&str] = &[
    "steps",
    "needs",
    "runs_on",
    "image",
    "pull",
    "user",
    "services",
    "resources",
    "timeout",
    "retry",
    "when",
    "matrix",
    "concurrency",
    "approval",
    "artifacts",
    "cache",
    "env",
    "post",
    "continue_on_error",
    "priority",
];
const STEP_KEYS: &[&str] = &[
    "name",
    "run",
    "env",
    "timeout",
    "retry",
    "working_dir",
    "shell",
    "continue_on_error",
];
const HOOK_KEYS: &[&str] = &["always", "success", "failure", "cancelled"];
const SERVICE_KEYS: &[&str] = &["image", "env", "command", "ports"];

pub(crate) fn job(
    cx: &mut Cx,
    name: Name,
    node: &Node,
    path: &PathRef<'_>,
    at: Span,
) -> Option<Job> {
    let map = cx.map(node, path, at, "a job", JOB_KEYS)?;
    let mut job = Job::new(name);
    if let Some(steps) = cx.required(
        &map,
        "steps",
        "a list of steps, e.g. `steps: [{ run: make }]`",
    ) {
        job.steps = steps_list(cx, steps, &map.path("steps"), true);
    }
    if let Some(n) = map.get("needs") {
        job.needs = cx.parsed_list(n, &map.path("needs"));
    }
    if let Some(n) = map.get("runs_on") {
        job.runs_on = cx.parsed_list(n, &map.path("runs_on"));
    }
    if let Some(n) = map.get("image") {
        job.image = cx.parse(n, &map.path("image"));
    }
    if let Some(n) = map.get("pull") {
        job.pull = pull_policy(cx, n, &map.path("pull"));
    }
    if let Some(n) = map.get("user") {
        job.user = cx.nonempty_text(n, &map.path("user"), "a user name or uid[:gid]");
    }
    if let Some(n) = map.get("services") {
        job.services = services(cx, n, &map.path("services"));
    }
    if let Some(n) = map.get("resources") {
        job.resources = resources(cx, n, &map.path("resources"), key_span(&map, "resources"));
    }
    if let Some(n) = map.get("timeout") {
        job.timeout = cx.parse(n, &map.path("timeout"));
    }
    if let Some(n) = map.get("retry") {
        job.retry = retry(cx, n, &map.path("retry"), key_span(&map, "retry"));
    }
    if let Some(n) = map.get("when") {
        job.when = when(cx, n, &map.path("when"));
    }
    if let Some(n) = map.get("matrix") {
        job.matrix = matrix(cx, n, &map.path("matrix"), key_span(&map, "matrix"));
    }
    if let Some(n) = map.get("concurrency") {
        job.concurrency = cx.parse(n, &map.path("concurrency"));
    }
    if let Some(n) = map.get("approval") {
        job.approval = approval(cx, n, &map.path("approval"), key_span(&map, "approval"));
    }
    if let Some(n) = map.get("artifacts") {
        job.artifacts = cx.texts(n, &map.path("artifacts"));
    }
    if let Some(n) = map.get("cache") {
        job.cache = cache(cx, n, &map.path("cache"), key_span(&map, "cache"));
    }
    if let Some(n) = map.get("env") {
        job.env = cx.env(n, &map.path("env"), key_span(&map, "env"));
    }
    if let Some(n) = map.get("post") {
        job.post = hooks(cx, n, &map.path("post"), key_span(&map, "post"));
    }
    if let Some(n) = map.get("continue_on_error") {
        job.continue_on_error = cx.bool(n, &map.path("continue_on_error")).unwrap_or(false);
    }
    if let Some(n) = map.get("priority") {
        let range = Job::PRIORITY_RANGE;
        let value = cx.integer(
            n,
            &map.path("priority"),
            i64::from(*range.start())..=i64::from(*range.end()),
        );
        job.priority = value.and_then(|v| i32::try_from(v).ok()).unwrap_or(0);
    }
    Some(job)
}

pub(crate) fn key_span(map: &Map<'_, '_>, key: &str) -> Span {
    map.entries
        .iter()
        .find(|e| e.key == key)
        .map_or(map.at, |e| e.key_span)
}

/// The steps of a list, collected straight into what holds them (a job's `Arc<[Step]>` is
/// allocated once, to its size).
pub(crate) fn steps_list<S: FromIterator<Step>>(
    cx: &mut Cx,
    node: &Node,
    path: &PathRef<'_>,
    required: bool,
) -> S {
    let Value::Seq(items) = &node.value else {
        cx.type_error(node, path, "a list of steps");
        return std::iter::empty().collect();
    };
    if required && items.is_empty() {
        cx.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                "a job needs at least one step",
            )
            .expected("a list of steps, e.g. `steps: [{ run: make }]`")
            .at(node.span),
        );
    }
    items
        .iter()
        .enumerate()
        // A step that cannot be read stands in as an empty one, so that positions stay right
        // and the job is not also reported as having no step.
        .map(|(i, item)| step(cx, item, &path.index(i)).unwrap_or_else(|| Step::run("")))
        .collect()
}

fn step(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> Option<Step> {
    if let Value::Scalar { .. } = node.value {
        // `- cargo build` is short for `- run: cargo build`.
        return cx
            .nonempty_text(node, path, "a command to run")
            .map(Step::run);
    }
    let map = cx.map(node, path, node.span, "a step", STEP_KEYS)?;
    let run = cx
        .required(&map, "run", "the command to run, e.g. `run: cargo test`")
        .and_then(|n| cx.nonempty_text(n, &map.path("run"), "the command to run"));
    let mut step = Step::run(run.unwrap_or_default());
    if let Some(n) = map.get("name") {
        step.name = cx.nonempty_text(n, &map.path("name"), "a step name");
    }
    if let Some(n) = map.get("env") {
        step.env = cx.env(n, &map.path("env"), key_span(&map, "env"));
    }
    if let Some(n) = map.get("timeout") {
        step.timeout = cx.parse(n, &map.path("timeout"));
    }
    if let Some(n) = map.get("retry") {
        step.retry = retry(cx, n, &map.path("retry"), key_span(&map, "retry"));
    }
    if let Some(n) = map.get("working_dir") {
        step.working_dir = cx.nonempty_text(
            n,
            &map.path("working_dir"),
            "a directory relative to the workspace",
        );
    }
    if let Some(n) = map.get("shell") {
        step.shell = shell(cx, n, &map.path("shell"));
    }
    if let Some(n) = map.get("continue_on_error") {
        step.continue_on_error = cx.bool(n, &map.path("continue_on_error")).unwrap_or(false);
    }
    Some(step)
}

pub(crate) fn shell(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> Option<Shell> {
    if let Value::Seq(items) = &node.value {
        if items.is_empty() {
            cx.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    path.to_path(),
                    "the shell has no program",
                )
                .expected("`sh`, `bash`, or a command line such as `[python3, -c]`")
                .at(node.span),
            );
            return None;
        }
        let argv = cx.texts(node, path);
        return (!argv.is_empty()).then(|| Shell::from_argv(argv));
    }
    let text = cx.nonempty_str(
        node,
        path,
        "`sh`, `bash`, or a command line such as `python3 -c`",
    )?;
    Shell::named(text)
}

pub(crate) fn pull_policy(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> Option<PullPolicy> {
    let text = cx.str(node, path)?;
    let found = PullPolicy::ALL
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, p)| *p);
    if found.is_none() {
        let names: Vec<&str> = PullPolicy::ALL.iter().map(|(n, _)| *n).collect();
        cx.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                format!("unknown pull policy `{text}`"),
            )
            .expected(names.join(", "))
            .suggest(crate::suggest::did_you_mean(text, names.iter().copied()))
            .at(node.span),
        );
    }
    found
}

pub(crate) fn retry(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Option<Retry> {
    let limit = i64::from(Retry::LIMIT);
    if let Value::Scalar { .. } = node.value {
        let max = cx.integer(node, path, 0..=limit)?;
        return Some(Retry {
            max: max as u32,
            delay: None,
        });
    }
    let map = cx.map(node, path, at, "a retry policy", &["max", "delay"])?;
    let max = cx
        .required(&map, "max", "how many times to try again, e.g. `max: 2`")
        .and_then(|n| cx.integer(n, &map.path("max"), 0..=limit));
    let delay = map
        .get("delay")
        .and_then(|n| cx.parse(n, &map.path("delay")));
    Some(Retry {
        max: max? as u32,
        delay,
    })
}

fn when(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> Option<When> {
    let text = cx.nonempty_str(node, path, "a condition such as `branch == 'main'`")?;
    match When::parse(text) {
        Ok(when) => Some(when),
        Err(err) => {
            let mut diag = Diagnostic::error(Code::Expression, path.to_path(), err.message.clone())
                .at(expression_span(node, text, err.offset, err.len));
            if let Some(expected) = err.expected {
                diag = diag.expected(expected);
            }
            if let Some(help) = err.help {
                diag = diag.help(help);
            }
            cx.push(diag);
            None
        }
    }
}

/// The span of bytes `offset..offset+len` of a scalar's text, when the scalar sits on one line
/// and its text is what is written (plain, or quoted without escapes before the offset).
pub(crate) fn expression_span(node: &Node, text: &str, offset: usize, len: usize) -> Span {
    let shift = match node.value {
        Value::Scalar {
            style: Style::Plain,
            ..
        } => 0,
        Value::Scalar {
            style: Style::Quoted,
            ..
        } => 1,
        _ => return node.span,
    };
    let one_line = node.span.start.line == node.span.end.line && !text.contains('\n');
    let (Some(before), true) = (text.get(..offset), one_line) else {
        return node.span;
    };
    let start = node.span.start.column + shift + before.chars().count();
    let width = text
        .get(offset..offset + len)
        .map_or(1, |s| s.chars().count().max(1));
    Span::on_line(node.span.start.line, start, width)
}

fn services(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> BTreeMap<Name, Service> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        cx.type_error(node, path, "a mapping of service names to services");
        return out;
    };
    for entry in entries {
        let p = path.key(&entry.key);
        let name = match entry.key.parse::<Name>() {
            Ok(name) => Some(name),
            Err(err) => {
                cx.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        p.to_path(),
                        format!("invalid service name `{}`", entry.key),
                    )
                    .expected(err.expected)
                    .at(entry.key_span),
                );
                None
            }
        };
        if let (Some(name), Some(service)) = (name, service(cx, &entry.value, &p, entry.key_span)) {
            out.insert(name, service);
        }
    }
    out
}

fn service(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Option<Service> {
    if let Value::Scalar { .. } = node.value {
        // `db: postgres:16` is short for `db: { image: postgres:16 }`.
        let image = cx.parse(node, path)?;
        return Some(Service {
            image,
            env: Default::default(),
            command: Vec::new(),
            ports: Vec::new(),
        });
    }
    let map = cx.map(node, path, at, "a service", SERVICE_KEYS)?;
    let image = cx
        .required(
            &map,
            "image",
            "the service's image, e.g. `image: postgres:16`",
        )
        .and_then(|n| cx.parse(n, &map.path("image")));
    let env = map
        .get("env")
        .map(|n| cx.env(n, &map.path("env"), key_span(&map, "env")))
        .unwrap_or_default();
    let command = match map.get("command") {
        Some(
            n @ Node {
                value: Value::Seq(_),
                ..
            },
        ) => {
            // Arguments may be empty (`redis-server --save ""`), so not `texts`.
            let path = map.path("command");
            let items = cx.list(n, &path);
            items
                .into_iter()
                .filter_map(|(n, p)| cx.text(n, &p))
                .collect()
        }
        Some(n) => cx
            .text(n, &map.path("command"))
            .map(|t| t.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let ports = match map.get("ports") {
        Some(n) => {
            let path = map.path("ports");
            let items = cx.list(n, &path);
            items
                .into_iter()
                .filter_map(|(n, p)| cx.integer(n, &p, 1..=65535).map(|v| v as u16))
                .collect()
        }
        None => Vec::new(),
    };
    Some(Service {
        image: image?,
        env,
        command,
        ports,
    })
}

fn resources(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Resources {
    let Some(map) = cx.map(node, path, at, "resources", &["cpu", "memory"]) else {
        return Resources::default();
    };
    Resources {
        cpu: map.get("cpu").and_then(|n| cx.parse(n, &map.path("cpu"))),
        memory: map
            .get("memory")
            .and_then(|n| cx.parse(n, &map.path("memory"))),
    }
}

fn matrix(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Option<Matrix> {
    let Value::Map(entries) = &node.value else {
        cx.type_error(node, path, "a mapping of variable names to lists of values");
        return None;
    };
    let _ = at;
    let mut matrix = Matrix::default();
    for entry in entries {
        let p = path.key(&entry.key);
        match entry.key.as_str() {
            "include" | "exclude" => {
                let mut combos = Vec::new();
                for (item, ip) in cx.list(&entry.value, &p) {
                    let env = cx.env(item, &ip, item.span);
                    if env.is_empty() && !is_null(item) {
                        cx.push(
                            Diagnostic::error(
                                Code::InvalidValue,
                                ip.to_path(),
                                "an empty combination",
                            )
                            .expected("a mapping of matrix variables to values")
                            .at(item.span),
                        );
                    }
                    combos.push(env);
                }
                if entry.key == "include" {
                    matrix.include = combos
                } else {
                    matrix.exclude = combos
                }
            }
            axis => {
                if !crate::model::is_env_name(axis) {
                    cx.push(
                        Diagnostic::error(Code::InvalidValue, p.to_path(), format!("`{axis}` is not a valid matrix variable name"))
                            .expected("a letter or `_`, then letters, digits or `_` (it becomes an environment variable)")
                            .at(entry.key_span),
                    );
                }
                let Value::Seq(items) = &entry.value.value else {
                    cx.type_error(&entry.value, &p, "a list of values");
                    continue;
                };
                let mut values = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        Value::Scalar { text, .. } => values.push(text.clone()),
                        _ => cx.type_error(item, &p.index(i), "a value (text, number or boolean)"),
                    }
                }
                matrix.axes.push((axis.to_owned(), values));
            }
        }
    }
    Some(matrix)
}

fn approval(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Option<Approval> {
    if let Value::Scalar { .. } = node.value {
        // `approval: true` asks an operator; `approval: false` is no gate.
        return cx.bool(node, path)?.then_some(Approval {
            role: Role::Operator,
        });
    }
    let map = cx.map(node, path, at, "an approval gate", &["role"])?;
    let role = match map.get("role") {
        None => Role::Operator,
        Some(n) => {
            let text = cx.str(n, &map.path("role"))?;
            let names: Vec<&str> = Role::ALL.iter().map(|(name, _)| *name).collect();
            match Role::ALL.iter().find(|(name, _)| *name == text) {
                Some((_, role)) => *role,
                None => {
                    cx.push(
                        Diagnostic::error(
                            Code::InvalidValue,
                            map.path("role").to_path(),
                            format!("unknown role `{text}`"),
                        )
                        .expected(names.join(", "))
                        .suggest(crate::suggest::did_you_mean(text, names.iter().copied()))
                        .at(n.span),
                    );
                    return None;
                }
            }
        }
    };
    Some(Approval { role })
}

fn cache(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Option<Cache> {
    let map = cx.map(node, path, at, "a cache", &["key", "fallback", "paths"])?;
    let key = cx
        .required(
            &map,
            "key",
            "a cache key, e.g. `key: \"cargo-{{ hash('Cargo.lock') }}\"`",
        )
        .and_then(|n| cx.nonempty_text(n, &map.path("key"), "a cache key"));
    let paths = cx
        .required(&map, "paths", "the paths to keep, e.g. `paths: [target]`")
        .map(|n| cx.texts(n, &map.path("paths")));
    let fallback = map
        .get("fallback")
        .map(|n| cx.texts(n, &map.path("fallback")))
        .unwrap_or_default();
    Some(Cache {
        key: key?,
        fallback,
        paths: paths?,
    })
}

pub(crate) fn hooks(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> crate::model::Hooks {
    let mut hooks = crate::model::Hooks::default();
    let Some(map) = cx.map(node, path, at, "post hooks", HOOK_KEYS) else {
        return hooks;
    };
    for (key, slot) in [
        ("always", &mut hooks.always),
        ("success", &mut hooks.success),
        ("failure", &mut hooks.failure),
        ("cancelled", &mut hooks.cancelled),
    ] {
        if let Some(n) = map.get(key) {
            *slot = steps_list(cx, n, &map.path(key), false);
        }
    }
    hooks
}
