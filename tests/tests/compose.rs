//! The container setup, checked without a Docker engine: `docker-compose.yml` against the official
//! Compose schema (`../shared/data/compose-spec.json`, or `COMPOSE_SCHEMA_PATH`), how it wires
//! the four services together, the Dockerfile it builds, and that the variables it sets and those
//! `.env.example` documents are exactly what the services read (`shared/src/config.rs`).

#![allow(
    clippy::expect_used,
    reason = "a test binary: a broken expectation, in a test or its helpers, is the failure"
)]

use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde_json::{Value, json};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DEFAULT_SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/compose-spec.json"
);
const APPS: [&str; 2] = ["api", "sync-worker"];

fn read(relative: &str) -> String {
    let path = Path::new(WORKSPACE).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The compose file as JSON, with `<<` merge keys resolved as Compose resolves them.
fn compose() -> Value {
    let mut yaml: serde_norway::Value = serde_norway::from_str(&read("docker-compose.yml"))
        .expect("docker-compose.yml is not YAML");
    yaml.apply_merge()
        .expect("docker-compose.yml has an invalid `<<` merge key");
    serde_norway::from_value(yaml).expect("docker-compose.yml has keys JSON cannot hold")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose["services"]
        .get(name)
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// Words of a command given either as a list or as one string.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(String::from).collect(),
        Value::Array(items) => items
            .iter()
            .map(|w| w.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => Vec::new(),
    }
}

/// `(host port, container port)` of every published port, in short or long syntax.
fn published_ports(service: &Value) -> Vec<(String, String)> {
    let ports = service["ports"].as_array().cloned().unwrap_or_default();
    ports
        .iter()
        .map(|port| match port {
            Value::Object(long) => (plain(&long["published"]), plain(&long["target"])),
            short => {
                let short = plain(short);
                let spec = short.split('/').next().unwrap_or_default();
                let mut parts = spec.rsplitn(3, ':');
                let container = parts.next().unwrap_or_default().to_string();
                (parts.next().unwrap_or_default().to_string(), container)
            }
        })
        .collect()
}

/// A scalar as text: YAML leaves `3000` a number and `"3000"` a string, Compose takes both.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `(name, value)` of a service's `environment`, in map or list form.
fn environment(service: &Value) -> Vec<(String, String)> {
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), plain(v))).collect(),
        Value::Array(list) => list
            .iter()
            .map(|item| {
                let item = plain(item);
                let (name, value) = item.split_once('=').unwrap_or((&item, ""));
                (name.to_string(), value.to_string())
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The condition a service waits for on `dependency` (a list entry only waits for the start).
fn dependency_condition(service: &Value, dependency: &str) -> Option<String> {
    match &service["depends_on"] {
        Value::Object(map) => map.get(dependency).map(|d| {
            d["condition"]
                .as_str()
                .unwrap_or("service_started")
                .to_string()
        }),
        Value::Array(list) => list
            .iter()
            .any(|d| d == dependency)
            .then(|| "service_started".to_string()),
        _ => None,
    }
}

/// The Dockerfile a service is built from, resolved from the workspace root.
fn dockerfile_of(service: &Value, name: &str) -> PathBuf {
    let (context, dockerfile) = match &service["build"] {
        Value::String(context) => (context.as_str(), "Dockerfile"),
        Value::Object(build) => (
            build.get("context").and_then(Value::as_str).unwrap_or("."),
            build
                .get("dockerfile")
                .and_then(Value::as_str)
                .unwrap_or("Dockerfile"),
        ),
        _ => panic!("`{name}` is not built from this repository (no `build`)"),
    };
    Path::new(WORKSPACE).join(context).join(dockerfile)
}

/// Dockerfile instructions as `(KEYWORD, arguments)`, continuation lines joined.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with('#') || (line.is_empty() && pending.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let (keyword, args) = pending
                    .split_once(char::is_whitespace)
                    .unwrap_or((&pending, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
                pending.clear();
            }
        }
    }
    out
}

/// Every variable `shared/src/config.rs` passes to `get(..)`, `parse(&get, ..)` or
/// `positive(&get, ..)`, plus `RUST_LOG`, which tracing's `EnvFilter` reads.
fn variables_the_services_read() -> BTreeSet<String> {
    let source = read("shared/src/config.rs");
    let mut names = BTreeSet::from(["RUST_LOG".to_string()]);
    // `set` is `get` with empty values counted as unset.
    for call in ["get(", "set(", "&get,", "&set,"] {
        for (at, _) in source.match_indices(call) {
            let part_of_longer_name = source[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
            let literal = source[at + call.len()..].trim_start().strip_prefix('"');
            let name = literal
                .and_then(|rest| rest.split_once('"'))
                .map(|(name, _)| name);
            if let Some(name) = name.filter(|n| is_variable_name(n) && !part_of_longer_name) {
                names.insert(name.to_string());
            }
        }
    }
    for contract in [
        "DATABASE_URL",
        "AMQP_URL",
        "PORT",
        "AMQP_PREFIX",
        "RETRY_DELAYS_MS",
        "WRITE_WAIT_MS",
    ] {
        assert!(
            names.contains(contract),
            "scanning config.rs missed {contract} (SPEC §6): {names:?}"
        );
    }
    names
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `(name, value)` of every assignment in `.env.example`, comments skipped.
fn env_example() -> Vec<(String, String)> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not NAME=value: {line}"));
            (
                name.trim().to_string(),
                value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string(),
            )
        })
        .collect()
}

#[test]
fn the_compose_file_follows_the_official_compose_schema() {
    let (path, chosen) = match std::env::var_os("COMPOSE_SCHEMA_PATH") {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from(DEFAULT_SCHEMA), false),
    };
    if !chosen && !path.is_file() {
        // Straight to stderr: libtest would swallow `eprintln!` of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the Compose schema check: {} does not exist (set COMPOSE_SCHEMA_PATH to \
             compose-spec.json); the structural checks of docker-compose.yml still run",
            path.display()
        );
        return;
    }
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut schema: Value = serde_json::from_str(&text).expect("the Compose schema is not JSON");
    // It names its meta-schema `https://json-schema.org/draft-07/schema`, an alias jsonschema would
    // fetch over HTTP; the canonical id is built in, so the schema is still checked against it.
    schema["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::draft7::new(&schema).expect("the Compose schema does not compile");

    let compose = compose();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("  at `{}`: {e}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "docker-compose.yml breaks {}:\n{}",
        path.display(),
        errors.join("\n")
    );

    // The check must be able to fail: a misspelt key is rejected.
    let mut broken = compose;
    broken["services"]["api"]["helthcheck"] = json!({"test": ["CMD", "true"]});
    assert!(
        !validator.is_valid(&broken),
        "the schema accepted an unknown service key"
    );
}

#[test]
fn every_service_has_a_complete_healthcheck() {
    let compose = compose();
    for name in [
        "postgres",
        "rabbitmq",
        "api",
        "sync-worker",
        "prometheus",
        "grafana",
    ] {
        let check = &service(&compose, name)["healthcheck"];
        assert!(check.is_object(), "`{name}` has no healthcheck");
        assert_ne!(
            check["disable"], true,
            "the healthcheck of `{name}` is disabled"
        );
        let test = words(&check["test"]);
        assert!(
            test.len() > 1 && test[0] != "NONE",
            "`{name}` has no healthcheck command: {test:?}"
        );
        for key in ["interval", "timeout", "retries", "start_period"] {
            assert!(
                !check[key].is_null(),
                "the healthcheck of `{name}` does not set `{key}`"
            );
        }
    }
}

#[test]
fn the_api_and_the_worker_run_their_own_binary_and_probe_themselves() {
    let compose = compose();
    for name in APPS {
        let service = service(&compose, name);
        assert_eq!(
            words(&service["command"]).first().map(String::as_str),
            Some(name),
            "`{name}`'s command"
        );
        let test = words(&service["healthcheck"]["test"]);
        assert_eq!(
            test,
            ["CMD", name, "healthcheck"],
            "`{name}` must probe itself with `{name} healthcheck`"
        );
    }
}

#[test]
fn the_api_and_the_rabbitmq_management_ui_are_published() {
    let compose = compose();
    let port = |name: &str, port: &str| {
        let ports = published_ports(service(&compose, name));
        assert!(
            ports.contains(&(port.into(), port.into())),
            "`{name}` does not publish {port}:{port}: {ports:?}"
        );
    };
    port("api", "3000");
    port("rabbitmq", "15672");
    port("rabbitmq", "5672");
    // The api listens on $PORT (3000 by default) inside its container: it must be the published one.
    let env = environment(service(&compose, "api"));
    let listens_on = env
        .iter()
        .find(|(k, _)| k == "PORT")
        .map_or("3000", |(_, v)| v.as_str());
    assert_eq!(
        listens_on, "3000",
        "the api listens on PORT={listens_on} but 3000 is published"
    );
}

#[test]
fn the_api_and_the_worker_wait_for_a_healthy_postgres_and_rabbitmq() {
    let compose = compose();
    for name in APPS {
        for dependency in ["postgres", "rabbitmq"] {
            let condition = dependency_condition(service(&compose, name), dependency);
            assert_eq!(
                condition.as_deref(),
                Some("service_healthy"),
                "`{name}` on `{dependency}`"
            );
        }
    }
    let on_worker = dependency_condition(service(&compose, "api"), "sync-worker");
    assert!(
        matches!(
            on_worker.as_deref(),
            Some("service_started" | "service_healthy")
        ),
        "the api should start after the worker, which creates the schema: {on_worker:?}"
    );
}

#[test]
fn the_api_and_the_worker_are_built_by_a_multi_stage_non_root_dockerfile() {
    let compose = compose();
    let path = dockerfile_of(service(&compose, "api"), "api");
    assert_eq!(
        path,
        dockerfile_of(service(&compose, "sync-worker"), "sync-worker"),
        "one image for both"
    );
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let all = instructions(&text);

    let stages = all.iter().filter(|(k, _)| k == "FROM").count();
    assert!(
        stages >= 3,
        "expected planner, builder and runtime stages, found {stages}"
    );
    let last_from = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .unwrap_or_default();
    let runtime = &all[last_from..];

    let user = runtime
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, u)| u.as_str());
    let user = user.expect("the runtime stage sets no USER, so it runs as root");
    let account = user.split(':').next().unwrap_or_default();
    assert!(
        !matches!(account, "root" | "0" | ""),
        "the runtime stage runs as `{user}`"
    );

    for binary in APPS {
        let installed = runtime.iter().any(|(k, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            k == "COPY"
                && args.starts_with("--from=")
                && words
                    .last()
                    .is_some_and(|dest| dest.starts_with("/usr/local/bin"))
                && words
                    .iter()
                    .any(|w| Path::new(w).file_name().is_some_and(|f| f == binary))
        });
        assert!(
            installed,
            "the runtime stage does not copy `{binary}` into /usr/local/bin"
        );
    }
}

#[test]
fn the_api_and_the_worker_are_only_given_variables_they_read() {
    let compose = compose();
    let known = variables_the_services_read();
    for name in APPS {
        let env = environment(service(&compose, name));
        assert!(!env.is_empty(), "`{name}` sets no environment");
        let unknown: Vec<&str> = env
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !known.contains(*k))
            .collect();
        assert!(
            unknown.is_empty(),
            "`{name}` sets {unknown:?}, which the services never read ({known:?})"
        );
    }
}

#[test]
fn the_api_and_the_worker_reach_postgres_and_rabbitmq_by_service_name() {
    let compose = compose();
    for name in APPS {
        let env = environment(service(&compose, name));
        for (variable, target) in [("DATABASE_URL", "postgres"), ("AMQP_URL", "rabbitmq")] {
            let url = env
                .iter()
                .find(|(k, _)| k == variable)
                .map(|(_, v)| v.as_str());
            // Without it the default, 127.0.0.1, would be the service's own container.
            let url = url.unwrap_or_else(|| panic!("`{name}` does not set {variable}"));
            let host = url
                .rsplit('@')
                .next()
                .and_then(|rest| rest.split([':', '/']).next());
            assert_eq!(host, Some(target), "`{name}`: {variable}={url}");
        }
    }
}

#[test]
fn env_example_documents_exactly_the_variables_the_services_read() {
    let documented: Vec<String> = env_example().into_iter().map(|(name, _)| name).collect();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        ".env.example repeats a variable: {documented:?}"
    );
    let read = variables_the_services_read();
    let missing: Vec<&String> = read.difference(&unique).collect();
    let extra: Vec<&String> = unique.difference(&read).collect();
    assert!(
        missing.is_empty(),
        ".env.example does not document {missing:?}"
    );
    assert!(
        extra.is_empty(),
        ".env.example documents {extra:?}, which the services never read"
    );
}

#[test]
fn env_example_shows_the_defaults() {
    let example = env_example();
    let lookup = |name: &str| {
        example
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let documented =
        tasksync_shared::Settings::from_lookup(lookup).expect(".env.example has an invalid value");
    let defaults = tasksync_shared::Settings::default();
    assert_eq!(
        format!("{documented:?}"),
        format!("{defaults:?}"),
        ".env.example differs from the defaults"
    );
    assert_eq!(lookup("RUST_LOG").as_deref(), Some("info"));
}

/// Compose durations as written (`35s`, `1m30s`, `500ms`), in milliseconds.
fn duration_ms(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                1
            }
            ('h', _) => 3_600_000,
            ('m', _) => 60_000,
            ('s', _) => 1_000,
            _ => panic!("not a compose duration: {text}"),
        };
        total += number.parse::<u64>().expect("a number before the unit") * unit;
        number.clear();
    }
    assert!(number.is_empty(), "a number without a unit in {text}");
    total
}

#[test]
fn docker_waits_longer_than_the_services_take_to_stop() {
    let compose = compose();
    let deadline: u64 = env_example()
        .into_iter()
        .find(|(name, _)| name == "SHUTDOWN_TIMEOUT_MS")
        .map(|(_, value)| value.parse().expect("a number of milliseconds"))
        .expect(".env.example documents SHUTDOWN_TIMEOUT_MS");
    for name in ["api", "sync-worker"] {
        let grace = service(&compose, name)["stop_grace_period"]
            .as_str()
            .unwrap_or_else(|| {
                panic!("`{name}` sets no stop_grace_period (Docker kills after 10 s)")
            });
        assert!(
            duration_ms(grace) > deadline,
            "`{name}`: stop_grace_period {grace} is not longer than SHUTDOWN_TIMEOUT_MS {deadline}"
        );
    }
}

/// A YAML file of the repository as JSON.
fn yaml(relative: &str) -> Value {
    serde_norway::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

/// The value `service` sets for `variable`, if any.
fn env_value(service: &Value, variable: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == variable)
        .map(|(_, v)| v)
}

#[test]
fn the_observability_profile_adds_pinned_prometheus_and_grafana_only() {
    let compose = compose();
    for name in ["prometheus", "grafana"] {
        let service = service(&compose, name);
        assert_eq!(
            service["profiles"],
            json!(["observability"]),
            "`{name}` must run only with the observability profile"
        );
        let image = service["image"].as_str().expect("an image");
        let (_, tag) = image.split_once(':').expect("a tagged image");
        assert!(
            tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()),
            "`{name}`'s image is not pinned: {image}"
        );
        // Every file it mounts from the repository is there.
        for volume in service["volumes"].as_array().expect("volumes") {
            let source = volume
                .as_str()
                .unwrap_or_default()
                .split(':')
                .next()
                .unwrap_or_default();
            if let Some(relative) = source.strip_prefix("./") {
                assert!(
                    Path::new(WORKSPACE).join(relative).exists(),
                    "`{name}` mounts {source}, which is not in the repository"
                );
            }
        }
    }
    // The default stack is unchanged: the apps carry no profile.
    for name in APPS {
        assert!(service(&compose, name)["profiles"].is_null(), "{name}");
    }
}

#[test]
fn prometheus_scrapes_the_api_and_the_workers_own_port() {
    let compose = compose();
    let api_port = env_value(service(&compose, "api"), "PORT").expect("the api's PORT");
    let worker_port = env_value(service(&compose, "sync-worker"), "WORKER_HTTP_PORT")
        .expect("the worker's WORKER_HTTP_PORT");
    let config = yaml("deploy/prometheus.yml");
    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_array().expect("scrape_configs") {
        assert_eq!(job["metrics_path"], "/metrics", "{job}");
        for group in job["static_configs"].as_array().expect("static_configs") {
            for target in group["targets"].as_array().expect("targets") {
                scraped.insert(target.as_str().unwrap_or_default().to_string());
            }
        }
    }
    let expected: BTreeSet<String> = [
        format!("api:{api_port}"),
        format!("sync-worker:{worker_port}"),
    ]
    .into();
    assert_eq!(scraped, expected);
}

#[test]
fn the_dashboard_queries_only_metrics_the_services_expose() {
    let dashboard: Value = serde_json::from_str(&read("deploy/grafana/dashboards/tasksync.json"))
        .expect("the dashboard is not JSON");
    let sources =
        read("services/api/src/metrics.rs") + &read("services/sync-worker/src/metrics.rs");
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let uid = datasources["datasources"][0]["uid"]
        .as_str()
        .expect("a data source uid");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{}", panels.len());
    let mut names = BTreeSet::new();
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], uid, "{}", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("tasksync_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    for name in &names {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            sources.contains(&format!("\"{base}\"")),
            "the dashboard queries {name}, which no service exposes"
        );
    }
    // Both services' metrics are on it.
    assert!(names.iter().any(|n| n.starts_with("tasksync_api_")));
    assert!(names.iter().any(|n| n.starts_with("tasksync_worker_")));
}
