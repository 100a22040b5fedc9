//! Decoding of the pipeline's top level: name, triggers, parameters, env, defaults, jobs, post.

use std::collections::BTreeMap;

use super::cx::{Cx, is_null};
use super::job::{self, key_span};
use crate::diagnostic::{Code, Diagnostic, PathRef, Span};
use crate::model::{
    CheckoutSettings, Defaults, Name, Parameter, Pipeline, RefFilter, Triggers, is_env_name,
};
use crate::yaml::{Node, Value};

const PIPELINE_KEYS: &[&str] = &[
    "name",
    "description",
    "on",
    "parameters",
    "env",
    "secrets",
    "checkout",
    "defaults",
    "jobs",
    "post",
];
const TRIGGER_KEYS: &[&str] = &["push", "pull_request", "schedule", "manual"];
const DEFAULT_KEYS: &[&str] = &["image", "pull", "runs_on", "timeout", "retry", "shell"];

/// Decodes the root node. The model is best effort: parts with errors are left out or stand in
/// unchecked, so that validation can still look at everything else.
pub(crate) fn pipeline(cx: &mut Cx, root: &Node) -> Option<Pipeline> {
    let path = PathRef::Root;
    let start = Span {
        start: root.span.start,
        end: root.span.start,
    };
    let map = cx.map(root, &path, start, "the pipeline", PIPELINE_KEYS)?;
    let name = cx
        .required(&map, "name", "the pipeline's name, e.g. `name: web`")
        .and_then(|n| cx.parse::<Name>(n, &map.path("name")));
    let mut pipeline = Pipeline {
        name: name.unwrap_or_else(|| Name::unchecked("pipeline")),
        description: map
            .get("description")
            .and_then(|n| cx.text(n, &map.path("description"))),
        on: Triggers::default(),
        parameters: BTreeMap::new(),
        env: Default::default(),
        secrets: Vec::new(),
        checkout: CheckoutSettings::default(),
        defaults: Defaults::default(),
        jobs: Vec::new(),
        post: Default::default(),
    };
    if map.has("on") {
        pipeline.on = triggers(cx, map.get("on"), &map.path("on"), key_span(&map, "on"));
    }
    if let Some(n) = map.get("parameters") {
        pipeline.parameters = parameters(cx, n, &map.path("parameters"));
    }
    if let Some(n) = map.get("env") {
        pipeline.env = cx.env(n, &map.path("env"), key_span(&map, "env"));
    }
    if let Some(n) = map.get("secrets") {
        pipeline.secrets = cx.texts(n, &map.path("secrets"));
    }
    if let Some(n) = map.get("checkout") {
        pipeline.checkout = checkout(cx, n, &map.path("checkout"), key_span(&map, "checkout"));
    }
    if let Some(n) = map.get("defaults") {
        pipeline.defaults = defaults(cx, n, &map.path("defaults"), key_span(&map, "defaults"));
    }
    if let Some(n) = cx.required(&map, "jobs", "a mapping of job names to jobs") {
        jobs(
            cx,
            n,
            &map.path("jobs"),
            key_span(&map, "jobs"),
            &mut pipeline,
        );
    }
    if let Some(n) = map.get("post") {
        pipeline.post = job::hooks(cx, n, &map.path("post"), key_span(&map, "post"));
    }
    Some(pipeline)
}

fn jobs(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span, pipeline: &mut Pipeline) {
    let Value::Map(entries) = &node.value else {
        cx.type_error(node, path, "a mapping of job names to jobs");
        return;
    };
    if entries.is_empty() {
        cx.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.to_path(),
                "the pipeline has no job",
            )
            .expected("at least one job")
            .at(at),
        );
    }
    pipeline.jobs.reserve(entries.len());
    for entry in entries {
        let p = path.key(&entry.key);
        let name = match entry.key.parse::<Name>() {
            Ok(name) => name,
            Err(err) => {
                cx.push(
                    Diagnostic::error(
                        Code::InvalidValue,
                        p.to_path(),
                        format!("invalid job name `{}`", entry.key),
                    )
                    .expected(err.expected)
                    .at(entry.key_span),
                );
                Name::unchecked(&entry.key)
            }
        };
        if is_null(&entry.value) {
            cx.push(
                Diagnostic::error(
                    Code::MissingKey,
                    p.to_path(),
                    format!("job `{}` is empty", entry.key),
                )
                .expected("a job with `steps`")
                .at(entry.key_span),
            );
            // Keep the job so that references to it still resolve.
            pipeline.jobs.push(crate::model::Job::new(name));
            continue;
        }
        if let Some(job) = job::job(cx, name, &entry.value, &p, entry.key_span) {
            pipeline.jobs.push(job);
        }
    }
}

fn triggers(cx: &mut Cx, node: Option<&Node>, path: &PathRef<'_>, at: Span) -> Triggers {
    let mut triggers = Triggers {
        manual: false,
        ..Triggers::default()
    };
    let Some(node) = node else {
        return Triggers::default();
    };
    // `on: push` and `on: [push, manual]` name triggers without settings.
    if !matches!(node.value, Value::Map(_)) {
        for (item, p) in cx.list(node, path) {
            let Some(name) = cx.str(item, &p) else {
                continue;
            };
            match name {
                "push" => triggers.push = Some(RefFilter::default()),
                "pull_request" => triggers.pull_request = Some(RefFilter::default()),
                "manual" => triggers.manual = true,
                other => cx.push(
                    Diagnostic::error(Code::InvalidValue, p.to_path(), format!("unknown trigger `{other}`"))
                        .expected("push, pull_request or manual (a schedule needs `schedule: [\"0 3 * * *\"]`)")
                        .suggest(crate::suggest::did_you_mean(other, TRIGGER_KEYS.iter().copied()))
                        .at(item.span),
                ),
            }
        }
        return triggers;
    }
    let Some(map) = cx.map(node, path, at, "triggers", TRIGGER_KEYS) else {
        return triggers;
    };
    if map.has("push") {
        triggers.push = Some(ref_filter(
            cx,
            map.get("push"),
            &map.path("push"),
            key_span(&map, "push"),
        ));
    }
    if map.has("pull_request") {
        let p = map.path("pull_request");
        triggers.pull_request = Some(ref_filter(
            cx,
            map.get("pull_request"),
            &p,
            key_span(&map, "pull_request"),
        ));
    }
    if let Some(n) = map.get("schedule") {
        triggers.schedule = cx.parsed_list(n, &map.path("schedule"));
    }
    if map.has("manual") {
        triggers.manual = match map.get("manual") {
            None => true,
            Some(
                n @ Node {
                    value: Value::Map(entries),
                    ..
                },
            ) => {
                if let Some(first) = entries.first() {
                    cx.push(
                        Diagnostic::error(
                            Code::UnknownKey,
                            map.path("manual").key(&first.key).to_path(),
                            format!("unknown key `{}` in the manual trigger", first.key),
                        )
                        .expected("`manual: {}` (the trigger has no settings)")
                        .at(first.key_span),
                    );
                }
                let _ = n;
                true
            }
            Some(n) => cx.bool(n, &map.path("manual")).unwrap_or(true),
        };
    }
    triggers
}

fn ref_filter(cx: &mut Cx, node: Option<&Node>, path: &PathRef<'_>, at: Span) -> RefFilter {
    let Some(node) = node else {
        return RefFilter::default();
    };
    let Some(map) = cx.map(
        node,
        path,
        at,
        "a push or pull request filter",
        &["branches", "tags", "paths", "cancel_superseded"],
    ) else {
        return RefFilter::default();
    };
    let mut get = |key: &str| {
        map.get(key)
            .map(|n| cx.texts(n, &map.path(key)))
            .unwrap_or_default()
    };
    let (branches, tags, paths) = (get("branches"), get("tags"), get("paths"));
    let cancel_superseded = map
        .get("cancel_superseded")
        .and_then(|n| cx.bool(n, &map.path("cancel_superseded")))
        .unwrap_or(false);
    RefFilter {
        branches,
        tags,
        paths,
        cancel_superseded,
    }
}

fn parameters(cx: &mut Cx, node: &Node, path: &PathRef<'_>) -> BTreeMap<String, Parameter> {
    let mut out = BTreeMap::new();
    let Value::Map(entries) = &node.value else {
        cx.type_error(node, path, "a mapping of parameter names to parameters");
        return out;
    };
    for entry in entries {
        let p = path.key(&entry.key);
        if !is_env_name(&entry.key) {
            cx.push(
                Diagnostic::error(Code::InvalidValue, p.to_path(), format!("`{}` is not a valid parameter name", entry.key))
                    .expected("a letter or `_`, then letters, digits or `_` (it becomes an environment variable)")
                    .at(entry.key_span),
            );
        }
        let parameter = match &entry.value.value {
            // `TARGET: debug` is short for `TARGET: { default: debug }`.
            Value::Scalar { text, .. } if !is_null(&entry.value) => Parameter {
                default: Some(text.clone()),
                ..Parameter::default()
            },
            Value::Scalar { .. } => Parameter::default(),
            _ => {
                let Some(map) = cx.map(
                    &entry.value,
                    &p,
                    entry.key_span,
                    "a parameter",
                    &["default", "choices", "description"],
                ) else {
                    continue;
                };
                Parameter {
                    default: map
                        .get("default")
                        .and_then(|n| cx.text(n, &map.path("default"))),
                    choices: map
                        .get("choices")
                        .map(|n| cx.texts(n, &map.path("choices")))
                        .unwrap_or_default(),
                    description: map
                        .get("description")
                        .and_then(|n| cx.text(n, &map.path("description"))),
                }
            }
        };
        out.insert(entry.key.clone(), parameter);
    }
    out
}

/// The most history a checkout may ask for, in commits (0 is all of it).
const MAX_DEPTH: i64 = 1_000_000;

/// `checkout: false`, `checkout: true`, or `checkout: { depth, submodules }`.
fn checkout(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> CheckoutSettings {
    let mut settings = CheckoutSettings::default();
    if !matches!(node.value, Value::Map(_)) {
        if let Some(enabled) = cx.bool(node, path) {
            settings.enabled = enabled;
        }
        return settings;
    }
    let Some(map) = cx.map(
        node,
        path,
        at,
        "checkout settings",
        &["depth", "submodules"],
    ) else {
        return settings;
    };
    if let Some(n) = map.get("depth")
        && let Some(depth) = cx.integer(n, &map.path("depth"), 0..=MAX_DEPTH)
    {
        settings.depth = u32::try_from(depth).ok().filter(|&d| d > 0);
    }
    if let Some(n) = map.get("submodules")
        && let Some(submodules) = cx.bool(n, &map.path("submodules"))
    {
        settings.submodules = submodules;
    }
    settings
}

fn defaults(cx: &mut Cx, node: &Node, path: &PathRef<'_>, at: Span) -> Defaults {
    let Some(map) = cx.map(node, path, at, "defaults", DEFAULT_KEYS) else {
        return Defaults::default();
    };
    Defaults {
        image: map
            .get("image")
            .and_then(|n| cx.parse(n, &map.path("image"))),
        pull: map
            .get("pull")
            .and_then(|n| job::pull_policy(cx, n, &map.path("pull"))),
        runs_on: map
            .get("runs_on")
            .map(|n| cx.parsed_list(n, &map.path("runs_on")))
            .unwrap_or_default(),
        timeout: map
            .get("timeout")
            .and_then(|n| cx.parse(n, &map.path("timeout"))),
        retry: map
            .get("retry")
            .and_then(|n| job::retry(cx, n, &map.path("retry"), key_span(&map, "retry"))),
        shell: map
            .get("shell")
            .and_then(|n| job::shell(cx, n, &map.path("shell"))),
    }
}
