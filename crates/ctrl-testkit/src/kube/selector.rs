//! Label selectors (`app=web,tier in (a,b),!canary`) and field selectors
//! (`metadata.name=x,status.phase!=Running`) as the API server parses them.

use std::collections::BTreeSet;

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<(String, Op)>,
}

impl LabelSelector {
    pub(crate) fn parse(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        let skip_ws = |i: &mut usize| {
            while *i < chars.len() && chars[*i].is_whitespace() {
                *i += 1;
            }
        };
        let bad = |why: &str| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{text}', {why}"
            ))
        };
        loop {
            skip_ws(&mut i);
            if i >= chars.len() {
                break;
            }
            let negated = chars[i] == '!';
            if negated {
                i += 1;
                skip_ws(&mut i);
            }
            let start = i;
            while i < chars.len() && !matches!(chars[i], '=' | '!' | ',' | ' ' | '(' | ')') {
                i += 1;
            }
            let key: String = chars[start..i].iter().collect();
            if key.is_empty() {
                return Err(bad("expected: identifier"));
            }
            if let Err(why) = super::validate::qualified_name(&key) {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: values[0][{key}]: Invalid value: \"{key}\": {why}"
                )));
            }
            skip_ws(&mut i);
            if negated {
                requirements.push((key, Op::NotExists));
            } else if i >= chars.len() || chars[i] == ',' {
                requirements.push((key, Op::Exists));
            } else if chars[i] == '=' || chars[i] == '!' {
                let not = chars[i] == '!';
                i += 1;
                if i < chars.len() && chars[i] == '=' {
                    i += 1;
                } else if not {
                    return Err(bad("expected: !="));
                }
                skip_ws(&mut i);
                let start = i;
                while i < chars.len() && !matches!(chars[i], ',' | ' ') {
                    i += 1;
                }
                let value: String = chars[start..i].iter().collect();
                check_value(&value)?;
                requirements.push((key, if not { Op::NotEq(value) } else { Op::Eq(value) }));
            } else {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let not_in = match word.as_str() {
                    "in" => false,
                    "notin" => true,
                    _ => return Err(bad("expected: in, notin, =, ==, !=, gt, lt")),
                };
                skip_ws(&mut i);
                if i >= chars.len() || chars[i] != '(' {
                    return Err(bad("expected: '('"));
                }
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                if i >= chars.len() {
                    return Err(bad("expected: ')'"));
                }
                let inner: String = chars[start..i].iter().collect();
                i += 1;
                let mut values = BTreeSet::new();
                for value in inner.split(',') {
                    let value = value.trim().to_owned();
                    check_value(&value)?;
                    values.insert(value);
                }
                requirements.push((
                    key,
                    if not_in {
                        Op::NotIn(values)
                    } else {
                        Op::In(values)
                    },
                ));
            }
            skip_ws(&mut i);
            if i < chars.len() {
                if chars[i] != ',' {
                    return Err(bad("expected: ','"));
                }
                i += 1;
            }
        }
        Ok(Self { requirements })
    }

    /// A selector from a `LabelSelector` object (`matchLabels`,
    /// `matchExpressions`).
    pub(crate) fn from_object(selector: &Value) -> Self {
        let mut requirements = Vec::new();
        if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push((k.clone(), Op::Eq(v.as_str().unwrap_or_default().to_owned())));
            }
        }
        if let Some(expressions) = selector.get("matchExpressions").and_then(Value::as_array) {
            for e in expressions {
                let key = e["key"].as_str().unwrap_or_default().to_owned();
                let values: BTreeSet<String> = e["values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e["operator"].as_str().unwrap_or_default() {
                    "In" => Op::In(values),
                    "NotIn" => Op::NotIn(values),
                    "Exists" => Op::Exists,
                    _ => Op::NotExists,
                };
                requirements.push((key, op));
            }
        }
        Self { requirements }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's labels (`metadata.labels`) match.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        self.matches_labels(labels)
    }

    pub(crate) fn matches_labels(&self, labels: Option<&Value>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|(key, op)| match op {
            Op::Eq(v) => get(key) == Some(v.as_str()),
            Op::NotEq(v) => get(key) != Some(v.as_str()),
            Op::In(vs) => get(key).is_some_and(|l| vs.contains(l)),
            Op::NotIn(vs) => get(key).is_none_or(|l| !vs.contains(l)),
            Op::Exists => get(key).is_some(),
            Op::NotExists => get(key).is_none(),
        })
    }
}

fn check_value(value: &str) -> Result<(), ApiError> {
    super::validate::label_value(value).map_err(|why| {
        ApiError::bad_request(format!(
            "unable to parse requirement: values[0]: Invalid value: \"{value}\": {why}"
        ))
    })
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

/// The fields each kind supports in field selectors besides
/// `metadata.name` and `metadata.namespace`.
fn supported_fields(store_key: &str) -> &'static [&'static str] {
    match store_key {
        "/pods" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        "/events" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "/secrets" => &["type"],
        "/namespaces" => &["status.phase"],
        "/nodes" => &["spec.unschedulable"],
        "/persistentvolumeclaims" => &[],
        "apps/replicasets" => &["status.replicas"],
        "batch/jobs" => &["status.successful"],
        _ => &[],
    }
}

impl FieldSelector {
    pub(crate) fn parse(text: &str, store_key: &str, builtin: bool) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let known = matches!(field, "metadata.name" | "metadata.namespace")
                || supported_fields(store_key).contains(&field);
            if !known {
                return Err(ApiError::bad_request(if builtin {
                    format!("field label not supported: {field}")
                } else {
                    format!(
                        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                    )
                }));
            }
            requirements.push((field.to_owned(), negated, value.trim().to_owned()));
        }
        Ok(Self { requirements })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The name this selector pins (`metadata.name=x`), for lookups.
    pub(crate) fn name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, negated, _)| f == "metadata.name" && !negated)
            .map(|(_, _, v)| v.as_str())
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, negated, value)| {
            let actual = field_value(object, field);
            (actual == *value) != *negated
        })
    }
}

/// A field's value as a string the way field selectors compare it
/// (missing: empty).
fn field_value(object: &Value, field: &str) -> String {
    if field == "source" {
        return object
            .pointer("/source/component")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
    }
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.get("ip").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selector_grammar() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&obj);
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app!=web"));
        assert!(m("tier in (front, back)"));
        assert!(!m("tier notin (front)"));
        assert!(m("app"));
        assert!(!m("!app"));
        assert!(m("!canary"));
        assert!(m("app=web,tier in (front),!canary"));
        assert!(!m("app=web,canary"));
        assert!(m(""));
        assert!(LabelSelector::parse("app in (a").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj =
            json!({"metadata": {"name": "x", "namespace": "ns"}, "status": {"phase": "Running"}});
        let s =
            FieldSelector::parse("metadata.name=x,status.phase!=Pending", "/pods", true).unwrap();
        assert!(s.matches(&obj));
        let s = FieldSelector::parse("metadata.namespace==other", "/pods", true).unwrap();
        assert!(!s.matches(&obj));
        let e = FieldSelector::parse("spec.foo=1", "apps/deployments", true).unwrap_err();
        assert_eq!(e.message(), "field label not supported: spec.foo");
    }
}
