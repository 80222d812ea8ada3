//! The proxies measured: nginx, HAProxy, cutover; how each is configured,
//! started and stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{descendants, free_port, serves, settled_rss_kib, Spawned, TempDir};
use crate::{Knobs, CLOSE_GRACE, SPREAD};

/// What runs as the proxy; cutover's binary may be an older build (`before`).
#[derive(Clone)]
pub enum Kind {
    Nginx,
    Haproxy,
    Cutover(PathBuf),
}

/// One proxy (and, for nginx and HAProxy, the demo-app it fronts), stopped
/// and cleaned up on drop: the proxy first, then the app, then the directory.
pub struct Peer {
    pub kind: Kind,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    processes: Vec<Spawned>,
    dir: TempDir,
}

impl Peer {
    pub fn start(name: &str, kind: &Kind, knobs: &Knobs) -> Result<Self, String> {
        let dir = TempDir::new(&format!("connscale-{name}"));
        // nginx's worker (nobody) creates its temp directories in here.
        let _ = Command::new("chmod").arg("755").arg(&dir.0).status();
        let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let log = |file: &str| std::fs::File::create(dir.0.join(file)).map_err(|e| e.to_string());
        let mut processes = Vec::new();
        let mut proxy_cmd = match kind {
            Kind::Cutover(bin) => {
                let config = dir.0.join("deploy.yaml");
                std::fs::write(
                    &config,
                    cutover_yaml(proxy, admin, &dir.0, &knobs.demo_bin, knobs.max_connections()),
                )
                .map_err(|e| e.to_string())?;
                let mut cmd = Command::new(bin);
                cmd.args(["up", "--access-log", "off", "-c"])
                    .arg(&config)
                    .env("RUST_LOG", "warn");
                cmd.stderr(log("proxy.log")?);
                cmd
            }
            Kind::Nginx | Kind::Haproxy => {
                let backend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
                let app = Command::new(&knobs.demo_bin)
                    .env("PORT", backend.port().to_string())
                    .env("APP_VERSION", "v1")
                    .env("DEMO_TICK_MS", "0")
                    .stdout(Stdio::null())
                    .stderr(log("demo-app.log")?)
                    .spawn()
                    .map_err(|e| format!("{}: {e}", knobs.demo_bin.display()))?;
                processes.push(Spawned::new("demo-app", app, Duration::from_secs(10)));
                if !serves(backend, "/health", Duration::from_secs(20)) {
                    return Err("the standalone demo-app did not serve /health within 20 s".into());
                }
                if let Kind::Nginx = kind {
                    let conf = dir.0.join("nginx.conf");
                    std::fs::write(&conf, nginx_conf(proxy, backend, &dir.0, knobs.nofile))
                        .map_err(|e| e.to_string())?;
                    let mut cmd = Command::new("nginx");
                    cmd.arg("-p")
                        .arg(&dir.0)
                        .arg("-e")
                        .arg(dir.0.join("proxy.log"))
                        .arg("-c")
                        .arg(&conf)
                        .args(["-g", "daemon off;"]);
                    cmd.stderr(log("proxy-stderr.log")?);
                    cmd
                } else {
                    let conf = dir.0.join("haproxy.cfg");
                    std::fs::write(&conf, haproxy_cfg(proxy, backend, knobs.max_connections()))
                        .map_err(|e| e.to_string())?;
                    let mut cmd = Command::new("haproxy");
                    cmd.arg("-db").arg("-f").arg(&conf);
                    cmd.stderr(log("proxy.log")?);
                    cmd
                }
            }
        };
        let child = proxy_cmd
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{name} does not start: {e}"))?;
        // Stopped before the app it fronts.
        processes.insert(0, Spawned::new(name, child, Duration::from_secs(15)));
        let mut peer = Self {
            kind: kind.clone(),
            proxy,
            admin,
            processes,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !serves(proxy, "/", Duration::from_millis(500)) {
            let exited = peer.processes[0].exited();
            if exited.is_some() || Instant::now() >= deadline {
                return Err(format!(
                    "{name} did not answer GET / with 200 within 30 s ({}); its log ends with:\n{}",
                    exited.map_or("still running".into(), |s| format!("exited: {s}")),
                    peer.log_tail(20)
                ));
            }
        }
        Ok(peer)
    }

    /// The proxy's own processes: nginx's master and worker; not an app.
    pub fn pids(&self) -> Vec<u32> {
        let pid = self.processes[0].pid();
        match self.kind {
            Kind::Nginx => std::iter::once(pid).chain(descendants(pid)).collect(),
            Kind::Haproxy | Kind::Cutover(_) => vec![pid],
        }
    }

    pub fn settled_rss(&self) -> u64 {
        settled_rss_kib(|| self.pids())
    }

    /// Descriptors the proxy's processes hold: whether connections the
    /// clients closed are really gone (RSS alone cannot tell a leak from
    /// what the allocator keeps).
    pub fn open_fds(&self) -> usize {
        self.pids()
            .iter()
            .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
            .map(|d| d.count())
            .sum()
    }

    /// The last `lines` lines of the proxy's log (warnings, errors).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("proxy.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

pub fn cutover_yaml(proxy: SocketAddr, admin: SocketAddr, dir: &Path, demo: &Path, max_connections: usize) -> String {
    format!(
        r#"proxy:
  listen: ["{proxy}"]
  threads: 1
  limits: {{ keepalive_timeout: 300s, max_connections: {max_connections} }}
  long_lived: {{ spread: {}s, close_grace: {}s, idle_timeout: 1h }}
admin: {{ listen: "{admin}" }}
state_dir: {}
apps:
  web:
    command: ["{}"]
    env: {{ APP_VERSION: v1, DEMO_TICK_MS: "0" }}
    health: {{ path: /health, interval: 100ms, timeout: 1s, start_timeout: 20s }}
    drain_timeout: 30s
routes:
  - {{ host: "*", path: /, app: web }}
"#,
        SPREAD.as_secs(),
        CLOSE_GRACE.as_secs(),
        dir.join("state").display(),
        demo.display()
    )
}

/// One worker; every connection (client and upstream) counts against
/// `worker_connections`, so it is the whole descriptor limit.
pub fn nginx_conf(proxy: SocketAddr, backend: SocketAddr, dir: &Path, nofile: u64) -> String {
    format!(
        r#"worker_processes 1;
worker_rlimit_nofile {nofile};
error_log {dir}/proxy.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections {nofile}; }}
http {{
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 1000000;
  upstream app {{ server {backend}; keepalive 64; }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  server {{
    listen {proxy} backlog=4096;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }}
  }}
}}
"#,
        dir = dir.display()
    )
}

/// One thread, foreground, no master-worker. HAProxy reserves two
/// descriptors per connection and, by default, refuses to start when
/// `ulimit -n` is below that (it cannot raise the hard limit here);
/// `no strict-limits` makes that a warning, so `maxconn` can cover
/// `KEEPALIVE` (one descriptor each, the upstream ones pooled) while a
/// WebSocket, which does take two, stays within `check_fit`.
pub fn haproxy_cfg(proxy: SocketAddr, backend: SocketAddr, maxconn: usize) -> String {
    format!(
        r#"global
  nbthread 1
  maxconn {maxconn}
  no strict-limits
defaults
  mode http
  maxconn {maxconn}
  option http-keep-alive
  http-reuse safe
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout tunnel 1h
frontend f
  bind {proxy} backlog 4096
  default_backend b
backend b
  server s1 {backend}
"#
    )
}

/// nginx and HAProxy, installed like `benches/peers.sh` does when missing;
/// whether `tool` is there now.
pub fn ensure_installed(tool: &str) -> bool {
    let present = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present(tool) {
        return true;
    }
    println!("{tool} is missing: installing haproxy and nginx-light with apt-get");
    let _ = Command::new("sh")
        .args([
            "-c",
            "SUDO=$([ \"$(id -u)\" = 0 ] || echo sudo); $SUDO apt-get update -qq && \
             DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq haproxy nginx-light",
        ])
        .status();
    present(tool)
}
