//! `hodei pod-steps`, the entrypoint of a job's pod, as a pod runs it: copied by `install`,
//! then started as the first process of a container of a Debian image on the real Docker
//! engine, under a non-root user and a memory limit, taking its requests on its standard input.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hodei_adapters::kube::{
    Decoder, EnvValue, Frame, Marker, Request, RunStep, TOKEN_KEY, step_outputs,
};

use super::*;

/// The job image: the Debian image `scripts/images` builds (glibc, coreutils).
const IMAGE: &str = "debian:bookworm";
const TOKEN: &str = "5e4d3c2b1a0f9e8d7c6b5a4938271605";

/// Removes the container when the test ends, passed or not.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn request(step: RunStep) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Request::Run(step)).expect("json");
    line.push(b'\n');
    line
}

fn step(index: u32, script: &str) -> RunStep {
    RunStep {
        index,
        attempt: 1,
        shell: vec!["/bin/sh".into(), "-c".into()],
        script: script.into(),
        working_dir: None,
        env: BTreeMap::new(),
    }
}

/// The frames of `log` so far.
fn frames(log: &Mutex<Vec<u8>>) -> Vec<Frame> {
    let mut decoder = Decoder::new(TOKEN);
    let mut frames = decoder.feed(&log.lock().expect("log"));
    frames.extend(decoder.finish());
    frames
}

fn markers(log: &Mutex<Vec<u8>>) -> Vec<Marker> {
    frames(log)
        .into_iter()
        .filter_map(|frame| match frame {
            Frame::Marker(marker) => Some(marker),
            Frame::Output(_) => None,
        })
        .collect()
}

#[test]
fn the_pod_entrypoint_runs_steps_in_a_container_and_tells_an_out_of_memory_kill() {
    let dir = scratch("pod-steps");
    // The init container's part: the binary copied where the pod's volume would be.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let installed = run(&["pod-steps", "install", &bin.join("hodei").to_string_lossy()]);
    assert_eq!(code(&installed), 0, "{}", text(&installed.stderr));
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets");
    write(&secrets, TOKEN_KEY, format!("{TOKEN}\n"));
    write(&secrets, "API_TOKEN", "s3cr3t");
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&workspace, std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let name = format!("hodei-kube-test-{}", std::process::id());
    let container = Container(name.clone());
    let mount = |from: &Path, to: &str, mode: &str| format!("{}:{to}:{mode}", from.display());
    let mut child = Command::new("docker")
        .args(["run", "-i", "--rm", "--name", &container.0])
        .args([
            "--user",
            "1000:1000",
            "--memory",
            "96m",
            "--memory-swap",
            "96m",
        ])
        .args(["-v", &mount(&bin, "/hodei/bin", "ro")])
        .args(["-v", &mount(&secrets, "/hodei/secrets", "ro")])
        .args(["-v", &mount(&workspace, "/workspace", "rw")])
        .args(["-w", "/workspace", IMAGE])
        .args([
            "/hodei/bin/hodei",
            "pod-steps",
            "run",
            "--workspace",
            "/workspace",
        ])
        .args(["--secrets", "/hodei/secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the docker command runs: this test needs the Docker engine");
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = Arc::clone(&log);
        let mut stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut buf = [0; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock().expect("log").extend_from_slice(&buf[..n]);
            }
        })
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut first = step(0, "id -u; echo \"token=$API_TOKEN\"; echo kept > file");
    first.env = BTreeMap::from([("API_TOKEN".into(), EnvValue::Secret("API_TOKEN".into()))]);
    stdin.write_all(&request(first)).expect("send");
    // GNU tail keeps a line that never ends in memory: past the limit, the kernel kills it.
    let hungry = step(1, "head -c 400000000 /dev/zero | tail -n 1 > /dev/null");
    stdin.write_all(&request(hungry)).expect("send");
    stdin
        .write_all(&request(step(2, "cat file")))
        .expect("send");

    let deadline = Instant::now() + Duration::from_secs(120);
    while markers(&log).len() < 7 {
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: {:?}",
            String::from_utf8_lossy(&log.lock().expect("log"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stdin);
    let status = child.wait().expect("the container ends");
    reader.join().expect("reader");
    assert!(
        status.success(),
        "the entrypoint ends with its requests: {status}"
    );
    drop(container);

    let markers = markers(&log);
    assert_eq!(markers[0], Marker::Ready);
    let ends: Vec<&Marker> = markers
        .iter()
        .filter(|m| matches!(m, Marker::End { .. }))
        .collect();
    assert!(
        matches!(
            ends[0],
            Marker::End {
                index: 0,
                code: Some(0),
                oom_killed: false,
                ..
            }
        ),
        "{ends:?}"
    );
    assert!(
        matches!(
            ends[1],
            Marker::End {
                index: 1,
                code: Some(137),
                oom_killed: true,
                ..
            }
        ),
        "the kernel's kill for memory is told: {ends:?}"
    );
    assert!(
        matches!(
            ends[2],
            Marker::End {
                index: 2,
                code: Some(0),
                oom_killed: false,
                ..
            }
        ),
        "{ends:?}"
    );
    let outputs: Vec<Vec<u8>> = step_outputs(frames(&log))
        .into_iter()
        .map(|(_, output)| output)
        .collect();
    assert_eq!(text(&outputs[0]), "1000\ntoken=s3cr3t\n");
    assert_eq!(text(&outputs[2]), "kept\n");
}
