//! The pod's entrypoint with real processes: requests in on a pipe, the framed log out.

use std::io::Write as _;
use std::time::Duration;

use super::*;
use crate::kube::protocol::{Decoder, Frame, step_outputs};

const TOKEN: &str = "b6f1e0c2d9a84f7e8c3b5a2d1e0f9c8b";

/// A log the test reads while the entrypoint writes it.
#[derive(Clone, Default)]
struct SharedLog(Arc<Mutex<Vec<u8>>>);

impl Write for SharedLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Pod {
    requests: Option<io::PipeWriter>,
    log: SharedLog,
    entrypoint: Option<thread::JoinHandle<Result<(), EntrypointError>>>,
    _dirs: tempfile::TempDir,
    workspace: PathBuf,
}

impl Pod {
    fn start(wait_tcp: Vec<u16>, ready_timeout: Duration) -> Pod {
        let dirs = tempfile::tempdir().expect("temp dir");
        let workspace = dirs.path().join("workspace");
        let secrets = dirs.path().join("secrets");
        std::fs::create_dir_all(workspace.join("src")).expect("workspace");
        std::fs::create_dir_all(&secrets).expect("secrets");
        std::fs::write(secrets.join(TOKEN_KEY), format!("{TOKEN}\n")).expect("token");
        std::fs::write(secrets.join("API_TOKEN"), "s3cr3t").expect("secret");
        let config = EntrypointConfig {
            workspace: workspace.clone(),
            secrets,
            wait_tcp,
            ready_timeout,
        };
        let (reader, writer) = io::pipe().expect("pipe");
        let log = SharedLog::default();
        let out = log.clone();
        let entrypoint = thread::spawn(move || run(&config, reader, out));
        Pod {
            requests: Some(writer),
            log,
            entrypoint: Some(entrypoint),
            _dirs: dirs,
            workspace,
        }
    }

    fn send(&mut self, request: &Request) {
        let mut line = serde_json::to_vec(request).expect("json");
        line.push(b'\n');
        let requests = self.requests.as_mut().expect("requests open");
        requests.write_all(&line).expect("send a request");
    }

    fn frames(&self) -> Vec<Frame> {
        let log = self.log.0.lock().expect("log").clone();
        let mut decoder = Decoder::new(TOKEN);
        let mut frames = decoder.feed(&log);
        frames.extend(decoder.finish());
        frames
    }

    /// Waits until the log holds `n` markers; fails as likely deadlocked after 20 s.
    fn markers(&self, n: usize) -> Vec<Marker> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let markers: Vec<Marker> = self
                .frames()
                .into_iter()
                .filter_map(|frame| match frame {
                    Frame::Marker(marker) => Some(marker),
                    Frame::Output(_) => None,
                })
                .collect();
            if markers.len() >= n {
                return markers;
            }
            assert!(
                Instant::now() < deadline,
                "likely deadlocked: {} of {n} markers in {:?}",
                markers.len(),
                String::from_utf8_lossy(&self.log.0.lock().expect("log"))
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The output of step `index`, attempt 1, so far.
    fn output_of(&self, index: u32) -> Vec<u8> {
        step_outputs(self.frames())
            .into_iter()
            .find(|(step, _)| *step == (index, 1))
            .map(|(_, output)| output)
            .unwrap_or_default()
    }

    /// Closes the requests and waits for the entrypoint to end.
    fn finish(mut self) -> Result<(), EntrypointError> {
        drop(self.requests.take());
        self.entrypoint
            .take()
            .expect("running")
            .join()
            .expect("no panic")
    }
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

fn end(index: u32, code: i32) -> Marker {
    Marker::end(index, 1, StepExit::code(code))
}

#[test]
fn steps_run_one_after_the_other_in_the_workspace_with_their_output_and_exit() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    assert_eq!(pod.markers(1), [Marker::Ready]);
    let mut first = step(
        0,
        "echo one; echo two >&2; printf 'no newline'; echo made > file",
    );
    first.env = BTreeMap::from([
        ("A".into(), EnvValue::Value("a value".into())),
        ("API_TOKEN".into(), EnvValue::Secret("API_TOKEN".into())),
    ]);
    pod.send(&Request::Run(first));
    let mut second = step(
        1,
        "cat ../file; echo \"$A $API_TOKEN ${KUBERNETES_SERVICE_HOST-none}\"; exit 3",
    );
    second.working_dir = Some("src".into());
    second.env = BTreeMap::from([
        ("A".into(), EnvValue::Value("a value".into())),
        ("API_TOKEN".into(), EnvValue::Secret("API_TOKEN".into())),
    ]);
    pod.send(&Request::Run(second));
    let markers = pod.markers(5);
    assert_eq!(
        markers[1..],
        [
            Marker::Start {
                index: 0,
                attempt: 1
            },
            end(0, 0),
            Marker::Start {
                index: 1,
                attempt: 1
            },
            end(1, 3),
        ]
    );
    assert_eq!(pod.output_of(0), b"one\ntwo\nno newline");
    assert_eq!(pod.output_of(1), b"made\na value s3cr3t none\n");
    assert!(pod.workspace.join("file").is_file());
    pod.finish().expect("ends with its requests");
}

#[test]
fn a_step_asked_twice_runs_once() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    pod.send(&Request::Run(step(0, "echo ran >> count; cat count")));
    pod.send(&Request::Run(step(0, "echo ran >> count; cat count")));
    pod.send(&Request::Run(step(1, "wc -l < count")));
    let markers = pod.markers(5);
    assert_eq!(markers[4], end(1, 0));
    assert_eq!(pod.output_of(1), b"1\n");
    pod.finish().expect("ends");
}

#[test]
fn a_kill_stops_the_step_and_everything_it_started() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    pod.send(&Request::Run(step(
        0,
        "sleep 60 & echo $! > bg; echo started; sleep 60",
    )));
    pod.markers(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    while pod.output_of(0) != b"started\n" {
        assert!(
            Instant::now() < deadline,
            "likely deadlocked: the step never started"
        );
        thread::sleep(Duration::from_millis(10));
    }
    pod.send(&Request::Kill {
        index: 0,
        attempt: 1,
    });
    let markers = pod.markers(3);
    assert_eq!(
        markers[2],
        Marker::end(0, 1, StepExit::signal(libc::SIGKILL))
    );
    let bg: i32 = std::fs::read_to_string(pod.workspace.join("bg"))
        .expect("bg pid")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(bg, 0) } == 0 && !is_zombie(bg);
    assert!(
        !alive,
        "the background process {bg} of a killed step lives on"
    );
    pod.finish().expect("ends");
}

#[test]
fn a_process_that_left_the_step_does_not_hold_its_end() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    let started = Instant::now();
    pod.send(&Request::Run(step(
        0,
        "setsid sleep 30 & echo $! > escaped; echo done",
    )));
    pod.send(&Request::Run(step(1, "echo next")));
    let markers = pod.markers(5);
    assert_eq!(markers[2], end(0, 0));
    assert_eq!(markers[4], end(1, 0));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the step waited for a process that left it"
    );
    assert_eq!(pod.output_of(0), b"done\n");
    assert_eq!(pod.output_of(1), b"next\n");
    let escaped: i32 = std::fs::read_to_string(pod.workspace.join("escaped"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: a plain signal to the process the step started.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
    pod.finish().expect("ends");
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

#[test]
fn a_step_killed_before_it_started_never_runs() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    pod.send(&Request::Kill {
        index: 0,
        attempt: 1,
    });
    pod.send(&Request::Run(step(0, "echo ran > ran")));
    pod.send(&Request::Run(step(1, "ls")));
    let markers = pod.markers(5);
    assert_eq!(
        markers[2],
        Marker::end(0, 1, StepExit::signal(libc::SIGKILL))
    );
    assert_eq!(markers[4], end(1, 0));
    assert!(!pod.workspace.join("ran").exists());
    pod.finish().expect("ends");
}

#[test]
fn a_step_that_cannot_start_is_refused_and_the_next_one_runs() {
    let mut pod = Pod::start(Vec::new(), Duration::from_secs(1));
    let mut missing_dir = step(0, "true");
    missing_dir.working_dir = Some("nowhere".into());
    pod.send(&Request::Run(missing_dir));
    let mut climbing = step(1, "true");
    climbing.working_dir = Some("../..".into());
    pod.send(&Request::Run(climbing));
    let mut no_shell = step(2, "true");
    no_shell.shell = vec!["/no/such/shell".into()];
    pod.send(&Request::Run(no_shell));
    let mut unknown_key = step(3, "true");
    unknown_key.env = BTreeMap::from([("X".into(), EnvValue::Secret("../token".into()))]);
    pod.send(&Request::Run(unknown_key));
    pod.send(&Request::Run(step(4, "echo fine")));
    let markers = pod.markers(8);
    let reasons: Vec<String> = markers
        .iter()
        .filter_map(|marker| match marker {
            Marker::Refused { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{markers:?}");
    assert!(
        reasons[0].contains("`nowhere` does not exist"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("`..` is not allowed"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("cannot run the shell `/no/such/shell`"),
        "{}",
        reasons[2]
    );
    assert!(
        reasons[3].contains("not a key of the pod's Secret"),
        "{}",
        reasons[3]
    );
    assert_eq!(markers[7], end(4, 0));
    pod.finish().expect("ends");
}

/// A port of `localhost` that nothing listens on (it was free a moment ago).
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    probe.local_addr().expect("addr").port()
}

#[test]
fn the_first_step_waits_for_the_services_to_listen() {
    let port = free_port();
    let pod = Pod::start(vec![port], Duration::from_secs(20));
    thread::sleep(Duration::from_millis(300));
    assert!(pod.frames().is_empty(), "ready before the service listens");
    let _service = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).expect("listen");
    assert_eq!(pod.markers(1), [Marker::Ready]);
    pod.finish().expect("ends");
}

#[test]
fn a_service_that_never_listens_stops_the_entrypoint_with_its_port() {
    let port = free_port();
    let pod = Pod::start(vec![port], Duration::from_millis(300));
    let err = pod.finish().expect_err("not ready");
    assert!(
        matches!(&err, EntrypointError::ServicesNotReady { ports, .. } if *ports == [port]),
        "{err}"
    );
}

#[test]
fn the_oom_kill_count_is_read_from_either_cgroup_version() {
    let v2 = "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\noom_group_kill 0\n";
    assert_eq!(oom_kill_count(v2), Some(2));
    let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
    assert_eq!(oom_kill_count(v1), Some(7));
    assert_eq!(oom_kill_count("nothing"), None);
}
