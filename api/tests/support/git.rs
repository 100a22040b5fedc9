#![allow(dead_code)]
//! A real git server for tests and benchmarks: `git daemon` of Debian's git on loopback, with
//! pushes allowed, a working clone to push from, and the push payload GitHub sends.

use std::net::TcpListener;
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
        let _ = self.daemon.kill();
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
