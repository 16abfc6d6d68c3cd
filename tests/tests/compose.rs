//! The container setup, checked without a Docker engine: `docker-compose.yml` against the official
//! Compose schema (`../shared/data/compose-spec.json`, or `COMPOSE_SCHEMA_PATH`); how it wires the
//! services together in the single-node stack and in each profile (`observability`, `cluster`,
//! `tools`); that it is fit to deploy from (ports on loopback by default, no credential written in
//! it, exact image versions, one image built once and never pulled, a one-shot `migrate`, limits,
//! log rotation, stop grace periods); the `cluster` profile's RabbitMQ peer discovery, load
//! balancer and partitions; the Dockerfile it builds; and that the variables it sets and those
//! `.env.example` documents are exactly what the services read (`shared/src/config.rs`).

#![allow(
    clippy::expect_used,
    reason = "a test binary: a broken expectation, in a test or its helpers, is the failure"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
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
/// The single-node stack's api and worker (and the binaries they run).
const APPS: [&str; 2] = ["api", "sync-worker"];
/// The binaries of the Task Sync image.
const BINARIES: [&str; 3] = ["api", "sync-worker", "taskctl"];

fn read(relative: &str) -> String {
    let path = Path::new(WORKSPACE).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The compose file as JSON, with `<<` merge keys resolved as Compose resolves them.
fn compose() -> Value {
    let mut yaml: serde_norway::Value = serde_norway::from_str(&read("docker-compose.yml"))
        .expect("docker-compose.yml is not YAML");
    // A merged mapping may itself merge another (`x-worker-env` merges `x-tasksync-env`):
    // `apply_merge` resolves one level per pass, explicit keys winning as in Compose.
    for _ in 0..4 {
        yaml.apply_merge()
            .expect("docker-compose.yml has an invalid `<<` merge key");
    }
    let json: Value =
        serde_norway::from_value(yaml).expect("docker-compose.yml has keys JSON cannot hold");
    assert!(
        !json.to_string().contains("\"<<\""),
        "docker-compose.yml merges more than 4 levels deep"
    );
    json
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

/// `(name, value)` of every `NAME=value` line of an env file, comments and blank lines skipped.
fn assignments(text: &str, origin: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (name, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{origin}: not NAME=value: {line}"));
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

/// `(name, value)` of every assignment in `.env.example`, comments skipped.
fn env_example() -> Vec<(String, String)> {
    assignments(&read(".env.example"), ".env.example")
}

/// What `.env.example` gives `variable` (the services' default).
fn default_of(variable: &str) -> String {
    env_example()
        .into_iter()
        .find(|(name, _)| name == variable)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!(".env.example does not document {variable}"))
}

/// `text` as Compose interpolates it when none of the variables it names is set:
/// `${NAME:-default}` and `${NAME-default}` become `default`, `${NAME}` nothing, `$$` a `$`.
fn with_defaults(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .unwrap_or_else(|| panic!("an unclosed ${{ in {text}"));
            let expression = &inner[..end];
            let default = expression
                .split_once(":-")
                .or_else(|| expression.split_once('-'))
                .map_or("", |(_, default)| default);
            out.push_str(default);
            rest = &inner[end + 1..];
        } else {
            panic!("a bare $ in {text}: write ${{NAME}} or $$");
        }
    }
    out.push_str(rest);
    out
}

/// A file of the repository named by the compose file (`./x`, relative to the workspace, with
/// variables at their defaults).
fn repository_path(compose_path: &str) -> PathBuf {
    let path = with_defaults(compose_path);
    Path::new(WORKSPACE).join(path.strip_prefix("./").unwrap_or(&path))
}

/// Every service, by name.
fn services(compose: &Value) -> Vec<(String, &Value)> {
    compose["services"]
        .as_object()
        .expect("docker-compose.yml has no services")
        .iter()
        .map(|(name, service)| (name.clone(), service))
        .collect()
}

fn profiles(service: &Value) -> Vec<String> {
    words(&service["profiles"])
}

/// The services `docker compose` starts with these profiles enabled: those without profiles,
/// and those with one of them.
fn started_with(compose: &Value, enabled: &[&str]) -> BTreeSet<String> {
    services(compose)
        .into_iter()
        .filter(|(_, service)| {
            let profiles = profiles(service);
            profiles.is_empty() || profiles.iter().any(|p| enabled.contains(&p.as_str()))
        })
        .map(|(name, _)| name)
        .collect()
}

/// The services of one profile.
fn in_profile<'a>(compose: &'a Value, profile: &str) -> Vec<(String, &'a Value)> {
    services(compose)
        .into_iter()
        .filter(|(_, service)| profiles(service).iter().any(|p| p == profile))
        .collect()
}

/// The binary a service runs: the first word of its entrypoint, or else of its command.
fn binary(service: &Value) -> Option<String> {
    words(&service["entrypoint"])
        .into_iter()
        .next()
        .or_else(|| words(&service["command"]).into_iter().next())
}

/// The services that run a Task Sync binary.
fn task_sync_services(compose: &Value) -> Vec<(String, &Value)> {
    services(compose)
        .into_iter()
        .filter(|(_, service)| binary(service).is_some_and(|b| BINARIES.contains(&b.as_str())))
        .collect()
}

/// Those that keep running (not one-shots like `migrate` and `taskctl`).
fn long_running(service: &Value) -> bool {
    service["restart"] != "no"
}

/// The Task Sync services running `binary` (`api` or `sync-worker`, not `sync-worker migrate`).
fn running<'a>(compose: &'a Value, binary_name: &str) -> Vec<(String, &'a Value)> {
    task_sync_services(compose)
        .into_iter()
        .filter(|(_, service)| {
            long_running(service) && binary(service).as_deref() == Some(binary_name)
        })
        .collect()
}

/// `(name, value)` of the files of a service's `env_file` (string, list of strings, or list of
/// `{path}`), read from the repository with variables at their defaults.
fn env_files(service: &Value) -> Vec<(String, String)> {
    let paths: Vec<String> = match &service["env_file"] {
        Value::Null => Vec::new(),
        Value::String(path) => vec![path.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Object(long) => plain(&long["path"]),
                short => plain(short),
            })
            .collect(),
        other => panic!("an env_file of an unknown form: {other}"),
    };
    paths
        .iter()
        .flat_map(|path| {
            let file = repository_path(path);
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("env_file {}: {e}", file.display()));
            assignments(&text, path)
        })
        .collect()
}

/// What a service's process sees: its env files, overridden by its `environment`.
fn effective_environment(service: &Value) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = env_files(service).into_iter().collect();
    env.extend(environment(service));
    env
}

/// What a service's process sees for `variable`, else the services' default.
fn setting(service: &Value, variable: &str) -> String {
    effective_environment(service)
        .remove(variable)
        .unwrap_or_else(|| default_of(variable))
}

/// `(host, user, password)` of every URL in a comma-separated list of `scheme://` URLs.
fn url_parts(urls: &str) -> Vec<(String, String, String)> {
    urls.split(',')
        .map(|url| {
            let (_, rest) = url
                .split_once("://")
                .unwrap_or_else(|| panic!("not a URL: {url}"));
            let authority = rest.split('/').next().unwrap_or_default();
            let (userinfo, host_port) = authority.rsplit_once('@').unwrap_or(("", authority));
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let host = host_port.split(':').next().unwrap_or_default();
            (host.to_string(), user.to_string(), password.to_string())
        })
        .collect()
}

/// `(host address, host port, container port)` of every published port, with the variables of
/// the compose file at their defaults (an empty address means every interface).
fn port_bindings(service: &Value) -> Vec<(String, String, String)> {
    let ports = service["ports"].as_array().cloned().unwrap_or_default();
    ports
        .iter()
        .map(|port| match port {
            Value::Object(long) => (
                with_defaults(&plain(&long["host_ip"])),
                with_defaults(&plain(&long["published"])),
                plain(&long["target"]),
            ),
            short => {
                let short = with_defaults(&plain(short));
                let spec = short.split('/').next().unwrap_or_default();
                let mut parts = spec.rsplitn(3, ':');
                let container = parts.next().unwrap_or_default().to_string();
                let host_port = parts.next().unwrap_or_default().to_string();
                let address = parts.next().unwrap_or_default().to_string();
                (address, host_port, container)
            }
        })
        .collect()
}

/// Compose and Docker sizes (`512M`, `1G`, `1GiB`, `1073741824`), in bytes; K, M, G are binary.
fn bytes(size: &str) -> u64 {
    let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("not a size: {size}"));
    let unit = size[digits.len()..].to_ascii_lowercase();
    let scale = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => panic!("not a size: {size}"),
    };
    number * scale
}

/// `key = value` lines of a RabbitMQ `rabbitmq.conf`-style file, comments skipped.
fn rabbitmq_conf(relative: &str) -> BTreeMap<String, String> {
    read(relative)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{relative}: not key = value: {line}"));
            (key.trim().to_string(), value.trim().to_string())
        })
        .collect()
}

/// The repository file a service mounts at `target` (a `./x:target[:ro]` volume), if any.
fn mounted_at(service: &Value, target: &str) -> Option<String> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let volume = plain(volume);
            let mut parts = volume.split(':');
            let source = parts.next()?.to_string();
            (parts.next()? == target && source.starts_with("./")).then_some(source)
        })
        .next()
}

/// The top-level secret `name`'s file, as a repository path.
fn secret_file(compose: &Value, name: &str) -> PathBuf {
    let file = compose["secrets"][name]["file"]
        .as_str()
        .unwrap_or_else(|| panic!("no top-level secret `{name}` with a `file`"));
    repository_path(file)
}

/// The names of the secrets a service is given.
fn secrets_of(service: &Value) -> Vec<String> {
    service["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|secret| match secret {
            Value::Object(long) => plain(&long["source"]),
            short => plain(short),
        })
        .collect()
}

/// `value` with every string interpolated as by [`with_defaults`].
fn interpolated(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(with_defaults(s)),
        Value::Array(items) => Value::Array(items.iter().map(interpolated).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| (key.clone(), interpolated(item)))
                .collect(),
        ),
        other => other.clone(),
    }
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
    // Every profile's services are in the document checked, the cluster's included.
    for name in [
        "rabbit-1", "rabbit-2", "rabbit-3", "worker-1", "api-1", "lb", "taskctl",
    ] {
        service(&compose, name);
    }
    // As written, and as `docker compose` reads it with no variable set.
    for (form, document) in [
        ("", compose.clone()),
        (" (interpolated)", interpolated(&compose)),
    ] {
        let errors: Vec<String> = validator
            .iter_errors(&document)
            .map(|e| format!("  at `{}`: {e}", e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "docker-compose.yml{form} breaks {}:\n{}",
            path.display(),
            errors.join("\n")
        );
    }

    // The check must be able to fail: a misspelt key is rejected.
    let mut broken = compose;
    broken["services"]["api"]["helthcheck"] = json!({"test": ["CMD", "true"]});
    assert!(
        !validator.is_valid(&broken),
        "the schema accepted an unknown service key"
    );
}

#[test]
fn every_service_that_keeps_running_has_a_complete_healthcheck() {
    let compose = compose();
    let mut checked = BTreeSet::new();
    for (name, service) in services(&compose) {
        if !long_running(service) {
            continue;
        }
        let check = &service["healthcheck"];
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
        checked.insert(name);
    }
    for name in [
        "postgres",
        "rabbitmq",
        "api",
        "sync-worker",
        "prometheus",
        "grafana",
    ] {
        assert!(checked.contains(name), "`{name}` was not checked");
    }
}

#[test]
fn the_apis_and_the_workers_run_their_own_binary_and_probe_themselves() {
    let compose = compose();
    for name in APPS {
        assert_eq!(
            words(&service(&compose, name)["command"])
                .first()
                .map(String::as_str),
            Some(name),
            "`{name}`'s command"
        );
    }
    for binary_name in APPS {
        for (name, service) in running(&compose, binary_name) {
            let test = words(&service["healthcheck"]["test"]);
            assert_eq!(
                test,
                ["CMD", binary_name, "healthcheck"],
                "`{name}` must probe itself with `{binary_name} healthcheck`"
            );
        }
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

/// Every published port of `service` that is not on the loopback address by default.
fn exposed_ports(service: &Value) -> Vec<(String, String, String)> {
    port_bindings(service)
        .into_iter()
        .filter(|(address, _, _)| address != "127.0.0.1")
        .collect()
}

#[test]
fn published_ports_are_on_loopback_unless_asked_and_never_clash() {
    let compose = compose();
    let mut host_ports = BTreeMap::new();
    for (name, service) in services(&compose) {
        let exposed = exposed_ports(service);
        assert!(
            exposed.is_empty(),
            "`{name}` publishes beyond 127.0.0.1 by default: {exposed:?}"
        );
        for (port, (_, host_port, _)) in port_bindings(service).into_iter().enumerate() {
            // Another address is asked for with TASKSYNC_BIND_ADDRESS.
            let raw = plain(&service["ports"][port]);
            assert!(
                raw.contains("${TASKSYNC_BIND_ADDRESS:-127.0.0.1}")
                    || with_defaults(&plain(&service["ports"][port]["host_ip"])) == "127.0.0.1",
                "`{name}`'s port {raw} cannot be moved with TASKSYNC_BIND_ADDRESS"
            );
            // Every profile at once: no two services want one host port.
            if let Some(other) = host_ports.insert(host_port.clone(), name.clone()) {
                panic!("`{name}` and `{other}` both publish host port {host_port}");
            }
        }
    }
    assert!(host_ports.len() >= 3, "{host_ports:?}");

    // The check must be able to fail: a port on every interface, and one with no address.
    let mut broken = service(&compose, "api").clone();
    broken["ports"] = json!(["0.0.0.0:3000:3000", "3001:3001"]);
    assert_eq!(exposed_ports(&broken).len(), 2, "{broken}");
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
        "`docker compose up api` should bring a worker too: {on_worker:?}"
    );
}

#[test]
fn every_profile_starts_what_its_services_depend_on() {
    let compose = compose();
    assert_eq!(
        started_with(&compose, &[]),
        ["api", "migrate", "postgres", "rabbitmq", "sync-worker"]
            .map(String::from)
            .into(),
        "`docker compose up` must start the single-node stack, and only it"
    );
    for enabled in [
        &[][..],
        &["observability"],
        &["cluster"],
        &["tools"],
        &["observability", "cluster", "tools"],
    ] {
        let started = started_with(&compose, enabled);
        for name in &started {
            let service = service(&compose, name);
            let depends_on: Vec<String> = match &service["depends_on"] {
                Value::Object(map) => map.keys().cloned().collect(),
                list => words(list),
            };
            for dependency in depends_on {
                assert!(
                    started.contains(&dependency),
                    "with profiles {enabled:?}, `{name}` depends on `{dependency}`, which does not start"
                );
            }
        }
    }
}

#[test]
fn the_task_sync_services_share_one_image_built_once_and_never_pulled() {
    let compose = compose();
    let apps = task_sync_services(&compose);
    let names: BTreeSet<&str> = apps.iter().map(|(name, _)| name.as_str()).collect();
    for expected in ["api", "sync-worker", "migrate", "taskctl"] {
        assert!(
            names.contains(expected),
            "{expected} runs no Task Sync binary: {names:?}"
        );
    }
    let builders: Vec<&str> = services(&compose)
        .into_iter()
        .filter(|(_, service)| !service["build"].is_null())
        .map(|(name, _)| {
            names
                .get(name.as_str())
                .copied()
                .unwrap_or_else(|| panic!("`{name}` builds an image but runs no Task Sync binary"))
        })
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "exactly one service builds the image: {builders:?}"
    );
    let builder = service(&compose, builders[0]);
    let image = builder["image"]
        .as_str()
        .expect("the building service names its image (`image:`), which the others run");
    for (name, service) in &apps {
        assert_eq!(service["image"], image, "`{name}` runs another image");
        // `missing` (the default) would look for it in a registry first.
        let policy = service["pull_policy"].as_str().unwrap_or("missing");
        let allowed: &[&str] = if service["build"].is_null() {
            &["never"]
        } else {
            &["never", "build"]
        };
        assert!(
            allowed.contains(&policy),
            "`{name}` has pull_policy {policy}: Compose would try to pull {image}"
        );
    }
    // And no other service runs it.
    for (name, service) in services(&compose) {
        if !names.contains(name.as_str()) {
            assert_ne!(service["image"], image, "`{name}`");
        }
    }
}

#[test]
fn the_image_is_built_by_a_multi_stage_non_root_dockerfile() {
    let compose = compose();
    let (name, builder) = services(&compose)
        .into_iter()
        .find(|(_, service)| !service["build"].is_null())
        .expect("no service builds the image");
    let path = dockerfile_of(builder, &name);
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

    for binary_name in BINARIES {
        let installed = runtime.iter().any(|(k, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            k == "COPY"
                && args.starts_with("--from=")
                && words
                    .last()
                    .is_some_and(|dest| dest.starts_with("/usr/local/bin"))
                && words
                    .iter()
                    .any(|w| Path::new(w).file_name().is_some_and(|f| f == binary_name))
        });
        assert!(
            installed,
            "the runtime stage does not copy `{binary_name}` into /usr/local/bin"
        );
    }
}

/// Why `image` is not pinned to one exact version, if it is not: its tag must carry a full
/// `x.y.z` version (Postgres: `major.minor`), or a dated snapshot such as Debian's
/// `bookworm-20260803-slim`; never `latest`, a bare major or a `x.y` series. A digest
/// (`@sha256:` and 64 hex digits) may follow.
fn unpinned(image: &str) -> Option<String> {
    let (reference, digest) = image.split_once('@').unwrap_or((image, ""));
    if !digest.is_empty() {
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Some(format!("{image}: not a sha256 digest"));
        }
    }
    let name_start = reference.rfind('/').map_or(0, |slash| slash + 1);
    let Some((_, tag)) = reference[name_start..].split_once(':') else {
        return Some(format!("{image}: no tag (so `latest`)"));
    };
    let version = tag.strip_prefix('v').unwrap_or(tag);
    let numbers: Vec<&str> = version
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default()
        .split('.')
        .collect();
    // Postgres numbers its releases major.minor since version 10: 16.15 is one exact release.
    let parts = if reference.starts_with("postgres:") {
        2
    } else {
        3
    };
    let exact_version = numbers.len() >= parts && numbers.iter().all(|n| !n.is_empty());
    let dated = tag
        .split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() == 8 && run.starts_with("20"));
    (!(exact_version || dated)).then(|| format!("{image}: `{tag}` is not one exact version"))
}

/// The images a Dockerfile starts its stages from (`ARG` defaults substituted; later stages
/// built `FROM` an earlier one are skipped).
fn base_images(dockerfile: &str) -> Vec<String> {
    let mut args = BTreeMap::new();
    let mut stages = BTreeSet::new();
    let mut images = Vec::new();
    for (keyword, rest) in instructions(dockerfile) {
        match keyword.as_str() {
            "ARG" => {
                if let Some((name, value)) = rest.split_once('=') {
                    args.entry(name.to_string()).or_insert(value.to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                let mut image = words.first().copied().unwrap_or_default().to_string();
                for (name, value) in &args {
                    image = image.replace(&format!("${{{name}}}"), value);
                }
                if !stages.contains(&image) {
                    images.push(image);
                }
                if let [_, as_word, stage] = words.as_slice()
                    && as_word.eq_ignore_ascii_case("as")
                {
                    stages.insert((*stage).to_string());
                }
            }
            _ => {}
        }
    }
    images
}

#[test]
fn every_image_is_pinned_to_an_exact_version() {
    let compose = compose();
    let built = service(&compose, "migrate")["image"].clone();
    let mut checked = 0;
    for (name, service) in services(&compose) {
        let Some(image) = service["image"].as_str() else {
            continue;
        };
        if service["image"] == built {
            continue;
        }
        assert_eq!(unpinned(image), None, "`{name}`");
        checked += 1;
    }
    assert!(checked >= 5, "{checked} images checked");

    let dockerfile = read("Dockerfile");
    let bases = base_images(&dockerfile);
    assert!(bases.len() >= 2, "{bases:?}");
    for image in &bases {
        assert_eq!(unpinned(image), None, "the Dockerfile starts from {image}");
    }
    // The tool the Dockerfile installs is pinned too.
    let chef = instructions(&dockerfile)
        .into_iter()
        .find(|(k, args)| k == "RUN" && args.contains("cargo install cargo-chef"))
        .map(|(_, args)| args)
        .expect("the Dockerfile installs cargo-chef");
    assert!(
        chef.contains("--locked") && chef.contains("--version"),
        "{chef}"
    );

    // The check must be able to fail.
    for loose in [
        "rabbitmq:management",
        "rabbitmq:4-management",
        "rabbitmq:4.2-management",
        "postgres:16-alpine",
        "postgres:16",
        "postgres",
        "haproxy:latest",
        "debian:bookworm-slim",
        "localhost:5000/tasksync",
        "rabbitmq:4.2.9-management@sha256:1234",
    ] {
        assert!(unpinned(loose).is_some(), "{loose} passed as pinned");
    }
    for exact in [
        "rabbitmq:4.2.9-management",
        "prom/prometheus:v3.5.0",
        "localhost:5000/tasksync:1.2.3",
        "debian:bookworm-20260803-slim",
        "postgres:16.15-alpine3.24",
        "haproxy:3.2.22-alpine3.24@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        assert_eq!(unpinned(exact), None);
    }
}

#[test]
fn every_rabbitmq_node_runs_rabbitmq_4() {
    let compose = compose();
    let nodes: Vec<(String, String)> = services(&compose)
        .into_iter()
        .filter_map(|(name, service)| {
            let image = service["image"].as_str()?;
            let repository = image.split(':').next().unwrap_or_default();
            (repository.rsplit('/').next() == Some("rabbitmq")).then(|| (name, image.to_string()))
        })
        .collect();
    assert_eq!(
        nodes.len(),
        4,
        "the single node and the cluster's three: {nodes:?}"
    );
    for (name, image) in nodes {
        let tag = image
            .split_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        assert!(
            tag.starts_with("4."),
            "`{name}` runs {image}, not RabbitMQ 4.x"
        );
    }
}

/// What in `service` writes a credential into the compose file: a password in a URL anywhere
/// in it, a `setcookie`, or a value for a variable whose name says it is a credential (its
/// `_FILE` form, naming a file, is the right way).
fn inline_credentials(service: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let mut strings = Vec::new();
    collect_strings(service, &mut strings);
    for text in strings {
        let text = text.as_str();
        let has_url_password = url_like(text)
            .into_iter()
            .any(|(_, _, password)| !password.is_empty());
        if has_url_password || text.contains("setcookie") {
            found.push(text.to_string());
        }
    }
    for (name, value) in environment(service) {
        let upper = name.to_ascii_uppercase();
        let parts: Vec<&str> = upper.split('_').collect();
        let credential = parts.iter().any(|part| {
            [
                "PASSWORD",
                "PASSWD",
                "PASS",
                "SECRET",
                "TOKEN",
                "COOKIE",
                "CREDENTIAL",
                "CREDENTIALS",
            ]
            .contains(part)
        });
        if credential && parts.last() != Some(&"FILE") && !value.is_empty() {
            found.push(format!("{name}={value}"));
        }
    }
    found
}

/// `(host, user, password)` of every `scheme://` URL in `text`.
fn url_like(text: &str) -> Vec<(String, String, String)> {
    text.match_indices("://")
        .filter_map(|(at, _)| {
            let start = text[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '.' || c == '-'))
                .map_or(0, |i| i + 1);
            let end = text[at + 3..]
                .find(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\'')
                .map_or(text.len(), |i| at + 3 + i);
            url_parts(&text[start..end]).into_iter().next()
        })
        .collect()
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(map) => map.iter().for_each(|(key, item)| {
            out.push(key.clone());
            collect_strings(item, out);
        }),
        _ => {}
    }
}

#[test]
fn no_credential_is_written_in_the_compose_file() {
    let compose = compose();
    for (name, service) in services(&compose) {
        assert_eq!(
            inline_credentials(service),
            Vec::<String>::new(),
            "`{name}`"
        );
    }
    // The Task Sync services' URLs (with passwords) come from their env_file, not `environment`.
    for (name, service) in task_sync_services(&compose) {
        let inline: BTreeMap<String, String> = environment(service).into_iter().collect();
        let from_files: BTreeMap<String, String> = env_files(service).into_iter().collect();
        for variable in ["DATABASE_URL", "AMQP_URL"] {
            assert!(
                !inline.contains_key(variable),
                "`{name}` sets {variable} inline"
            );
            assert!(
                from_files.contains_key(variable),
                "`{name}`'s env_file has no {variable}"
            );
        }
    }
    // The other services take theirs from secrets, as files.
    assert_eq!(
        env_value(service(&compose, "postgres"), "POSTGRES_PASSWORD_FILE").as_deref(),
        Some("/run/secrets/postgres_password")
    );
    assert!(secrets_of(service(&compose, "postgres")).contains(&"postgres_password".into()));
    assert!(secrets_of(service(&compose, "grafana")).contains(&"grafana_admin_password".into()));

    // The check must be able to fail.
    let mut broken = service(&compose, "api").clone();
    broken["environment"]["DATABASE_URL"] = json!("postgres://postgres:hunter2@postgres/tasksync");
    broken["environment"]["POSTGRES_PASSWORD"] = json!("hunter2");
    broken["environment"]["RABBITMQ_ERLANG_COOKIE"] = json!("secretcookie");
    broken["healthcheck"]["test"] = json!(["CMD", "curl", "http://guest:guest@localhost:15672/"]);
    assert_eq!(
        inline_credentials(&broken).len(),
        4,
        "{:?}",
        inline_credentials(&broken)
    );
}

#[test]
fn the_development_credentials_are_marked_and_agree_with_each_other() {
    let compose = compose();
    let secrets = compose["secrets"].as_object().expect("top-level secrets");
    // Every secret a service uses is defined, from a file that exists, in the one directory.
    for (name, service) in services(&compose) {
        for secret in secrets_of(service) {
            assert!(
                secrets.contains_key(&secret),
                "`{name}` uses undefined secret `{secret}`"
            );
        }
    }
    let mut directories = BTreeSet::new();
    for (secret, definition) in secrets {
        let file = definition["file"]
            .as_str()
            .unwrap_or_else(|| panic!("secret `{secret}` is not a file"));
        assert!(
            file.starts_with("${TASKSYNC_SECRETS_DIR:-./deploy/dev-secrets}/"),
            "secret `{secret}` is not read from TASKSYNC_SECRETS_DIR: {file}"
        );
        let path = secret_file(&compose, secret);
        assert!(
            path.is_file(),
            "secret `{secret}`: {} is missing",
            path.display()
        );
        directories.insert(path.parent().map(Path::to_path_buf));
    }
    assert_eq!(directories.len(), 1, "{directories:?}");
    let readme = read("deploy/dev-secrets/README.md");
    assert!(
        readme.contains("never deploy"),
        "deploy/dev-secrets/README.md must say so"
    );

    let postgres_password = fs::read_to_string(secret_file(&compose, "postgres_password"))
        .expect("the Postgres password")
        .trim()
        .to_string();
    let credentials = read("deploy/dev-secrets/rabbitmq-credentials.conf");
    assert!(
        credentials.contains("DEVELOPMENT ONLY"),
        "rabbitmq-credentials.conf"
    );
    let credentials = rabbitmq_conf("deploy/dev-secrets/rabbitmq-credentials.conf");
    let rabbit_user = &credentials["default_user"];
    let rabbit_password = &credentials["default_pass"];
    assert_ne!(
        rabbit_user, "guest",
        "guest can only log in from localhost by default"
    );

    for (name, service) in task_sync_services(&compose) {
        let env = effective_environment(service);
        for (host, user, password) in url_parts(&env["DATABASE_URL"]) {
            assert_eq!(
                (host.as_str(), user.as_str(), password.as_str()),
                ("postgres", "postgres", postgres_password.as_str()),
                "`{name}`'s DATABASE_URL"
            );
        }
        for (host, user, password) in url_parts(&env["AMQP_URL"]) {
            assert_eq!(
                (user.as_str(), password.as_str()),
                (rabbit_user.as_str(), rabbit_password.as_str()),
                "`{name}`'s AMQP_URL to {host}"
            );
        }
        for file in words(&service["env_file"]) {
            let text = fs::read_to_string(repository_path(&file)).expect("the env file");
            assert!(
                text.contains("DEVELOPMENT ONLY"),
                "{file} does not say it is for development"
            );
        }
    }
}

#[test]
fn migrate_runs_once_and_every_task_sync_service_waits_for_it() {
    let compose = compose();
    let migrate = service(&compose, "migrate");
    assert_eq!(words(&migrate["command"]), ["sync-worker", "migrate"]);
    assert_eq!(migrate["restart"], "no", "a one-shot must not be restarted");
    assert!(
        migrate["profiles"].is_null(),
        "`docker compose up` must run it"
    );
    assert_eq!(
        dependency_condition(migrate, "postgres").as_deref(),
        Some("service_healthy")
    );
    let mut waiting = 0;
    for (name, service) in task_sync_services(&compose) {
        if name == "migrate" {
            continue;
        }
        assert_eq!(
            dependency_condition(service, "migrate").as_deref(),
            Some("service_completed_successfully"),
            "`{name}` must wait for the migrations"
        );
        waiting += 1;
    }
    assert!(waiting >= 8, "{waiting}");
}

#[test]
fn every_service_has_resource_limits_and_rotated_logs() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let limits = &service["deploy"]["resources"]["limits"];
        let cpus: f64 = plain(&limits["cpus"])
            .parse()
            .unwrap_or_else(|_| panic!("`{name}` has no cpus limit: {limits}"));
        assert!(cpus > 0.0, "`{name}`: {cpus}");
        let memory = bytes(&plain(&limits["memory"]));
        assert!(memory >= 64 << 20, "`{name}`: {memory} bytes");

        let logging = &service["logging"];
        assert_eq!(
            logging["driver"], "json-file",
            "`{name}`'s logging: {logging}"
        );
        let max_size = plain(&logging["options"]["max-size"]);
        let max_file: u32 = plain(&logging["options"]["max-file"])
            .parse()
            .unwrap_or_else(|_| panic!("`{name}` keeps its logs forever: {logging}"));
        assert!(bytes(&max_size) > 0 && max_file >= 1, "`{name}`: {logging}");
    }
    // A broker plans with the memory its container may use.
    let planned =
        bytes(&rabbitmq_conf("deploy/rabbitmq/node.conf")["total_memory_available_override_value"]);
    for (name, service) in services(&compose) {
        if mounted_at(service, "/etc/rabbitmq/conf.d/30-node.conf").is_some() {
            let limit = bytes(&plain(&service["deploy"]["resources"]["limits"]["memory"]));
            assert_eq!(
                planned, limit,
                "`{name}`: node.conf and the memory limit differ"
            );
        }
    }
}

#[test]
fn the_task_sync_services_are_only_given_variables_they_read() {
    // WORK_PARTITIONS and WORKER_PARTITIONS (the cluster profile) must be read by
    // shared/src/config.rs for this to pass.
    let compose = compose();
    let known = variables_the_services_read();
    for (name, service) in task_sync_services(&compose) {
        let env = effective_environment(service);
        assert!(!env.is_empty(), "`{name}` sets no environment");
        let unknown: Vec<&str> = env
            .keys()
            .map(String::as_str)
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
    let brokers: BTreeSet<String> = services(&compose)
        .into_iter()
        .filter(|(_, service)| plain(&service["image"]).starts_with("rabbitmq:"))
        .map(|(name, service)| {
            // The host name the broker answers to: its service name, and its `hostname`.
            assert_eq!(plain(&service["hostname"]), name, "`{name}`'s hostname");
            name
        })
        .collect();
    for (name, service) in task_sync_services(&compose) {
        let env = effective_environment(service);
        for (variable, targets) in [
            ("DATABASE_URL", BTreeSet::from(["postgres".to_string()])),
            ("AMQP_URL", brokers.clone()),
        ] {
            // Without it the default, 127.0.0.1, would be the service's own container.
            let urls = env
                .get(variable)
                .unwrap_or_else(|| panic!("`{name}` does not set {variable}"));
            for (host, _, _) in url_parts(urls) {
                assert!(targets.contains(&host), "`{name}`: {variable} names {host}");
            }
        }
    }
    for name in APPS {
        let env = effective_environment(service(&compose, name));
        let hosts: Vec<String> = url_parts(&env["AMQP_URL"])
            .into_iter()
            .map(|(h, _, _)| h)
            .collect();
        assert_eq!(hosts, ["rabbitmq"], "`{name}` uses the single node");
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
    let mut workers = 0;
    for binary_name in APPS {
        for (name, service) in running(&compose, binary_name) {
            let deadline: u64 = setting(service, "SHUTDOWN_TIMEOUT_MS")
                .parse()
                .expect("SHUTDOWN_TIMEOUT_MS in milliseconds");
            let grace = service["stop_grace_period"].as_str().unwrap_or_else(|| {
                panic!("`{name}` sets no stop_grace_period (Docker kills after 10 s)")
            });
            assert!(
                duration_ms(grace) > deadline,
                "`{name}`: stop_grace_period {grace} is not longer than SHUTDOWN_TIMEOUT_MS {deadline}"
            );
            if binary_name == "sync-worker" {
                // The batches in flight at SIGTERM finish their database round before it stops.
                let round: u64 = setting(service, "DB_TIMEOUT_MS")
                    .parse()
                    .expect("DB_TIMEOUT_MS in milliseconds");
                assert!(
                    deadline > round && duration_ms(grace) > round,
                    "`{name}`: SHUTDOWN_TIMEOUT_MS {deadline} and stop_grace_period {grace} must \
                     exceed the longest database round, DB_TIMEOUT_MS {round}"
                );
                workers += 1;
            }
        }
    }
    assert_eq!(
        workers, 4,
        "the single node's worker and the cluster's three"
    );
}

/// The sections of an HAProxy configuration (`backend apis` → its lines), comments dropped.
fn haproxy_sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let keyword = line.split_whitespace().next().unwrap_or_default();
        if [
            "global",
            "defaults",
            "frontend",
            "backend",
            "listen",
            "resolvers",
        ]
        .contains(&keyword)
        {
            current = line.split_whitespace().collect::<Vec<_>>().join(" ");
            sections.entry(current.clone()).or_default();
        } else {
            sections
                .entry(current.clone())
                .or_default()
                .push(line.to_string());
        }
    }
    sections
}

#[test]
fn the_cluster_profile_is_three_clustered_brokers_three_workers_and_two_balanced_apis() {
    let compose = compose();
    let cluster = in_profile(&compose, "cluster");
    for (name, service) in &cluster {
        assert_eq!(
            profiles(service),
            ["cluster"],
            "`{name}` must be in the cluster profile only"
        );
    }

    // Three RabbitMQ nodes, clustered by classic config peer discovery, with one Erlang cookie
    // from a secret.
    let nodes: Vec<&(String, &Value)> = cluster
        .iter()
        .filter(|(_, service)| plain(&service["image"]).starts_with("rabbitmq:"))
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let conf_path = "deploy/rabbitmq/cluster.conf";
    let conf = rabbitmq_conf(conf_path);
    assert_eq!(
        conf["cluster_formation.peer_discovery_backend"],
        "classic_config"
    );
    assert_eq!(conf["cluster_partition_handling"], "pause_minority");
    let listed: BTreeSet<&str> = conf
        .iter()
        .filter(|(key, _)| key.starts_with("cluster_formation.classic_config.nodes."))
        .map(|(_, node)| node.as_str())
        .collect();
    let expected: BTreeSet<String> = nodes
        .iter()
        .map(|(name, service)| {
            assert_eq!(plain(&service["hostname"]), *name, "`{name}`'s hostname");
            format!("rabbit@{name}")
        })
        .collect();
    assert_eq!(
        listed,
        expected.iter().map(String::as_str).collect(),
        "{conf_path} must list exactly the cluster's nodes"
    );
    for (name, service) in &nodes {
        let mounted = service["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| plain(v).starts_with(&format!("./{conf_path}:/etc/rabbitmq/conf.d/")));
        assert!(mounted, "`{name}` does not load {conf_path}");
        assert!(
            secrets_of(service).contains(&"rabbitmq_erlang_cookie".to_string()),
            "`{name}` has no Erlang cookie secret"
        );
        assert!(
            secrets_of(service).contains(&"rabbitmq_credentials".to_string()),
            "`{name}`"
        );
        // The script that installs the cookie is the one in the repository.
        let entrypoint = words(&service["entrypoint"]);
        let script = entrypoint.last().expect("an entrypoint");
        let source = mounted_at(service, script)
            .unwrap_or_else(|| panic!("`{name}`'s entrypoint {script} is not mounted"));
        let script_text = read(source.trim_start_matches("./"));
        assert!(
            script_text.contains("/run/secrets/rabbitmq_erlang_cookie"),
            "{source}"
        );
        assert!(
            script_text.contains("exec docker-entrypoint.sh"),
            "{source}"
        );
    }

    // Three workers and two apis, on three partitions, each reaching every broker node.
    let apps: Vec<&(String, &Value)> = cluster
        .iter()
        .filter(|(_, service)| binary(service).is_some_and(|b| BINARIES.contains(&b.as_str())))
        .collect();
    let workers: Vec<&str> = apps
        .iter()
        .filter(|(_, s)| binary(s).as_deref() == Some("sync-worker"))
        .map(|(name, _)| name.as_str())
        .collect();
    let apis: Vec<&str> = apps
        .iter()
        .filter(|(_, s)| binary(s).as_deref() == Some("api"))
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(workers.len(), 3, "{workers:?}");
    assert_eq!(apis.len(), 2, "{apis:?}");
    let node_names: BTreeSet<String> = nodes.iter().map(|(name, _)| name.clone()).collect();
    let mut consumed = BTreeSet::new();
    for (name, service) in &apps {
        let env = effective_environment(service);
        assert_eq!(
            env.get("WORK_PARTITIONS").map(String::as_str),
            Some("3"),
            "`{name}`: every api and worker of the cluster uses the same K = 3"
        );
        let urls = &env["AMQP_URL"];
        let hosts: BTreeSet<String> = url_parts(urls)
            .into_iter()
            .map(|(host, _, _)| host)
            .collect();
        assert_eq!(
            hosts, node_names,
            "`{name}`'s AMQP_URL must name every node"
        );
        assert!(
            urls.split(',').all(|url| url.starts_with("amqp://")),
            "`{name}`"
        );
        for node in &node_names {
            assert_eq!(
                dependency_condition(service, node).as_deref(),
                Some("service_healthy"),
                "`{name}` on `{node}`"
            );
        }
        if binary(service).as_deref() == Some("sync-worker") {
            let partitions = env.get("WORKER_PARTITIONS").map_or("", String::as_str);
            if partitions.is_empty() {
                consumed.extend(0..3);
            }
            for partition in partitions.split(',').filter(|p| !p.is_empty()) {
                let partition: u32 = partition.trim().parse().expect("a partition number");
                assert!(
                    partition < 3,
                    "`{name}` consumes partition {partition} of 3"
                );
                consumed.insert(partition);
            }
        }
    }
    assert_eq!(
        consumed,
        BTreeSet::from([0, 1, 2]),
        "a partition nobody consumes"
    );

    // A load balancer in front of the two apis, checking their health.
    let balancers: Vec<&(String, &Value)> = cluster
        .iter()
        .filter(|(_, service)| plain(&service["image"]).starts_with("haproxy:"))
        .collect();
    let [(lb_name, lb)] = balancers.as_slice() else {
        panic!("expected one HAProxy in the cluster profile: {balancers:?}");
    };
    let config_path = mounted_at(lb, "/usr/local/etc/haproxy/haproxy.cfg")
        .unwrap_or_else(|| panic!("`{lb_name}` does not mount its configuration"));
    let sections = haproxy_sections(&read(config_path.trim_start_matches("./")));
    let frontend_ports: BTreeSet<String> = sections
        .iter()
        .filter(|(name, _)| name.starts_with("frontend "))
        .flat_map(|(_, lines)| lines.iter())
        .filter_map(|line| line.strip_prefix("bind "))
        .map(|bind| {
            bind.trim()
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let published: Vec<(String, String, String)> = port_bindings(lb);
    assert!(
        published
            .iter()
            .any(|(_, _, target)| frontend_ports.contains(target)),
        "`{lb_name}` publishes {published:?}, none of its frontends {frontend_ports:?}"
    );
    let backends: Vec<&Vec<String>> = sections
        .iter()
        .filter(|(name, _)| name.starts_with("backend "))
        .map(|(_, lines)| lines)
        .collect();
    let [backend] = backends.as_slice() else {
        panic!("expected one backend: {sections:?}");
    };
    let checks_by_default = backend.iter().any(|line| {
        line.starts_with("default-server") && line.split_whitespace().any(|w| w == "check")
    });
    let mut servers = BTreeSet::new();
    for line in backend.iter().filter(|line| line.starts_with("server ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let address = words.get(2).copied().unwrap_or_default();
        let (host, port) = address.split_once(':').unwrap_or((address, ""));
        let api = service(&compose, host);
        assert_eq!(
            port,
            setting(api, "PORT"),
            "{line}: not the port `{host}` listens on"
        );
        assert!(
            checks_by_default || words.contains(&"check"),
            "{line} is not health-checked"
        );
        servers.insert(host.to_string());
    }
    assert_eq!(
        servers,
        apis.iter().map(|a| (*a).to_string()).collect(),
        "the load balancer must spread over the cluster's apis"
    );
    let probes_ready = backend.iter().any(|line| {
        (line.starts_with("http-check send") || line.starts_with("option httpchk"))
            && line.contains("/api/ready")
    });
    assert!(
        probes_ready
            && backend
                .iter()
                .any(|line| line == "option httpchk" || line.starts_with("option httpchk ")),
        "the load balancer must ask each api's /api/ready: {backend:?}"
    );
    for api in &apis {
        assert_eq!(
            dependency_condition(lb, api).as_deref(),
            Some("service_healthy"),
            "`{lb_name}` on `{api}`"
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
