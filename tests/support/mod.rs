//! Test harness: a real `cutover up` on a generated config, with real
//! demo-app instances, on free loopback ports.
#![allow(dead_code)] // each test binary uses a different part

pub mod http;
pub mod load;
pub mod prom;

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use http::{Client, Response};

/// The demo app binary built with the tests.
pub fn demo_app() -> &'static str {
    env!("CARGO_BIN_EXE_demo-app")
}

/// The cutover binary built with the tests.
pub fn cutover_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cutover")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("cutover-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// One app in a generated config.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub instances: u32,
    pub env: Vec<(String, String)>,
    pub extra: Vec<String>,
    /// The app's argv; the demo app when `None`.
    pub command: Option<Vec<String>>,
}

impl App {
    /// A demo-app with `APP_VERSION=version`.
    pub fn demo(name: &str, version: &str) -> Self {
        Self {
            name: name.into(),
            instances: 1,
            env: vec![
                ("APP_VERSION".into(), version.into()),
                ("DEMO_TICK_MS".into(), "0".into()),
            ],
            extra: Vec::new(),
            command: None,
        }
    }

    /// Runs `argv` instead of the demo app.
    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = Some(argv.iter().map(|a| a.to_string()).collect());
        self
    }

    pub fn instances(mut self, n: u32) -> Self {
        self.instances = n;
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    /// A raw YAML line under the app, e.g. `drain_timeout: 2s`.
    pub fn yaml(mut self, line: &str) -> Self {
        self.extra.push(line.into());
        self
    }
}

/// Builds a config and starts cutover on it.
#[derive(Debug, Clone)]
pub struct Builder {
    apps: Vec<App>,
    routes: Vec<(String, String, String)>,
    hold_timeout: String,
    wait_ready: bool,
    token: Option<(String, String)>,
    proxy_extra: Vec<String>,
    admin_extra: Vec<String>,
    up_args: Vec<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            apps: Vec::new(),
            routes: Vec::new(),
            hold_timeout: "10s".into(),
            wait_ready: true,
            token: None,
            proxy_extra: Vec::new(),
            admin_extra: Vec::new(),
            up_args: Vec::new(),
        }
    }
}

impl Builder {
    pub fn app(mut self, app: App) -> Self {
        self.apps.push(app);
        self
    }

    pub fn route(mut self, host: &str, path: &str, app: &str) -> Self {
        self.routes.push((host.into(), path.into(), app.into()));
        self
    }

    pub fn hold_timeout(mut self, t: &str) -> Self {
        self.hold_timeout = t.into();
        self
    }

    /// Extra arguments for `cutover up` (e.g. `--access-log FILE`); the
    /// word `{dir}` is replaced by the test's directory.
    pub fn up_args(mut self, args: &[&str]) -> Self {
        self.up_args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// A raw YAML line under `proxy:`, e.g. `long_lived: { spread: 1s }`.
    pub fn proxy_yaml(mut self, line: &str) -> Self {
        self.proxy_extra.push(line.into());
        self
    }

    /// A raw YAML line under `admin:`, e.g. `allowed_origins: [...]`.
    pub fn admin_yaml(mut self, line: &str) -> Self {
        self.admin_extra.push(line.into());
        self
    }

    /// Protect the admin API with a token read from `$var`.
    pub fn admin_token(mut self, var: &str, token: &str) -> Self {
        self.token = Some((var.into(), token.into()));
        self
    }

    /// Return as soon as the proxy listens, before the apps are ready.
    pub fn no_wait(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    fn yaml(&self, proxy: SocketAddr, admin: SocketAddr) -> String {
        let mut y = String::new();
        writeln!(
            y,
            "proxy:\n  listen: [\"{proxy}\"]\n  threads: 2\n  hold_timeout: {}",
            self.hold_timeout
        )
        .unwrap();
        for line in &self.proxy_extra {
            writeln!(y, "  {line}").unwrap();
        }
        writeln!(y, "admin:\n  listen: {admin}").unwrap();
        if let Some((var, _)) = &self.token {
            writeln!(y, "  token_env: {var}").unwrap();
        }
        for line in &self.admin_extra {
            writeln!(y, "  {line}").unwrap();
        }
        writeln!(y, "state_dir: state\napps:").unwrap();
        for app in &self.apps {
            let command = match &app.command {
                Some(argv) => argv.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
                None => format!("{:?}", demo_app()),
            };
            writeln!(
                y,
                "  {}:\n    command: [{}]\n    instances: {}",
                app.name, command, app.instances
            )
            .unwrap();
            if !app.extra.iter().any(|l| l.starts_with("health:")) {
                let health = "health: { path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }";
                writeln!(y, "    {health}").unwrap();
            }
            writeln!(y, "    stop_timeout: 3s").unwrap();
            writeln!(y, "    env:").unwrap();
            for (k, v) in &app.env {
                writeln!(y, "      {k}: \"{v}\"").unwrap();
            }
            for line in &app.extra {
                writeln!(y, "    {line}").unwrap();
            }
        }
        writeln!(y, "routes:").unwrap();
        for (host, path, app) in &self.routes {
            writeln!(y, "  - {{ host: \"{host}\", path: \"{path}\", app: {app} }}").unwrap();
        }
        y
    }

    /// Writes the config and starts `cutover up` on it.
    pub fn start(self) -> Cutover {
        let dir = TempDir::new("up");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = dir.path().join("deploy.yaml");
        std::fs::write(&config, self.yaml(proxy, admin)).unwrap();
        let mut cutover = Cutover {
            child: None,
            dir,
            config,
            proxy,
            admin,
            runs: 0,
            token: self.token.clone(),
            up_args: Vec::new(),
        };
        let dir = cutover.dir.path().display().to_string();
        cutover.up_args = self.up_args.iter().map(|a| a.replace("{dir}", &dir)).collect();
        cutover.launch();
        if self.wait_ready {
            cutover.wait_all_ready(Duration::from_secs(30));
        }
        cutover
    }
}

/// A running `cutover up`.
pub struct Cutover {
    child: Option<Child>,
    pub dir: TempDir,
    pub config: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    runs: u32,
    /// (variable, token) when the admin API wants a token.
    pub token: Option<(String, String)>,
    up_args: Vec<String>,
}

impl Cutover {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts `cutover up` on the config (again).
    fn launch(&mut self) {
        self.runs += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("cutover.log"))
            .unwrap();
        let child = Command::new(cutover_bin())
            .args(["up", "-c"])
            .arg(&self.config)
            .args(&self.up_args)
            .env("RUST_LOG", "info")
            .env_remove("CUTOVER_ADMIN_TOKEN")
            .envs(self.token.clone())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cutover starts");
        self.child = Some(child);
        self.wait_listening();
    }

    /// Starts cutover again after it exited (same config, ports, state).
    /// Whatever cutover still runs on this config (the one this test
    /// started, or one an upgrade started) is killed with SIGKILL first.
    pub fn restart(&mut self) {
        let running = self.cutover_processes();
        for pid in &running {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_gone(&running, Duration::from_secs(10));
        self.launch();
    }

    /// Kills the current cutover with SIGKILL (its apps keep running:
    /// orphans) and waits until it is gone.
    pub fn kill9(&mut self) {
        let pid = self.pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        self.wait_gone(&[pid], Duration::from_secs(10));
        if self.child.as_ref().is_some_and(|c| c.id() == pid) {
            let mut child = self.child.take().unwrap();
            child.wait().unwrap();
        }
    }

    /// The config text.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap()
    }

    /// Runs a client command against this cutover: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(cutover_bin())
            .args(args)
            .env("CUTOVER_ADMIN", format!("http://{}", self.admin))
            .env(
                "CUTOVER_ADMIN_TOKEN",
                self.token.as_ref().map_or("", |(_, t)| t.as_str()),
            )
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `cutover push` of `yaml` (written next to the config) with `args`.
    pub fn push(&self, yaml: &str, args: &[&str]) -> (i32, String, String) {
        let file = self.dir.path().join("push.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut all = vec!["push", file.to_str().unwrap()];
        all.extend_from_slice(args);
        self.cli(&all)
    }

    /// The config without app `name` and its routes (the app must come
    /// last under `apps:`, as the builder writes them in order).
    pub fn config_without_app(&self, name: &str) -> String {
        let text = self.config_text();
        let apps_end = text.find("routes:").expect("a routes section");
        let app_start = text.find(&format!("  {name}:\n")).expect("the app in the config");
        format!("{}{}", &text[..app_start], &text[apps_end..])
            .lines()
            .filter(|line| !line.contains(&format!("app: {name} }}")))
            .map(|line| format!("{line}\n"))
            .collect()
    }

    /// The config with `from` replaced by `to` (e.g. a new APP_VERSION).
    pub fn config_with(&self, from: &str, to: &str) -> String {
        let text = self.config_text();
        assert!(text.contains(from), "{from:?} not in the config:\n{text}");
        text.replacen(from, to, 1)
    }

    /// `/metrics`, parsed.
    pub fn metrics(&self) -> Vec<prom::Sample> {
        let resp = self.admin_get("/metrics");
        assert_eq!(resp.status, 200);
        prom::parse(&resp.text())
    }

    /// The config with the demo app's `APP_VERSION` changed from `from` to `to`.
    pub fn config_with_version(&self, from: &str, to: &str) -> String {
        self.config_with(&format!("APP_VERSION: \"{from}\""), &format!("APP_VERSION: \"{to}\""))
    }

    /// One deployment record from the admin API.
    pub fn deployment(&self, id: &str) -> Value {
        let resp = self.admin_get(&format!("/deployments/{id}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        serde_json::from_slice(&resp.body).unwrap()
    }

    /// Every deployment record (history first).
    pub fn deployments(&self) -> Vec<Value> {
        let resp = self.admin_get("/deployments");
        serde_json::from_slice::<Value>(&resp.body)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cutover exited early ({status}); log:\n{}", self.log());
            }
            // A connect alone could reach a socket another process still
            // holds (a previous cutover on its way out): the admin API must
            // answer with this process's pid.
            let child = self.child.as_ref().map(std::process::Child::id);
            let admin_ok = self.status_pid().is_some_and(|pid| Some(pid) == child);
            let proxy_ok = std::net::TcpStream::connect(self.proxy).is_ok();
            if admin_ok && proxy_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cutover did not listen; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// cutover's own log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cutover.log")).unwrap_or_default()
    }

    /// An instance's log.
    pub fn instance_log(&self, instance: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("state/logs").join(format!("{instance}.log"))).unwrap_or_default()
    }

    /// `GET /status` from the admin API.
    pub fn status(&self) -> Value {
        let resp = self.admin_get("/status");
        assert_eq!(resp.status, 200, "{}", resp.text());
        serde_json::from_slice(&resp.body).unwrap()
    }

    /// The `Host` the admin API accepts: its own address (a request with
    /// any other Host gets 421).
    pub fn admin_host(&self) -> String {
        self.admin.to_string()
    }

    /// GET on the admin API, with the token when there is one.
    pub fn admin_get(&self, path: &str) -> Response {
        self.admin_send("GET", path, &[], &[])
    }

    /// POST of a JSON body on the admin API, with the token when there is one.
    pub fn admin_post_json(&self, path: &str, body: &[u8]) -> Response {
        self.admin_send("POST", path, &[("Content-Type", "application/json")], body)
    }

    /// Any request on the admin API on a fresh connection, with the right
    /// `Host` and the token when there is one, plus `headers`.
    pub fn admin_send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let auth = self.token.as_ref().map(|(_, t)| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        all.extend_from_slice(headers);
        Client::connect(self.admin)
            .and_then(|mut c| c.send(method, &self.admin_host(), path, &all, body))
            .unwrap_or_else(|e| panic!("admin answers {method} {path}: {e}; log:\n{}", self.log()))
    }

    /// Every instance of `app` in the status.
    pub fn instances(&self, app: &str) -> Vec<Value> {
        self.status()["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == app)
            .map(|a| a["instances"].as_array().unwrap().clone())
            .unwrap_or_default()
    }

    /// Pids of every instance process.
    pub fn instance_pids(&self) -> Vec<u32> {
        self.status()["apps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|a| a["instances"].as_array().unwrap().clone())
            .filter_map(|i| i["pid"].as_u64().map(|p| p as u32))
            .collect()
    }

    /// Waits until every instance of every app is ready.
    pub fn wait_all_ready(&self, timeout: Duration) {
        self.wait_until(timeout, "every instance ready", |c| {
            let status = c.status();
            status["apps"].as_array().unwrap().iter().all(|a| {
                let instances = a["instances"].as_array().unwrap();
                !instances.is_empty() && instances.iter().all(|i| i["state"] == "ready")
            })
        });
    }

    /// Polls `check` every 20 ms until it holds or `timeout` passes.
    pub fn wait_until(&self, timeout: Duration, what: &str, mut check: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A keep-alive client to the proxy.
    pub fn client(&self) -> Client {
        Client::connect(self.proxy).expect("proxy accepts")
    }

    /// One GET through the proxy on a fresh connection.
    pub fn get(&self, host: &str, path: &str) -> Response {
        http::get(self.proxy, host, path).expect("proxy answers")
    }

    /// Instance processes cutover runs right now: (pid, instance name).
    pub fn running_instances(&self) -> Vec<(u32, String)> {
        children_of(self.pid())
            .into_iter()
            .filter(|(_, name)| !name.is_empty())
            .collect()
    }

    /// The process id of the cutover running now: the one this test
    /// started, or the one an upgrade replaced it by. Found from the
    /// state_dir's lock file (which names its holder), else from `/status`,
    /// else it is the process this test started.
    pub fn pid(&self) -> u32 {
        self.current_pid()
            .or_else(|| self.child.as_ref().map(Child::id))
            .expect("a cutover was started")
    }

    /// The running cutover's pid, when one runs (see [`Cutover::pid`]).
    pub fn current_pid(&self) -> Option<u32> {
        let running = self.cutover_processes();
        if let Some(pid) = self.lock_pid().filter(|p| running.contains(p)) {
            return Some(pid);
        }
        if let Some(pid) = self.status_pid().filter(|p| process_alive(*p)) {
            return Some(pid);
        }
        self.child.as_ref().map(Child::id).filter(|p| process_alive(*p))
    }

    /// The state_dir, absolute and canonical (as cutover writes it into
    /// its children's `CUTOVER_STATE_DIR`).
    pub fn state_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("state");
        dir.canonicalize().unwrap_or(dir)
    }

    /// The pid written in `state_dir/lock` (by the lock's holder).
    pub fn lock_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("state/lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The top-level `pid` of `/status`, asked with short timeouts (`None`
    /// when the admin API does not answer, or has no such field).
    pub fn status_pid(&self) -> Option<u32> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&self.admin, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        stream.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
        let auth = self
            .token
            .as_ref()
            .map(|(_, t)| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "GET /status HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
            self.admin_host()
        );
        stream.write_all(head.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let text = String::from_utf8_lossy(&answer);
        let (_, body) = text.split_once("\r\n\r\n")?;
        let status: Value = serde_json::from_str(body).ok()?;
        status["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    }

    /// Every live `cutover up` on this config: the one this test started
    /// and any an upgrade started (`<binary> up <config> ...`), found by
    /// their command line naming this test's config file.
    pub fn cutover_processes(&self) -> Vec<u32> {
        let config = self.config.display().to_string();
        let canonical = self
            .config
            .canonicalize()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| config.clone());
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let names_config = args.iter().any(|a| *a == config || *a == canonical);
            // Any live thread counts: an exiting cutover's main thread is a
            // zombie while the others still hold its sockets.
            if names_config && args.iter().any(|a| a == "up") && (process_alive(pid) || any_thread_alive(pid)) {
                found.push(pid);
            }
        }
        found
    }

    /// Waits (up to `timeout`, else panics) until none of `pids` lives,
    /// reaping the process this test started when it is one of them.
    fn wait_gone(&mut self, pids: &[u32], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                let _ = child.try_wait();
            }
            let alive: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
            if alive.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cutover {alive:?} did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status of the process this test started, once it exited
    /// (`None` while it runs, or after [`Cutover::kill9`] took it).
    pub fn first_exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` to the current cutover and waits (up to `timeout`)
    /// for it to exit. Its exit status when this test started it; `None`
    /// when an upgrade did (not our child: its status cannot be read).
    pub fn stop(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.as_mut() {
                Some(child) if child.id() == pid => {
                    if let Some(status) = child.try_wait().unwrap() {
                        return Some(status);
                    }
                }
                _ if !process_alive(pid) => return None,
                _ => {}
            }
            assert!(Instant::now() < deadline, "cutover did not exit after {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the current cutover and waits (up to `timeout`)
    /// for it to exit; its exit status. Panics when the current cutover
    /// was started by an upgrade (its status cannot be read: use
    /// [`Cutover::stop`]).
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        self.stop(signal, timeout).unwrap_or_else(|| {
            panic!("cutover {pid} exited after {signal}, but an upgrade started it: its exit status cannot be read")
        })
    }
}

impl Drop for Cutover {
    /// Stops whichever cutover runs on this config (SIGTERM, then SIGKILL
    /// after 10 s), then kills any instance left over: by pid from the
    /// status, and by the state_dir's marker (instances an upgrade
    /// adopted, or a killed cutover left).
    fn drop(&mut self) {
        use nix::sys::signal::{kill, killpg, Signal};
        use nix::unistd::Pid;
        let mut running = self.cutover_processes();
        if let Some(child) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_none() && !running.contains(&child.id()) {
                running.push(child.id());
            }
        }
        let mut pids = if running.is_empty() {
            Vec::new()
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.instance_pids())).unwrap_or_default()
        };
        for pid in &running {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let gone = |child: &mut Option<Child>| {
            if let Some(c) = child.as_mut() {
                let _ = c.try_wait();
            }
            running.iter().all(|p| !process_alive(*p))
        };
        while !gone(&mut self.child) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in &running {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        pids.extend(marked_by(&self.state_dir()));
        for pid in pids {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Live processes whose environment carries `CUTOVER_STATE_DIR=<state_dir>`
/// (every instance and hook a cutover on that state_dir started).
pub fn marked_by(state_dir: &Path) -> Vec<u32> {
    let marker = format!("CUTOVER_STATE_DIR={}", state_dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marked = environ.split(|b| *b == 0).any(|v| v == marker.as_bytes());
        if marked && process_alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Live (not zombie) child processes of `parent`, with the instance name
/// from their environment.
pub fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 2 || fields[0] == "Z" || fields[1] != parent.to_string() {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let instance = environ
            .split(|b| *b == 0)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .find_map(|v| v.strip_prefix("CUTOVER_INSTANCE="))
            .unwrap_or("")
            .to_string();
        found.push((pid, instance));
    }
    found
}

/// True while a process with this pid exists and is not a zombie.
/// True while any thread of process `pid` runs. (The state in
/// `/proc/<pid>/stat` is the main thread's: it shows a zombie while the
/// other threads of an exiting process still run.)
pub fn any_thread_alive(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next()))
            .is_some_and(|state| !matches!(state, Some('Z') | Some('X')))
    })
}

pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start().chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
    }
}
