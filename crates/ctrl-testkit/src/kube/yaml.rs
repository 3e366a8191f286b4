//! YAML request bodies (`application/apply-patch+yaml`, `application/yaml`)
//! as JSON values. kube-rs sends JSON (valid YAML); kubectl and others may
//! send YAML proper.

use serde_json::{Map, Number, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// A body as JSON: JSON itself, else the first YAML document.
pub(crate) fn parse(body: &[u8]) -> Result<Value, String> {
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.into_iter().next().map_or(Ok(Value::Null), to_json)
}

/// Every document of a YAML stream (e.g. `helm template`'s output) as
/// JSON, empty documents left out.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    docs.into_iter()
        .filter(|d| !matches!(d, Yaml::Null))
        .map(to_json)
        .collect()
}

fn to_json(yaml: Yaml) -> Result<Value, String> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(text) => {
            let f: f64 = text
                .parse()
                .map_err(|_| format!("invalid number {text:?}"))?;
            Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Array(items) => {
            Value::Array(items.into_iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Yaml::Hash(hash) => {
            let mut map = Map::new();
            for (k, v) in hash {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s,
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".to_owned(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                map.insert(key, to_json(v)?);
            }
            Value::Object(map)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".to_owned()),
        Yaml::BadValue => return Err("invalid YAML value".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_and_json_bodies() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: \"1\"\n  n: 2\nlist: [a, b]\n";
        assert_eq!(
            parse(yaml).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
                   "data": {"a": "1", "n": 2}, "list": ["a", "b"]})
        );
        assert_eq!(parse(br#"{"a": [1]}"#).unwrap(), json!({"a": [1]}));
        assert!(parse(b"a: [").is_err());
    }
}
