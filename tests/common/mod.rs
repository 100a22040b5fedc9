//! What the end-to-end tests of `hodei server` share: the real binary on a free loopback port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `hodei server` and where it listens.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts the server on a free loopback port with its data in `data`.
    pub fn start(data: &Path) -> Server {
        Server::start_with(data, &[])
    }

    pub fn start_with(data: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_logging(data, env, Stdio::null())
    }

    /// Starts the server with its standard error (its log) going to `stderr`.
    pub fn start_logging(data: &Path, env: &[(&str, &str)], stderr: Stdio) -> Server {
        Server::start_args(data, &[], env, stderr)
    }

    /// Starts the server with more flags (`--database URL`).
    pub fn start_args(data: &Path, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
        Server::start_saying(data, args, env, stderr, "")
    }

    /// Starts a server and waits until it says it listens with `said` in that line (a replica
    /// on PostgreSQL says it once as a follower, and again when it leads: "the leader").
    pub fn start_saying(
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
        said: &str,
    ) -> Server {
        Server::start_on("127.0.0.1:0", data, args, env, stderr, said)
    }

    /// Starts a server listening on `listen` (`0.0.0.0:0`: on every address, for containers);
    /// its URL is the loopback one.
    pub fn start_on(
        listen: &str,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stderr: Stdio,
        said: &str,
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hodei"))
            .args(["server", "--listen", listen])
            .args(args)
            .arg("--data")
            .arg(data)
            .envs(env.iter().copied())
            .env_remove("HODEI_FAULT")
            .env_remove("HODEI_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("hodei starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(
                Instant::now() < deadline,
                "the server never said where it listens"
            );
            let line = lines.next().expect("the server printed its URL").unwrap();
            if let Some(rest) = line.strip_prefix("Hodei server listening on ")
                && line.contains(said)
            {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .replace("0.0.0.0", "127.0.0.1");
            }
        };
        // Keep reading its output so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url }
    }

    pub fn kill(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("server-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Hodei's image, built once per test binary from this build's `hodei` (`scripts/hodei-image`),
/// as `hodei-test/hodei:dev-<hash of the binary's path>`: one tag per build directory, so that
/// the tests of several checkouts on one engine never replace each other's image mid-test.
pub fn hodei_image() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let binary = env!("CARGO_BIN_EXE_hodei");
        // FNV-1a of the path.
        let hash = binary.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let tag = format!("hodei-test/hodei:dev-{:012x}", hash & 0xffff_ffff_ffff);
        let status = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/hodei-image"))
            .args(["--binary", binary, "--tag", &tag])
            .status()
            .expect("scripts/hodei-image runs (it needs the Docker engine)");
        assert!(
            status.success(),
            "cannot build Hodei's image: is the Docker engine running?"
        );
        tag
    })
}

/// The busybox image of the Docker tests, imported from Debian's static busybox by
/// [`import_busybox`] when the engine does not have it yet: these machines have no registry.
pub const BUSYBOX: &str = "hodei-test/busybox-run:1";

/// Imports [`BUSYBOX`] unless the engine has it.
pub fn import_busybox() {
    let image = BUSYBOX;
    let known = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the docker client must be installed for the Docker tests");
    if known.success() {
        return;
    }
    let root = scratch("busybox-rootfs");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox"))
        .expect("/bin/busybox: install Debian's busybox-static");
    for applet in [
        "sh", "echo", "cat", "test", "sleep", "mkdir", "httpd", "wget",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | docker import -c 'ENV PATH=/bin' - {image}",
            root.display()
        ))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "cannot import {image}");
}
