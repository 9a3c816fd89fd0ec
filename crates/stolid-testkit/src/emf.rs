//! A checker for CloudWatch Embedded Metric Format lines, after the
//! specification (docs.aws.amazon.com, "Specification: Embedded metric
//! format"): what CloudWatch would reject or silently not turn into metrics.

use serde_json::Value;

/// The units CloudWatch accepts.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// `Ok` if `line` is a valid EMF object whose every declared metric and
/// dimension is present at the top level with the right type.
pub fn check(line: &Value) -> Result<(), String> {
    let root = line.as_object().ok_or("an EMF line is a JSON object")?;
    let aws = root.get("_aws").and_then(Value::as_object).ok_or("`_aws` must be an object")?;
    let timestamp = aws.get("Timestamp").and_then(Value::as_i64).ok_or("`_aws.Timestamp` must be an integer")?;
    // Milliseconds since the epoch, not seconds: CloudWatch drops events far from now.
    if !(1_000_000_000_000..10_000_000_000_000).contains(&timestamp) {
        return Err(format!("`_aws.Timestamp` {timestamp} is not in epoch milliseconds"));
    }
    let directives =
        aws.get("CloudWatchMetrics").and_then(Value::as_array).ok_or("`_aws.CloudWatchMetrics` must be an array")?;
    if directives.is_empty() {
        return Err("`_aws.CloudWatchMetrics` declares no metrics".into());
    }
    for directive in directives {
        let namespace = directive["Namespace"].as_str().ok_or("`Namespace` must be a string")?;
        if namespace.is_empty() || namespace.len() > 255 {
            return Err(format!("`Namespace` {namespace:?} must be 1 to 255 characters"));
        }
        let sets = directive["Dimensions"].as_array().ok_or("`Dimensions` must be an array of dimension sets")?;
        for set in sets {
            let keys = set.as_array().ok_or("a dimension set must be an array")?;
            if keys.len() > 30 {
                return Err("a dimension set holds at most 30 dimensions".into());
            }
            for key in keys {
                let key = key.as_str().ok_or("dimension keys are strings")?;
                match root.get(key) {
                    Some(Value::String(value)) if !value.is_empty() && value.len() <= 1024 => {}
                    other => return Err(format!("dimension `{key}` must be a top-level string, got {other:?}")),
                }
            }
        }
        let metrics = directive["Metrics"].as_array().ok_or("`Metrics` must be an array")?;
        if metrics.len() > 100 {
            return Err("a directive holds at most 100 metrics".into());
        }
        let mut names = std::collections::HashSet::new();
        for metric in metrics {
            let name = metric["Name"].as_str().ok_or("a metric's `Name` must be a string")?;
            if name.is_empty() || name.len() > 1024 || !names.insert(name) {
                return Err(format!("metric name {name:?} is empty, too long or repeated"));
            }
            if let Some(unit) = metric.get("Unit")
                && !unit.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                return Err(format!("metric `{name}` has an invalid unit {unit}"));
            }
            if let Some(resolution) = metric.get("StorageResolution")
                && resolution != 1
                && resolution != 60
            {
                return Err(format!("metric `{name}`: StorageResolution is 1 or 60"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(values)) if values.len() <= 100 && values.iter().all(Value::is_number) => {}
                other => return Err(format!("metric `{name}` must be a top-level number, got {other:?}")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line() -> Value {
        json!({
            "_aws": {"Timestamp": 1_764_000_000_000_i64, "CloudWatchMetrics": [{
                "Namespace": "stolid", "Dimensions": [["model"]], "Metrics": [{"Name": "latency_ms", "Unit": "Milliseconds"}]
            }]},
            "model": "m", "latency_ms": 3.5
        })
    }

    #[test]
    fn a_valid_line_passes_and_each_kind_of_mistake_is_caught() {
        check(&line()).unwrap();
        type Breaks = Box<dyn Fn(&mut Value)>;
        let broken: Vec<(&str, Breaks)> = vec![
            ("seconds", Box::new(|l| l["_aws"]["Timestamp"] = json!(1_764_000_000))),
            ("missing metric", Box::new(|l| l.as_object_mut().unwrap().remove("latency_ms").map(drop).unwrap())),
            ("string metric", Box::new(|l| l["latency_ms"] = json!("3.5"))),
            ("numeric dimension", Box::new(|l| l["model"] = json!(1))),
            ("bad unit", Box::new(|l| l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("ms"))),
            ("no namespace", Box::new(|l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] = json!(""))),
        ];
        for (what, breaks) in broken {
            let mut bad = line();
            breaks(&mut bad);
            assert!(check(&bad).is_err(), "{what}: {bad}");
        }
    }
}
