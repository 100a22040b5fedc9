#![allow(dead_code)]
//! A real git server for tests and benchmarks: `git daemon` of Debian's git on loopback, with
//! pushes allowed, a working clone to push from, and the push payload GitHub sends.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

/// The object id forges send for "no commit".
pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// Runs `git` in `dir`; panics with its output when it fails. Answers its standard output.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs: install Debian's git (scripts/test does)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A `git daemon` on loopback serving bare repositories, with pushes allowed, and a working
/// clone to push from.
pub struct GitServer {
    pub dir: PathBuf,
    daemon: Child,
    pub port: u16,
}

impl GitServer {
    pub fn start(dir: &Path) -> GitServer {
        let repos = dir.join("served");
        std::fs::create_dir_all(&repos).unwrap();
        git(&repos, &["init", "--bare", "--quiet", "origin.git"]);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", repos.display()),
                &repos.display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // `git` runs the daemon as a child of its own: the group is stopped at the end.
            .process_group(0)
            .spawn()
            .expect("git daemon starts: install Debian's git (scripts/test does)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "git daemon did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let work = dir.join("work");
        let server = GitServer {
            dir: dir.to_owned(),
            daemon,
            port,
        };
        git(
            dir,
            &[
                "clone",
                "--quiet",
                &server.url(),
                &work.display().to_string(),
            ],
        );
        server
    }

    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/origin.git", self.port)
    }

    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Commits `files` on `branch` (created from the current commit if new) and pushes it;
    /// answers the commit before (zeros for a new branch) and the new one.
    pub fn push(&self, branch: &str, files: &[(&str, &str)]) -> (String, String) {
        let work = self.work();
        let before = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/remotes/origin/{branch}"),
            ])
            .current_dir(&work)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| ZERO.to_owned());
        git(&work, &["checkout", "--quiet", "-B", branch]);
        for (path, text) in files {
            let file = work.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, text).unwrap();
        }
        git(&work, &["add", "--all"]);
        git(
            &work,
            &[
                "commit",
                "--quiet",
                "--allow-empty",
                "-m",
                &format!("change {branch}"),
            ],
        );
        git(
            &work,
            &[
                "push",
                "--quiet",
                "origin",
                &format!("HEAD:refs/heads/{branch}"),
            ],
        );
        git(&work, &["fetch", "--quiet", "origin"]);
        (before, git(&work, &["rev-parse", "HEAD"]))
    }

    /// Tags the current commit and pushes the tag; answers the commit.
    pub fn tag(&self, tag: &str) -> String {
        let work = self.work();
        git(&work, &["tag", tag]);
        git(
            &work,
            &["push", "--quiet", "origin", &format!("refs/tags/{tag}")],
        );
        git(&work, &["rev-parse", "HEAD"])
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // SAFETY: a plain signal to the process group this server started.
        unsafe { libc::kill(-(self.daemon.id() as i32), libc::SIGKILL) };
        let _ = self.daemon.wait();
    }
}

/// GitHub's push payload (the fields Hodei reads, and a few more as GitHub sends them).
pub fn github_push(branch_ref: &str, before: &str, after: &str) -> String {
    json!({
        "ref": branch_ref, "before": before, "after": after, "created": before == ZERO,
        "deleted": false, "forced": false, "base_ref": null,
        "repository": {"full_name": "acme/app", "default_branch": "main"},
        "pusher": {"name": "dev"}, "commits": [], "head_commit": {"id": after}
    })
    .to_string()
}

/// `git http-backend` behind a tiny HTTP/1.1 server on loopback that asks for HTTP basic
/// authentication: each request is answered 401 unless it carries `Authorization: Basic
/// base64(USER:TOKEN)` of the expected pair, and then handed to the CGI program. The headers
/// of every request are kept, to check what a client sent.
pub struct HttpGitServer {
    pub port: u16,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpGitServer {
    /// Serves the bare repositories under `root`, for the credentials `user:token`.
    pub fn start(root: &Path, user: &str, token: &str) -> HttpGitServer {
        use base64::Engine as _;
        use std::io::{BufRead, BufReader, Read, Write};

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (root, seen_by, stopped) = (root.to_owned(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.is_empty() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap_or("GET").to_owned(),
                    parts.next().unwrap_or("/").to_owned(),
                );
                let mut headers = Vec::new();
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end().to_owned();
                    if header.is_empty() {
                        break;
                    }
                    headers.push(header);
                }
                seen_by
                    .lock()
                    .unwrap()
                    .push(format!("{method} {target}\n{}", headers.join("\n")));
                let get = |name: &str| {
                    headers.iter().find_map(|h| {
                        let (k, v) = h.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                    })
                };
                let mut out = stream;
                if get("authorization").as_deref() != Some(expected.as_str()) {
                    let _ = out.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let length: usize = get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let (path, query) = target.split_once('?').unwrap_or((&target, ""));
                let mut cgi = Command::new("git")
                    .arg("http-backend")
                    .env("GIT_PROJECT_ROOT", &root)
                    .env("GIT_HTTP_EXPORT_ALL", "1")
                    .env("REQUEST_METHOD", &method)
                    .env("PATH_INFO", path)
                    .env("QUERY_STRING", query)
                    .env("CONTENT_TYPE", get("content-type").unwrap_or_default())
                    .env("CONTENT_LENGTH", length.to_string())
                    .env("GIT_PROTOCOL", get("git-protocol").unwrap_or_default())
                    .env("REMOTE_USER", "test")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("git http-backend runs");
                cgi.stdin.take().unwrap().write_all(&body).unwrap();
                let output = cgi.wait_with_output().unwrap().stdout;
                let split = output
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|i| (i, 4))
                    .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
                    .expect("CGI headers");
                let head = String::from_utf8_lossy(&output[..split.0]).to_string();
                let rest = &output[split.0 + split.1..];
                let status = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Status: "))
                    .unwrap_or("200 OK")
                    .to_owned();
                let headers: Vec<&str> =
                    head.lines().filter(|l| !l.starts_with("Status:")).collect();
                let response = format!(
                    "HTTP/1.1 {status}\r\n{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    headers.join("\r\n"),
                    rest.len()
                );
                let _ = out.write_all(response.as_bytes());
                let _ = out.write_all(rest);
            }
        });
        HttpGitServer { port, seen, stop }
    }

    /// The clone URL of `repo` (e.g. `origin.git`), without credentials.
    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A forge's status API on loopback that records every call; its first answer is a 500, to
/// prove that a failed report is tried again.
pub struct StatusReceiver {
    pub port: u16,
    pub calls: std::sync::Arc<std::sync::Mutex<Vec<(String, String, serde_json::Value)>>>,
}

impl StatusReceiver {
    pub fn start() -> StatusReceiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = calls.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let (mut length, mut authorization) = (0usize, String::new());
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "authorization" => authorization = value.trim().to_owned(),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let status = if n == 0 {
                    "500 Internal Server Error"
                } else {
                    "201 Created"
                };
                if n > 0 {
                    recorded.lock().unwrap().push((
                        line.trim().to_owned(),
                        authorization,
                        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                    ));
                }
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    )
                    .as_bytes(),
                );
            }
        });
        StatusReceiver { port, calls }
    }
}
