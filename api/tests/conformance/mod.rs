//! An OpenAPI conformance check: an answer of the live server is held against what the server's
//! own document says of that operation: its status must be documented, its media type too, and
//! its JSON body must fit the documented schema (`$ref`, `type`, `properties`, `required`,
//! `additionalProperties`, `items`, `enum`, `minimum`, `maximum`, `oneOf`/`anyOf`/`allOf`).

use serde_json::Value;

/// The operation `method` `template` of `doc`.
pub fn operation<'d>(doc: &'d Value, method: &str, template: &str) -> &'d Value {
    &doc["paths"][template][method.to_lowercase()]
}

/// Whether an answer (`status`, `content_type`, `body`) to `method` `template` is what the
/// document says; the error says how it is not.
pub fn check(
    doc: &Value,
    method: &str,
    template: &str,
    status: u16,
    content_type: &str,
    body: &str,
) -> Result<(), String> {
    let at = format!("{method} {template} answered {status}");
    let responses = &operation(doc, method, template)["responses"];
    let Some(response) = responses.get(status.to_string()) else {
        let documented: Vec<&String> = responses
            .as_object()
            .map(|r| r.keys().collect())
            .unwrap_or_default();
        return Err(format!(
            "{at}: not documented (documented: {documented:?}); body: {body}"
        ));
    };
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return Ok(());
    };
    let bare = |m: &str| m.split(';').next().unwrap_or_default().trim().to_owned();
    let media = bare(content_type);
    let Some(documented) = content
        .iter()
        .find(|(m, _)| bare(m) == media)
        .map(|(_, d)| d)
    else {
        let listed: Vec<&String> = content.keys().collect();
        return Err(format!(
            "{at}: media type `{media}` not documented (documented: {listed:?})"
        ));
    };
    if !media.ends_with("json") {
        return Ok(());
    }
    let Some(schema) = documented.get("schema") else {
        return Ok(());
    };
    let value: Value =
        serde_json::from_str(body).map_err(|err| format!("{at}: not JSON ({err}): {body}"))?;
    fits(doc, schema, &value, "$").map_err(|err| format!("{at}: {err}; body: {body}"))
}

/// Whether `value` fits `schema`.
pub fn fits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or_else(|| format!("{at}: unknown reference {reference}"))?;
        return fits(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for part in all {
            fits(doc, part, value, at)?;
        }
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(choices) = schema.get(key).and_then(Value::as_array) {
            let fitting = choices
                .iter()
                .filter(|c| fits(doc, c, value, at).is_ok())
                .count();
            let ok = if key == "oneOf" {
                fitting == 1
            } else {
                fitting >= 1
            };
            if !ok {
                return Err(format!("{at}: {value} fits {fitting} of the {key} choices"));
            }
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {values:?}"));
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let kind = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let accepted = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
        if !accepted {
            return Err(format!("{at}: {value} is {kind}, documented as {types:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{at}: {n} is above the maximum {max}"));
        }
    }
    if let Value::Array(items) = value
        && let Some(item) = schema.get("items")
    {
        for (i, v) in items.iter().enumerate() {
            fits(doc, item, v, &format!("{at}[{i}]"))?;
        }
    }
    if let Value::Object(fields) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !fields.contains_key(name) {
                return Err(format!("{at}: the required field `{name}` is missing"));
            }
        }
        for (name, v) in fields {
            let at = format!("{at}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(property) => fits(doc, property, v, &at)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{at}: not a documented field"));
                    }
                    Some(extra @ Value::Object(_)) => fits(doc, extra, v, &at)?,
                    // Undocumented fields of a schema that lists its properties are a drift.
                    _ if properties.is_some() => {
                        return Err(format!("{at}: not a documented field"));
                    }
                    _ => {}
                },
            }
        }
    }
    Ok(())
}
