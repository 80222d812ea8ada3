//! `deploy.yaml` as SPEC §2 and §3 describe it, through the public API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The example config the project ships (SPEC §3).
const EXAMPLE: &str = r#"proxy:
  listen: ["127.0.0.1:8080"]
  threads: 2
  hold_timeout: 30s
  long_lived: { spread: 2s, close_grace: 1s, idle_timeout: 1h }
admin:
  listen: 127.0.0.1:9180
  token_env: CUTOVER_ADMIN_TOKEN
state_dir: .cutover
apps:
  web:
    command: ["target/release/demo-app"]
    cwd: .
    env: { APP_VERSION: v1 }
    instances: 1
    health: { path: /health, interval: 500ms, timeout: 2s, start_timeout: 30s }
    hooks: { build: "", deploy: "", post_start: "", post_deploy: "" }
    drain_timeout: 30s
    stop_timeout: 10s
    deploy_strategy: stopstart
    manual_deployments: false
routes:
  - { host: "*", path: /, app: web }
"#;

/// Smallest valid config: everything else defaulted.
const MINIMAL: &str = "\
apps:
  web:
    command: [bin/web]
routes:
  - app: web
";

fn base() -> &'static Path {
    Path::new("/srv/site")
}

fn parse_ok(source: &str) -> Config {
    match parse(source, "deploy.yaml", base()) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

fn problems(source: &str) -> Vec<Problem> {
    match parse(source, "deploy.yaml", base()) {
        Ok(_) => panic!("expected problems, config was valid:\n{source}"),
        Err(ConfigError::Invalid(problems)) => problems.0,
        Err(err) => panic!("unexpected error {err}"),
    }
}

/// `MINIMAL` with `extra` spliced into app `web` (indented 4) or appended.
fn web_with(lines: &str) -> String {
    let indented: String = lines.lines().map(|l| format!("    {l}\n")).collect();
    MINIMAL.replace(
        "    command: [bin/web]\n",
        &format!("    command: [bin/web]\n{indented}"),
    )
}

/// Asserts the config has exactly one problem, at `key_path`, with `message`.
#[track_caller]
fn assert_single(source: &str, key_path: &str, message: &str) {
    let found = problems(source);
    let shown: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    assert_eq!(found.len(), 1, "expected one problem, got {shown:#?}");
    assert_eq!(found[0].key_path.as_deref(), Some(key_path), "{shown:#?}");
    assert_eq!(found[0].message, message, "{shown:#?}");
}

// === the shipped example ===

#[test]
fn shipped_example_parses_with_its_values() {
    let config = parse_ok(EXAMPLE);
    assert_eq!(
        config.proxy.listen,
        vec!["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(config.proxy.threads, 2);
    assert_eq!(config.proxy.hold_timeout, Duration::from_secs(30));
    assert_eq!(config.proxy.long_lived.idle_timeout, Duration::from_secs(3600));
    assert_eq!(config.admin.token_env.as_deref(), Some("CUTOVER_ADMIN_TOKEN"));
    assert_eq!(config.state_dir, PathBuf::from("/srv/site/.cutover"));
    let web = &config.apps["web"];
    assert_eq!(web.command, Command::Argv(vec!["target/release/demo-app".into()]));
    assert_eq!(web.cwd, PathBuf::from("/srv/site"));
    assert_eq!(web.env, BTreeMap::from([("APP_VERSION".into(), "v1".into())]));
    assert_eq!(web.health.interval, Duration::from_millis(500));
    // Empty hook strings mean "no hook".
    assert_eq!(web.hooks, Hooks::default());
    assert_eq!(web.deploy_strategy, Strategy::Stopstart);
    let route = &config.routes[0];
    assert_eq!(
        (&route.host, route.path.as_str(), route.app.as_str()),
        (&HostPattern::Any, "/", "web")
    );
}

#[test]
fn defaults_fill_everything_left_out() {
    let config = parse_ok(MINIMAL);
    let example = parse_ok(EXAMPLE);
    assert_eq!(config.proxy.threads, validate::default_threads());
    let mut expected = example.clone();
    expected.proxy.threads = config.proxy.threads;
    expected.apps.get_mut("web").unwrap().command = Command::Argv(vec!["bin/web".into()]);
    expected.apps.get_mut("web").unwrap().env.clear();
    // Everything else in the example is spelled-out defaults.
    assert_eq!(config, expected);
}

#[test]
fn shell_commands_and_relative_dirs() {
    let source = web_with("cwd: services/web").replace("[bin/web]", "\"exec bin/web --port $PORT\"");
    let web = &parse_ok(&source).apps["web"];
    assert_eq!(web.command, Command::Shell("exec bin/web --port $PORT".into()));
    assert_eq!(web.cwd, PathBuf::from("/srv/site/services/web"));
    let absolute = parse_ok(&web_with("cwd: /opt/web"));
    assert_eq!(absolute.apps["web"].cwd, PathBuf::from("/opt/web"));
}

#[test]
fn token_env_empty_string_turns_the_token_off() {
    let config = parse_ok(&format!("admin: {{ token_env: \"\" }}\n{MINIMAL}"));
    assert_eq!(config.admin.token_env, None);
    let config = parse_ok(&format!("admin: {{ listen: \"localhost:9999\" }}\n{MINIMAL}"));
    assert_eq!(config.admin.listen, "127.0.0.1:9999".parse().unwrap());
    assert_eq!(config.admin.token_env.as_deref(), Some("CUTOVER_ADMIN_TOKEN"));
}

#[test]
fn route_hosts_are_lowercased_patterns() {
    let source = MINIMAL.replace(
        "  - app: web\n",
        "  - { host: \"*.Example.com\", path: /api, app: web }\n  - { host: WWW.example.com, app: web }\n",
    );
    let routes = parse_ok(&source).routes;
    assert_eq!(routes[0].host, HostPattern::Wildcard("example.com".into()));
    assert_eq!(routes[0].path, "/api");
    assert_eq!(routes[1].host, HostPattern::Exact("www.example.com".into()));
}

#[test]
fn load_resolves_paths_against_the_config_files_directory() {
    let dir = std::env::temp_dir().join(format!("cutover-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("deploy.yaml");
    std::fs::write(&file, EXAMPLE).unwrap();
    let config = load(&file);
    std::fs::remove_dir_all(&dir).unwrap();
    let config = config.unwrap();
    let dir = dir.canonicalize().unwrap_or(dir);
    assert_eq!(config.state_dir, dir.join(".cutover"));
    assert_eq!(config.apps["web"].cwd, dir);
}

#[test]
fn load_reports_an_unreadable_file() {
    let err = load(Path::new("/nonexistent/deploy.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read /nonexistent/deploy.yaml: "));
}

#[test]
fn invalid_config_displays_every_problem_one_per_line() {
    let err = parse("apps: {}\n", "deploy.yaml", base()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "deploy.yaml:1:1: apps: no apps defined; add at least one, e.g. web: { command: [\"bin/web\"] }\n\
         deploy.yaml: routes: missing key \"routes\": add at least one route, e.g. routes: [{ host: \"*\", path: /, app: web }]"
    );
}

// === structural problems ===

#[test]
fn unknown_keys_are_errors_with_a_suggestion() {
    assert_single(
        &MINIMAL.replace("command:", "comand:"),
        "apps.web.comand",
        "unknown key \"comand\" (did you mean \"command\"?); expected one of command, cwd, env, instances, \
         health, hooks, drain_timeout, stop_timeout, deploy_strategy, manual_deployments, upstream, error_pages, canary, bluegreen",
    );
    assert_single(
        &format!("{MINIMAL}extra: 1\n"),
        "extra",
        "unknown key \"extra\"; expected one of proxy, admin, state_dir, apps, routes",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_single(
        &web_with("instances: two"),
        "apps.web.instances",
        "expected a whole number, found the string \"two\"",
    );
    assert_single(
        &web_with("manual_deployments: yes"),
        "apps.web.manual_deployments",
        "expected true or false, found the string \"yes\"",
    );
    assert_single(
        &web_with("deploy_strategy: blue-green"),
        "apps.web.deploy_strategy",
        "unknown value \"blue-green\" (did you mean \"bluegreen\"?); expected one of rolling, stopstart, canary, bluegreen",
    );
}

#[test]
fn yaml_syntax_errors_are_one_problem_with_a_place() {
    let found = problems("apps:\n  web: { command: [bin/web }\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].location, Some((2, 28)));
    assert!(found[0].message.starts_with("invalid YAML: "), "{}", found[0].message);
    let found = problems("apps: {}\napps: {}\n");
    assert_eq!(
        found[0].to_string(),
        "deploy.yaml:2:1: apps: key \"apps\" appears twice in the same mapping; keep one"
    );
    let found = problems(&web_with("env: { A: x }\nenv: { B: y }"));
    assert_eq!(
        found[0].to_string(),
        "deploy.yaml:5:5: apps.web.env: key \"env\" appears twice in the same mapping; keep one"
    );
}

#[test]
fn empty_file() {
    let found = problems("");
    assert_eq!(found.len(), 1);
    assert!(found[0].message.starts_with("the file is empty"));
}

// === every problem at once ===

#[test]
fn a_config_with_several_problems_reports_them_all_in_file_order() {
    let source = r#"proxy:
  listen: ["127.0.0.1:8080", "nowhere"]
  threads: 0
admin:
  listen: 127.0.0.1:8080
apps:
  web:
    comand: [bin/web]
    health: { path: health, interval: 5x }
  Bad.Name:
    command: []
    instances: 100
routes:
  - { app: wbe }
  - { host: "*", path: /, app: web, weight: 2 }
"#;
    let shown: Vec<String> = problems(source).iter().map(|p| p.to_string()).collect();
    assert_eq!(
        shown,
        [
            "deploy.yaml:2:30: proxy.listen[1]: invalid listen address \"nowhere\": expected ip:port such as \
             127.0.0.1:8080, [::1]:8080 or localhost:8080 (host names are not resolved)",
            "deploy.yaml:3:3: proxy.threads: threads must be between 1 and 256, got 0; leave it out to use one per CPU",
            "deploy.yaml:5:3: admin.listen: 127.0.0.1:8080 conflicts with proxy listener proxy.listen[0] \
             (127.0.0.1:8080); give the admin API its own port, e.g. 127.0.0.1:9180",
            "deploy.yaml:8:5: apps.web.comand: unknown key \"comand\" (did you mean \"command\"?); expected one of \
             command, cwd, env, instances, health, hooks, drain_timeout, stop_timeout, deploy_strategy, manual_deployments, upstream, error_pages, canary, bluegreen",
            "deploy.yaml:9:15: apps.web.health.path: path \"health\" must start with \"/\", e.g. /health",
            "deploy.yaml:9:29: apps.web.health.interval: invalid duration \"5x\": expected a number with a unit \
             such as 500ms, 30s, 1h",
            "deploy.yaml:10:3: apps.Bad.Name: app name \"Bad.Name\" is not allowed: use 1 to 63 lowercase letters, \
             digits, \"-\" and \"_\", starting with a letter or digit (it names instances and metric labels)",
            "deploy.yaml:11:5: apps.Bad.Name.command: command is an empty list; give the program to run first, \
             e.g. [\"bin/web\"]",
            "deploy.yaml:12:5: apps.Bad.Name.instances: instances must be between 1 and 64, got 100",
            "deploy.yaml:14:7: routes[0].app: route points at unknown app \"wbe\" (did you mean \"web\"?); \
             defined apps: Bad.Name, web",
            "deploy.yaml:15:5: routes[1]: duplicate route: host \"*\" path / is already routed by routes[0]; \
             remove one or change its host or path",
            "deploy.yaml:15:37: routes[1].weight: unknown key \"weight\"; expected one of host, path, app",
        ]
    );
}

mod bounds;
mod checks;
mod error_pages;
mod progressive;
mod props;
mod tls;
mod tuning;
