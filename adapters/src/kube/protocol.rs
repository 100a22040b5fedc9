//! What the provider and the pod's entrypoint (`hodei pod-steps`) say to each other. Pure: no
//! I/O here, everything is tested below.
//!
//! - **Requests**, from the provider to the entrypoint's standard input, one JSON object a
//!   line ([`Request`]): run a step, or kill one. A step's environment names the variables
//!   whose value is a secret of the job by the key of the pod's Secret that holds it
//!   ([`EnvValue::Secret`]): secret values travel in the Secret only, never in a request or
//!   in the pod's spec.
//! - **Output**, from the entrypoint to its standard output, which is the container's log that
//!   the provider follows through `pods/log`: each step's output exactly as the step wrote it
//!   (stdout and stderr on one pipe), between two marker lines ([`Marker`]). A marker line is
//!   `\n<token> <json>\n`: it always starts with a newline of its own, which is not output,
//!   and `<token>` is a random word of the pod's Secret (key [`TOKEN_KEY`]) that a step's
//!   output does not contain by chance. [`Decoder`] splits a log back into output and markers,
//!   from chunks cut anywhere.

use std::collections::BTreeMap;

use hodei_domain::ports::StepSpec;
use hodei_domain::state::StepExit;

/// The key of the pod's Secret that holds the marker token. It contains a `-`, so no secret of
/// a job (a variable name) can take it.
pub const TOKEN_KEY: &str = "hodei-marker-token";

/// A request to the entrypoint, one JSON line on its standard input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Runs a step once the previous one has ended. A step already run (same index and
    /// attempt) is not run again: a request sent twice (after a dropped attach) runs once.
    Run(RunStep),
    /// Kills the step's processes (its process group), if it runs; otherwise nothing.
    Kill { index: u32, attempt: u32 },
}

/// A step to run, as the entrypoint gets it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStep {
    pub index: u32,
    pub attempt: u32,
    /// The shell's command line; the script is its last argument.
    pub shell: Vec<String>,
    pub script: String,
    /// Relative to the workspace.
    pub working_dir: Option<String>,
    /// The step's variables on top of the container's own environment.
    pub env: BTreeMap<String, EnvValue>,
}

/// The value of one variable of a step.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EnvValue {
    /// The value itself.
    Value(String),
    /// The value of this key of the pod's Secret (a file of the Secret's volume).
    Secret(String),
}

/// The request that runs `step`. A variable whose name and value are those of one of the job's
/// `secrets` (name → value, as the pod's Secret holds them) is sent as a reference to the
/// Secret's key of that name; every other variable as its value.
pub fn run_request(step: &StepSpec, secrets: &BTreeMap<String, String>) -> RunStep {
    let env = step
        .env
        .iter()
        .map(|(name, value)| {
            let value = if secrets.get(name) == Some(value) {
                EnvValue::Secret(name.clone())
            } else {
                EnvValue::Value(value.clone())
            };
            (name.clone(), value)
        })
        .collect();
    RunStep {
        index: step.index,
        attempt: step.attempt.get(),
        shell: step.shell.clone(),
        script: step.script.clone(),
        working_dir: step.working_dir.clone(),
        env,
    }
}

/// A line of the entrypoint's output that is not a step's output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Marker {
    /// The entrypoint is up and reads requests.
    Ready,
    /// The step's output follows.
    Start { index: u32, attempt: u32 },
    /// The step ended; its output is over.
    End {
        index: u32,
        attempt: u32,
        /// The exit code, when the shell exited.
        code: Option<i32>,
        /// The signal, when the shell was killed by one.
        signal: Option<i32>,
        /// Whether the kernel killed a process of the step for memory while it ran.
        oom_killed: bool,
    },
    /// The step could not be started (no such shell, no such working directory), or the
    /// entrypoint lost track of it (its exit cannot be told).
    Refused {
        index: u32,
        attempt: u32,
        reason: String,
    },
}

impl Marker {
    /// The end marker of a step that ended with `exit`.
    pub fn end(index: u32, attempt: u32, exit: StepExit) -> Marker {
        Marker::End {
            index,
            attempt,
            code: exit.code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
        }
    }

    /// The whole marker line: `\n<token> <json>\n`.
    pub fn line(&self, token: &str) -> Vec<u8> {
        let json = serde_json::to_string(self).unwrap_or_else(|_| unreachable_json());
        format!("\n{token} {json}\n").into_bytes()
    }
}

/// Serialising a [`Marker`] cannot fail (strings and numbers only); should it ever, the line
/// still parses as a marker that says so.
fn unreachable_json() -> String {
    r#"{"refused":{"index":0,"attempt":0,"reason":"cannot write a marker"}}"#.to_owned()
}

/// The longest marker line a [`Decoder`] holds back (a refusal's reason included).
const MAX_MARKER: usize = 16 * 1024;

/// A piece of a decoded log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of a step's output (or of the entrypoint's own messages), in order.
    Output(Vec<u8>),
    Marker(Marker),
}

/// The output of each step that `frames` show, in the order the steps started, by index and
/// attempt: what came between a step's start marker and the next marker.
pub fn step_outputs(frames: impl IntoIterator<Item = Frame>) -> Vec<((u32, u32), Vec<u8>)> {
    let mut outputs: Vec<((u32, u32), Vec<u8>)> = Vec::new();
    let mut inside = false;
    for frame in frames {
        match frame {
            Frame::Marker(Marker::Start { index, attempt }) => {
                inside = true;
                outputs.push(((index, attempt), Vec::new()));
            }
            Frame::Marker(_) => inside = false,
            Frame::Output(bytes) => {
                if let (true, Some((_, output))) = (inside, outputs.last_mut()) {
                    output.extend(bytes);
                }
            }
        }
    }
    outputs
}

/// Splits the entrypoint's output back into [`Frame`]s, fed chunks cut anywhere. A line that
/// starts with the token but does not hold a marker is kept as output.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// `\n<token> `: what starts a marker line.
    prefix: Vec<u8>,
    state: State,
    /// The bytes of a possible marker line read so far (from its newline on).
    held: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Plain output.
    Output,
    /// `held` is a proper prefix of `prefix`.
    Prefix,
    /// `held` starts with the whole `prefix`: the marker's JSON runs to the next newline.
    Marker,
}

impl Decoder {
    /// A decoder for the markers of `token`.
    pub fn new(token: &str) -> Decoder {
        Decoder {
            prefix: format!("\n{token} ").into_bytes(),
            state: State::Output,
            held: Vec::new(),
        }
    }

    /// Decodes `chunk`: the frames it completes, in order. Bytes that may start a marker are
    /// held until the next chunk tells.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut output = Vec::new();
        for &byte in chunk {
            match self.state {
                State::Output => {
                    if byte == b'\n' {
                        self.held.push(byte);
                        self.state = State::Prefix;
                    } else {
                        output.push(byte);
                    }
                }
                State::Prefix => {
                    if byte == self.prefix[self.held.len()] {
                        self.held.push(byte);
                        if self.held.len() == self.prefix.len() {
                            self.state = State::Marker;
                        }
                    } else {
                        // Not a marker: what was held is output, and this byte starts over.
                        output.append(&mut self.held);
                        self.state = State::Output;
                        if byte == b'\n' {
                            self.held.push(byte);
                            self.state = State::Prefix;
                        } else {
                            output.push(byte);
                        }
                    }
                }
                State::Marker => {
                    if byte == b'\n' {
                        let json = &self.held[self.prefix.len()..];
                        match serde_json::from_slice::<Marker>(json) {
                            Ok(marker) => {
                                if !output.is_empty() {
                                    frames.push(Frame::Output(std::mem::take(&mut output)));
                                }
                                frames.push(Frame::Marker(marker));
                                self.held.clear();
                                self.state = State::Output;
                            }
                            Err(_) => {
                                output.append(&mut self.held);
                                self.held.push(byte);
                                self.state = State::Prefix;
                            }
                        }
                    } else if self.held.len() >= MAX_MARKER {
                        // Far longer than any marker: output that happens to start like one.
                        output.append(&mut self.held);
                        output.push(byte);
                        self.state = State::Output;
                    } else {
                        self.held.push(byte);
                    }
                }
            }
        }
        if !output.is_empty() {
            frames.push(Frame::Output(output));
        }
        frames
    }

    /// The end of the log: whatever is still held is output.
    pub fn finish(&mut self) -> Option<Frame> {
        self.state = State::Output;
        (!self.held.is_empty()).then(|| Frame::Output(std::mem::take(&mut self.held)))
    }
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
