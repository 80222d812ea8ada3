//! `cutover validate` and `cutover up` on bad configs: every problem is
//! printed with its place, and the exit code is 1.

mod support;

use std::process::Command;

use support::{cutover_bin, TempDir};

const GOOD: &str = r#"
proxy:
  listen: ["127.0.0.1:18080"]
admin:
  listen: 127.0.0.1:19180
apps:
  web:
    command: ["demo-app"]
    env: { APP_VERSION: v1 }
routes:
  - { host: "*", path: /, app: web }
"#;

/// Runs `cutover <cmd> -c <file>` on `yaml`; returns (exit code, stderr).
fn run(cmd: &str, yaml: &str) -> (i32, String) {
    let dir = TempDir::new("validate");
    let file = dir.path().join("deploy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(cutover_bin())
        .args([cmd, "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), stderr)
}

/// Asserts `yaml` is refused with a line containing every one of `expect`.
fn refused(yaml: &str, expect: &[&str]) -> String {
    let (code, stderr) = run("validate", yaml);
    assert_eq!(code, 1, "exit 1 expected; stderr:\n{stderr}");
    assert!(
        stderr.lines().any(|line| expect.iter().all(|e| line.contains(e))),
        "no line contains all of {expect:?}; stderr:\n{stderr}"
    );
    stderr
}

#[test]
fn the_good_config_validates() {
    let (code, stderr) = run("validate", GOOD);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn the_shipped_deploy_yaml_validates() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy.yaml");
    let out = Command::new(cutover_bin())
        .args(["validate", "-c", shipped])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_duration_names_its_key_and_line() {
    let yaml = GOOD.replace("apps:\n  web:\n", "apps:\n  web:\n    drain_timeout: 5x\n");
    refused(&yaml, &["deploy.yaml:8:5:", "apps.web.drain_timeout", "5x"]);
}

#[test]
fn a_bad_listen_address_is_refused() {
    refused(
        &GOOD.replace("127.0.0.1:18080", "127.0.0.1:notaport"),
        &["proxy.listen", "127.0.0.1:notaport"],
    );
}

#[test]
fn an_empty_command_is_refused() {
    refused(
        &GOOD.replace(r#"command: ["demo-app"]"#, "command: []"),
        &["apps.web.command"],
    );
}

#[test]
fn a_missing_command_is_refused() {
    refused(
        &GOOD.replace("    command: [\"demo-app\"]\n", ""),
        &["apps.web", "command"],
    );
}

#[test]
fn a_route_to_an_unknown_app_is_refused() {
    refused(&GOOD.replace("app: web }", "app: wbe }"), &["routes[0].app", "wbe"]);
}

#[test]
fn a_duplicate_route_is_refused() {
    let yaml = format!("{GOOD}  - {{ host: \"*\", path: /, app: web }}\n");
    refused(&yaml, &["routes[1]", "duplicate"]);
}

#[test]
fn zero_instances_is_refused() {
    let yaml = GOOD.replace("apps:\n  web:\n", "apps:\n  web:\n    instances: 0\n");
    refused(&yaml, &["apps.web.instances"]);
}

#[test]
fn a_health_path_without_slash_is_refused() {
    let yaml = GOOD.replace("apps:\n  web:\n", "apps:\n  web:\n    health: { path: health }\n");
    refused(&yaml, &["apps.web.health.path"]);
}

#[test]
fn a_public_admin_listener_without_token_is_refused() {
    let yaml = GOOD.replace("listen: 127.0.0.1:19180", "listen: 0.0.0.0:19180\n  token_env: \"\"");
    refused(&yaml, &["admin", "token"]);
}

#[test]
fn an_unknown_key_is_refused_with_its_location() {
    let yaml = GOOD.replace("    command:", "    comand: x\n    command:");
    refused(&yaml, &["deploy.yaml:", "comand"]);
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let yaml = GOOD.replace("app: web }", "app: nope }").replace(
        "apps:\n  web:\n",
        "apps:\n  web:\n    instances: 0\n    stop_timeout: soon\n",
    );
    let stderr = refused(&yaml, &["routes[0].app"]);
    assert!(stderr.contains("apps.web.instances"), "{stderr}");
    assert!(stderr.contains("apps.web.stop_timeout"), "{stderr}");
    assert!(stderr.contains("3 problems"), "{stderr}");
}

#[test]
fn up_refuses_a_bad_config_the_same_way() {
    let (code, stderr) = run("up", &GOOD.replace("app: web }", "app: wbe }"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("routes[0].app"), "{stderr}");
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = Command::new(cutover_bin())
        .args(["validate", "-c", "/nonexistent/deploy.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/deploy.yaml"));
}
