//! The deployment files parse, and what they configure is what stolid reads.
//! `make compose-test` runs docker-compose.yml and the image for real; the task
//! definition cannot be run here (no AWS), so these checks are all it gets.

use std::collections::HashMap;

use stolid::config::{Config, VARIABLES};

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The task definition's settings are all real variables, secrets stay out of
/// plain env, and the stop timeout leaves room for stolid's own drain deadline.
#[test]
fn the_task_definition_matches_the_config() {
    let task: serde_json::Value = serde_json::from_str(&read("task-definition.json")).unwrap();
    assert_eq!(task["requiresCompatibilities"][0], "FARGATE");
    let container = &task["containerDefinitions"][0];
    let env: HashMap<String, String> = container["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap().to_string()))
        .collect();
    let secrets: Vec<&str> =
        container["secrets"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    for name in env.keys().map(String::as_str).chain(secrets.iter().copied()) {
        assert!(VARIABLES.contains(&name), "{name} is not a stolid setting");
    }
    for secret in ["DATABASE_URL", "OPENAI_API_KEY"] {
        assert!(secrets.contains(&secret) && !env.contains_key(secret), "{secret} must come from secrets");
    }
    let shutdown: u64 = env["SHUTDOWN_TIMEOUT_SECS"].parse().unwrap();
    assert!(container["stopTimeout"].as_u64().unwrap() > shutdown, "ECS must wait longer than stolid drains");
    assert_eq!(container["logConfiguration"]["logDriver"], "awslogs");
    assert_eq!(container["healthCheck"]["command"][2], "healthcheck");
    assert_eq!(container["readonlyRootFilesystem"], true, "stolid writes nothing to disk");
    assert_eq!(container["portMappings"][0]["containerPort"].as_u64().unwrap().to_string(), env["PORT"]);
    // With the secrets filled in, the environment is a valid configuration.
    let mut full = env.clone();
    full.insert("DATABASE_URL".into(), "postgres://u:p@db/stolid".into());
    full.insert("OPENAI_API_KEY".into(), "sk-x".into());
    let config = Config::from_lookup(|k| full.get(k).cloned()).unwrap();
    assert_eq!(config.llm.embedding_dimensions, 1536);
}

/// docker-compose.yml parses, has the whole stack, and gives stolid a valid configuration.
#[test]
fn docker_compose_runs_the_whole_stack_with_a_valid_config() {
    let compose: serde_yaml::Value = serde_yaml::from_str(&read("docker-compose.yml")).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for service in ["postgres", "moto", "aws-setup", "stolid"] {
        assert!(services.contains_key(service), "service {service} missing");
    }
    assert!(compose["services"]["postgres"]["image"].as_str().unwrap().starts_with("pgvector/pgvector:0.8"));
    // A machine that already runs Postgres or moto must not stop `up`: their host
    // ports are on loopback and chosen by Docker unless a variable pins them.
    for (service, port, variable) in [("postgres", 5432, "STOLID_POSTGRES_PORT"), ("moto", 4566, "STOLID_MOTO_PORT")] {
        let ports = compose["services"][service]["ports"].as_sequence().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].as_str().unwrap(), format!("127.0.0.1:${{{variable}:-}}:{port}"));
    }
    assert_eq!(compose["services"]["stolid"]["ports"][0].as_str().unwrap(), "${STOLID_PORT:-8080}:8080");
    let stolid = &compose["services"]["stolid"];
    assert_eq!(stolid["read_only"], serde_yaml::Value::Bool(true), "run as ECS runs it: read-only root");
    assert_eq!(stolid["healthcheck"]["test"][2].as_str(), Some("healthcheck"));
    let env: HashMap<String, String> = compose["services"]["stolid"]["environment"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let value = v.as_str().unwrap_or_default().to_string();
            // `${VAR:-default}` resolves to its default when VAR is unset.
            let value = match value.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(expr) => expr.split_once(":-").map(|(_, d)| d.to_string()).unwrap_or_default(),
                None => value,
            };
            (k.as_str().unwrap().to_string(), value)
        })
        .collect();
    for name in env.keys() {
        assert!(VARIABLES.contains(&name.as_str()), "{name} is not a stolid setting");
    }
    let config = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    assert_eq!(config.s3_bucket, "stolid-dev");
    assert!(config.sqs_queue_url.ends_with("/stolid-jobs"));
    assert_eq!(config.llm.provider.as_str(), "local", "no key: the local provider");
    let grace: u64 = stolid["stop_grace_period"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(grace > config.shutdown_timeout.as_secs(), "compose must wait longer than stolid drains");
}

/// Every setting stolid reads is documented, by name, in the configuration
/// guide: a new variable without a line there fails here.
#[test]
fn every_setting_is_in_the_configuration_guide() {
    let guide = read("docs/configuration.md");
    let missing: Vec<&str> = VARIABLES.iter().copied().filter(|name| !guide.contains(&format!("`{name}`"))).collect();
    assert!(missing.is_empty(), "not in docs/configuration.md: {missing:?}");
}

/// `docs/openapi.json`, the committed API reference, is the document the server
/// serves: a route or a type changed without `make openapi` fails here.
#[test]
fn the_committed_openapi_document_is_current() {
    let committed: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let served = serde_json::to_value(stolid::api::openapi()).unwrap();
    assert!(committed == served, "docs/openapi.json is out of date: run `make openapi`");
}
