//! The entrypoint's protocol: requests and the framing of its output.

use hodei_domain::model::Env;
use hodei_domain::state::Attempt;
use proptest::prelude::*;

use super::*;

const TOKEN: &str = "3f9c1d0e8b7a6f5e4d3c2b1a09f8e7d6";

fn step() -> StepSpec {
    StepSpec {
        index: 2,
        attempt: Attempt::new(3).expect("attempt"),
        script: "echo \"$TOKEN\"".into(),
        shell: vec!["/bin/sh".into(), "-e".into(), "-c".into()],
        env: Env::from([
            ("A".into(), "1".into()),
            ("TOKEN".into(), "s3cr3t".into()),
            ("OTHER".into(), "not the secret".into()),
        ]),
        working_dir: Some("src".into()),
    }
}

#[test]
fn secret_values_are_sent_as_references_to_the_secret() {
    let secrets = BTreeMap::from([
        ("TOKEN".to_owned(), "s3cr3t".to_owned()),
        // Same name as a variable with another value (a step's own `env` won): sent as is.
        ("OTHER".to_owned(), "the secret".to_owned()),
    ]);
    let request = Request::Run(run_request(&step(), &secrets));
    let line = serde_json::to_string(&request).expect("json");
    assert!(
        !line.contains("s3cr3t"),
        "a secret value in a request: {line}"
    );
    assert_eq!(
        line,
        r#"{"run":{"index":2,"attempt":3,"shell":["/bin/sh","-e","-c"],"script":"echo \"$TOKEN\"","working_dir":"src","env":{"A":{"value":"1"},"OTHER":{"value":"not the secret"},"TOKEN":{"secret":"TOKEN"}}}}"#
    );
    assert_eq!(
        serde_json::from_str::<Request>(&line).expect("parses back"),
        request
    );
}

#[test]
fn a_request_with_an_unknown_field_is_refused() {
    let line = r#"{"kill":{"index":1,"attempt":1,"force":true}}"#;
    assert!(serde_json::from_str::<Request>(line).is_err());
}

#[test]
fn markers_are_lines_of_their_own_with_the_token() {
    let line = Marker::end(1, 2, StepExit::code(3)).line(TOKEN);
    assert_eq!(
        String::from_utf8(line).expect("utf-8"),
        format!(
            "\n{TOKEN} {{\"end\":{{\"index\":1,\"attempt\":2,\"code\":3,\"signal\":null,\"oom_killed\":false}}}}\n"
        )
    );
}

fn log_of(steps: &[(Vec<u8>, StepExit)]) -> Vec<u8> {
    let mut log = Marker::Ready.line(TOKEN);
    for (i, (output, exit)) in steps.iter().enumerate() {
        let index = u32::try_from(i).expect("index");
        log.extend(Marker::Start { index, attempt: 1 }.line(TOKEN));
        log.extend(output);
        log.extend(Marker::end(index, 1, *exit).line(TOKEN));
    }
    log
}

/// Decodes `log` fed in chunks ending at `cuts`: the output between markers, and the markers.
fn decode(log: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<Marker>) {
    let mut decoder = Decoder::new(TOKEN);
    let mut frames = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&log.len())) {
        let cut = cut.clamp(from, log.len());
        frames.extend(decoder.feed(&log[from..cut]));
        from = cut;
    }
    frames.extend(decoder.finish());
    let mut outputs = vec![Vec::new()];
    let mut markers = Vec::new();
    for frame in frames {
        match frame {
            Frame::Output(bytes) => outputs.last_mut().expect("one").extend(bytes),
            Frame::Marker(marker) => {
                markers.push(marker);
                outputs.push(Vec::new());
            }
        }
    }
    (outputs, markers)
}

#[test]
fn output_without_a_final_newline_keeps_its_last_byte() {
    let log = log_of(&[
        (b"no newline".to_vec(), StepExit::code(0)),
        (b"two\nlines\n".to_vec(), StepExit::code(1)),
        (b"\n\n".to_vec(), StepExit::signal(9)),
    ]);
    let (outputs, markers) = decode(&log, &[]);
    assert_eq!(
        outputs,
        [
            &b""[..],
            b"",
            b"no newline",
            b"",
            b"two\nlines\n",
            b"",
            b"\n\n",
            b""
        ]
    );
    assert_eq!(markers.len(), 7);
    assert_eq!(markers[0], Marker::Ready);
    assert_eq!(markers[6], Marker::end(2, 1, StepExit::signal(9)));
}

#[test]
fn output_that_looks_like_a_marker_without_the_token_stays_output() {
    let fake = format!("x\n{} {{\"ready\":null}}\nand 0123 {{}}\n", &TOKEN[..8]);
    let log = log_of(&[(fake.clone().into_bytes(), StepExit::code(0))]);
    let (outputs, _) = decode(&log, &[]);
    assert_eq!(outputs[2], fake.into_bytes());
}

#[test]
fn a_token_line_that_is_not_a_marker_stays_output() {
    let odd = format!("\n{TOKEN} not json\nafter");
    let log = log_of(&[(odd.clone().into_bytes(), StepExit::code(0))]);
    let (outputs, markers) = decode(&log, &[]);
    assert_eq!(outputs[2], odd.into_bytes());
    assert_eq!(markers.len(), 3);
}

#[test]
fn a_log_cut_short_gives_back_what_it_held() {
    let mut log = log_of(&[(b"partial".to_vec(), StepExit::code(0))]);
    log.truncate(log.len() - 20);
    let (outputs, markers) = decode(&log, &[]);
    assert_eq!(markers.len(), 2, "the end marker was cut");
    assert!(outputs[2].starts_with(b"partial\n"), "{:?}", outputs[2]);
}

proptest! {
    #[test]
    fn any_output_cut_anywhere_decodes_to_itself(
        steps in proptest::collection::vec(
            (proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), Just(b'3'), any::<u8>()], 0..200), 0..255i32),
            0..5,
        ),
        cuts in proptest::collection::vec(0..2000usize, 0..12),
    ) {
        let steps: Vec<(Vec<u8>, StepExit)> =
            steps.into_iter().map(|(out, code)| (out, StepExit::code(code))).collect();
        let log = log_of(&steps);
        let mut cuts = cuts;
        cuts.sort_unstable();
        let (outputs, markers) = decode(&log, &cuts);
        prop_assert_eq!(markers.len(), 1 + 2 * steps.len());
        for (i, (output, exit)) in steps.iter().enumerate() {
            prop_assert_eq!(&outputs[2 + 2 * i], output);
            let index = u32::try_from(i).expect("index");
            prop_assert_eq!(&markers[2 + 2 * i], &Marker::end(index, 1, *exit));
        }
    }
}
