//! One test per validation rule: the exact problem and its key path.

use std::time::Duration;

use super::*;

fn with_proxy(proxy: &str) -> String {
    format!("proxy: {proxy}\n{MINIMAL}")
}

fn with_admin(admin: &str) -> String {
    format!("admin: {admin}\n{MINIMAL}")
}

fn with_routes(routes: &str) -> String {
    MINIMAL.replace("routes:\n  - app: web\n", &format!("routes:\n{routes}"))
}

// === proxy ===

#[test]
fn listen_addresses_must_be_ip_port() {
    assert_single(
        &with_proxy("{ listen: [\"example.com:80\"] }"),
        "proxy.listen[0]",
        "invalid listen address \"example.com:80\": expected ip:port such as 127.0.0.1:8080, [::1]:8080 or \
         localhost:8080 (host names are not resolved)",
    );
}

#[test]
fn at_least_one_listen_address() {
    assert_single(
        &with_proxy("{ listen: [] }"),
        "proxy.listen",
        "no listen address; give at least one, e.g. [\"127.0.0.1:8080\"]",
    );
}

#[test]
fn listen_addresses_must_not_repeat_or_overlap() {
    assert_single(
        &with_proxy("{ listen: [\"127.0.0.1:8080\", \"localhost:8080\"] }"),
        "proxy.listen[1]",
        "127.0.0.1:8080 conflicts with proxy.listen[0] (127.0.0.1:8080); each listener needs its own address and port",
    );
    assert_single(
        &with_proxy("{ listen: [\"127.0.0.1:8080\", \"0.0.0.0:8080\"] }"),
        "proxy.listen[1]",
        "0.0.0.0:8080 conflicts with proxy.listen[0] (127.0.0.1:8080); each listener needs its own address and port",
    );
    // Indexes are as written, counting entries that were themselves invalid.
    let found = problems(&with_proxy("{ listen: [\"bad\", \"127.0.0.1:80\", \"127.0.0.1:80\"] }"));
    assert_eq!(found[1].key_path.as_deref(), Some("proxy.listen[2]"));
    assert!(found[1].message.contains("conflicts with proxy.listen[1]"));
    // Port 0 asks the OS for a free port: never a conflict.
    parse_ok(&with_proxy("{ listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"] }"));
}

#[test]
fn threads_between_one_and_256() {
    for n in ["0", "-3", "257", "100000"] {
        assert_single(
            &with_proxy(&format!("{{ threads: {n} }}")),
            "proxy.threads",
            &format!("threads must be between 1 and 256, got {n}; leave it out to use one per CPU"),
        );
    }
    assert_eq!(parse_ok(&with_proxy("{ threads: 256 }")).proxy.threads, 256);
    assert_eq!(parse_ok(&with_proxy("{ threads: 1 }")).proxy.threads, 1);
}

#[test]
fn hold_timeout_must_be_a_positive_duration() {
    let positive = "must be greater than zero, e.g. 500ms or 30s";
    assert_single(&with_proxy("{ hold_timeout: 0s }"), "proxy.hold_timeout", positive);
    assert_single(
        &with_proxy("{ hold_timeout: 5x }"),
        "proxy.hold_timeout",
        "invalid duration \"5x\": expected a number with a unit such as 500ms, 30s, 1h",
    );
    assert_single(
        &with_proxy("{ hold_timeout: 30 }"),
        "proxy.hold_timeout",
        "invalid duration 30: a number needs a unit, e.g. 30s or 30ms",
    );
}

#[test]
fn spread_and_close_grace_may_be_zero_idle_timeout_not() {
    let config = parse_ok(&with_proxy("{ long_lived: { spread: 0s, close_grace: 0 } }"));
    assert_eq!(config.proxy.long_lived.spread, Duration::ZERO);
    assert_eq!(config.proxy.long_lived.close_grace, Duration::ZERO);
    assert_eq!(config.proxy.long_lived.idle_timeout, Duration::from_secs(3600));
    // An idle timeout of zero would close every WebSocket at once.
    assert_single(
        &with_proxy("{ long_lived: { idle_timeout: 0s } }"),
        "proxy.long_lived.idle_timeout",
        "must be at least 1s, got 0s",
    );
}

// === admin ===

#[test]
fn admin_must_not_share_a_proxy_listener() {
    assert_single(
        &format!("proxy: {{ listen: [\"0.0.0.0:9180\"] }}\n{MINIMAL}"),
        "admin.listen",
        "127.0.0.1:9180 conflicts with proxy listener proxy.listen[0] (0.0.0.0:9180); give the admin API its own \
         port, e.g. 127.0.0.1:9180",
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    assert_single(
        &with_admin("{ listen: \"0.0.0.0:9180\", token_env: \"\" }"),
        "admin.token_env",
        "the admin API listens on 0.0.0.0:9180, reachable from other machines, without a token; set token_env to \
         the name of an environment variable holding a bearer token, or listen on 127.0.0.1",
    );
    // With a token variable named, whether it is set is checked at run time.
    let config = parse_ok(&with_admin(
        "{ listen: \"0.0.0.0:9180\", token_env: SOME_UNSET_VARIABLE }",
    ));
    assert_eq!(config.admin.token_env.as_deref(), Some("SOME_UNSET_VARIABLE"));
    parse_ok(&with_admin("{ listen: \"[::1]:9180\", token_env: \"\" }"));
}

#[test]
fn token_env_must_be_a_variable_name() {
    assert_single(
        &with_admin("{ token_env: \"TOKEN=abc\" }"),
        "admin.token_env",
        "token_env \"TOKEN=abc\" contains \"=\"; write the name as the key and the value after the colon, e.g. A: b",
    );
}

// === apps ===

#[test]
fn apps_are_required() {
    assert_single(
        "routes: [{ app: web }]\n",
        "apps",
        "missing key \"apps\": define at least one app, e.g. apps: { web: { command: [\"bin/web\"] } }",
    );
    assert_single(
        "apps: {}\nroutes: [{ app: web }]\n",
        "apps",
        "no apps defined; add at least one, e.g. web: { command: [\"bin/web\"] }",
    );
}

#[test]
fn app_names_are_lowercase_identifiers() {
    let source = MINIMAL.replace("  web:", "  Web:").replace("app: web", "app: Web");
    assert_single(
        &source,
        "apps.Web",
        "app name \"Web\" is not allowed: use 1 to 63 lowercase letters, digits, \"-\" and \"_\", starting with a \
         letter or digit (it names instances and metric labels)",
    );
}

#[test]
fn command_is_required_and_not_empty() {
    assert_single(
        &MINIMAL.replace("    command: [bin/web]\n", "    cwd: .\n"),
        "apps.web.command",
        "missing key \"command\": give an argv list such as [\"bin/web\"] or a shell string such as \"bin/web --port $PORT\"",
    );
    assert_single(
        &MINIMAL.replace("[bin/web]", "[]"),
        "apps.web.command",
        "command is an empty list; give the program to run first, e.g. [\"bin/web\"]",
    );
    assert_single(
        &MINIMAL.replace("[bin/web]", "[\"\", --flag]"),
        "apps.web.command[0]",
        "the program name is empty; give the program to run, e.g. bin/web",
    );
    assert_single(
        &MINIMAL.replace("[bin/web]", "\"  \""),
        "apps.web.command",
        "command is blank; give a shell command such as \"bin/web\" or an argv list",
    );
}

#[test]
fn instances_between_one_and_sixty_four() {
    for n in [0, 65] {
        assert_single(
            &web_with(&format!("instances: {n}")),
            "apps.web.instances",
            &format!("instances must be between 1 and 64, got {n}"),
        );
    }
    assert_eq!(parse_ok(&web_with("instances: 64")).apps["web"].instances, 64);
}

#[test]
fn health_path_starts_with_a_slash() {
    assert_single(
        &web_with("health: { path: healthz }"),
        "apps.web.health.path",
        "path \"healthz\" must start with \"/\", e.g. /health",
    );
}

#[test]
fn health_durations_must_be_positive() {
    for key in ["timeout", "start_timeout"] {
        assert_single(
            &web_with(&format!("health: {{ {key}: 0s }}")),
            &format!("apps.web.health.{key}"),
            "must be greater than zero, e.g. 500ms or 30s",
        );
    }
    assert_single(
        &web_with("health: { interval: 0s }"),
        "apps.web.health.interval",
        "must be at least 10ms, got 0s",
    );
}

#[test]
fn health_timeout_within_start_timeout() {
    assert_single(
        &web_with("health: { timeout: 40s }"),
        "apps.web.health.timeout",
        "timeout (40s) is longer than start_timeout (30s), so one check could outlast the whole start; lower \
         timeout or raise start_timeout",
    );
}

#[test]
fn drain_timeout_may_be_zero_when_long_lived_notices_take_no_time() {
    let source = format!(
        "proxy: {{ long_lived: {{ spread: 0s, close_grace: 0s }} }}\n{}",
        web_with("drain_timeout: 0s")
    );
    assert_eq!(parse_ok(&source).apps["web"].drain_timeout, Duration::ZERO);
}

#[test]
fn env_keys_must_be_valid_and_not_reserved() {
    assert_single(
        &web_with("env: { \"A=B\": x }"),
        "apps.web.env.A=B",
        "env key \"A=B\" contains \"=\"; write the name as the key and the value after the colon, e.g. A: b",
    );
    assert_single(
        &web_with("env: { \"\": x }"),
        "apps.web.env",
        "env key is empty; give a variable name such as APP_MODE",
    );
    assert_single(
        &web_with("env: { PORT: \"9000\" }"),
        "apps.web.env.PORT",
        "PORT is set by cutover for every instance (PORT, CUTOVER_APP, CUTOVER_INSTANCE, CUTOVER_ROLE); remove it or \
         use another name",
    );
}

#[test]
fn cwd_must_not_be_empty() {
    assert_single(
        &web_with("cwd: \"\""),
        "apps.web.cwd",
        "is empty; use . for the config file's directory, or leave it out for .",
    );
}

// === routes ===

#[test]
fn routes_are_required() {
    assert_single(
        "apps: { web: { command: [x] } }\n",
        "routes",
        "missing key \"routes\": add at least one route, e.g. routes: [{ host: \"*\", path: /, app: web }]",
    );
    assert_single(
        &with_routes("  []\n"),
        "routes",
        "no routes defined; add at least one, e.g. - { host: \"*\", path: /, app: web }",
    );
}

#[test]
fn routes_name_defined_apps() {
    assert_single(
        &with_routes("  - { app: wbe }\n"),
        "routes[0].app",
        "route points at unknown app \"wbe\" (did you mean \"web\"?); defined apps: web",
    );
    assert_single(
        &with_routes("  - { app: zzz }\n"),
        "routes[0].app",
        "route points at unknown app \"zzz\"; defined apps: web",
    );
    assert_single(
        &with_routes("  - { path: / }\n"),
        "routes[0].app",
        "missing key \"app\": name the app this route sends traffic to; defined apps: web",
    );
}

#[test]
fn routes_must_not_repeat() {
    assert_single(
        &with_routes("  - { host: example.com, app: web }\n  - { host: EXAMPLE.com, path: /, app: web }\n"),
        "routes[1]",
        "duplicate route: host \"example.com\" path / is already routed by routes[0]; remove one or change its host \
         or path",
    );
    parse_ok(&with_routes(
        "  - { host: example.com, app: web }\n  - { host: example.com, path: /api, app: web }\n",
    ));
}

#[test]
fn route_hosts_are_names_or_wildcards() {
    let cases = [
        (
            "https://example.com",
            "must not include a scheme; write just the host name, e.g. example.com",
        ),
        (
            "example.com:443",
            "must not include a port; routes match the host name on every listener",
        ),
        (
            "example.com/api",
            "must not include a path; put the path in the route's path:",
        ),
    ];
    for (host, why) in cases {
        assert_single(
            &with_routes(&format!("  - {{ host: \"{host}\", app: web }}\n")),
            "routes[0].host",
            &format!("route host \"{host}\" {why}"),
        );
    }
    assert_single(
        &with_routes("  - { host: \"www.*.com\", app: web }\n"),
        "routes[0].host",
        "route host \"www.*.com\": \"*\" is only allowed alone or as the whole first label, as in *.example.com",
    );
}

#[test]
fn route_paths_start_with_a_slash() {
    assert_single(
        &with_routes("  - { path: api, app: web }\n"),
        "routes[0].path",
        "path \"api\" must start with \"/\", e.g. /api",
    );
}
