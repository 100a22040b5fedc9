//! A job's checkout from the mirror against `git clone --local` of the same mirror, measured in
//! the same run (`cargo bench -p hodei-adapters --bench checkout`; figures in
//! `docs/performance.md`).
//!
//! The repository has `HODEI_CHECKOUT_FILES` files (default 10,000, 40 to 400 bytes each, in
//! 100 directories) over three commits. Each round fills a new workspace each way (objects
//! hard-linked, objects copied as for containers and `run_as`, and `git clone --local`), in
//! turn, the first one changing round by round, so that a slower moment of the disk hits each;
//! the medians and their ratios are printed.
//! `HODEI_CHECKOUT_ROUNDS` (default 15) sets the rounds.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hodei_adapters::git::{Objects, check_out};
use hodei_domain::ports::Checkout;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    // `cargo test --benches` runs this without `--bench`: a short pass that checks it works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let files = env_or("HODEI_CHECKOUT_FILES", if quick { 200 } else { 10_000 });
    let rounds = env_or("HODEI_CHECKOUT_ROUNDS", if quick { 2 } else { 15 });
    let dir = tempfile::tempdir().expect("a scratch directory");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "--quiet", "-b", "main"]);
    for commit in 0..3 {
        for i in 0..files {
            let sub = work.join(format!("d{:02}", i % 100));
            std::fs::create_dir_all(&sub).unwrap();
            let text = format!("file {i} of commit {commit}\n").repeat(1 + i % 10);
            std::fs::write(sub.join(format!("f{i:05}.txt")), text).unwrap();
        }
        git(&work, &["add", "--all"]);
        git(
            &work,
            &["commit", "--quiet", "-m", &format!("commit {commit}")],
        );
    }
    let commit = git(&work, &["rev-parse", "HEAD"]);
    let mirror = dir.path().join("mirror.git");
    git(
        dir.path(),
        &[
            "clone",
            "--quiet",
            "--bare",
            &work.display().to_string(),
            &mirror.display().to_string(),
        ],
    );
    let checkout = Checkout {
        repository: "bench".into(),
        commit: commit.clone(),
        depth: Some(1),
        submodules: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // Each way of the three, one after the other in each round, the first one turning round
    // by round: the one that follows the previous round's removals pays for them.
    let ways = [Some(Objects::Linked), Some(Objects::Copied), None];
    let mut times: [Vec<Duration>; 3] = Default::default();
    for round in 0..rounds {
        for turn in 0..ways.len() {
            let which = (round + turn) % ways.len();
            let dest = dir.path().join(format!("way{which}-{round}"));
            let started = Instant::now();
            match ways[which] {
                Some(objects) => {
                    std::fs::create_dir_all(&dest).unwrap();
                    runtime
                        .block_on(check_out(&mirror, &checkout, &dest, None, objects))
                        .expect("the checkout works");
                }
                None => {
                    git(
                        dir.path(),
                        &[
                            "clone",
                            "--quiet",
                            "--local",
                            &mirror.display().to_string(),
                            &dest.display().to_string(),
                        ],
                    );
                }
            }
            times[which].push(started.elapsed());
            assert_eq!(git(&dest, &["rev-parse", "HEAD"]), commit);
        }
        for which in 0..ways.len() {
            std::fs::remove_dir_all(dir.path().join(format!("way{which}-{round}"))).unwrap();
        }
    }
    let [hodei, copied, local] = &mut times;
    let (h, c, l) = (median(hodei), median(copied), median(local));
    println!(
        "checkout of {files} files at depth 1 from the mirror: median {:.1} ms (objects copied, for containers and run_as: {:.1} ms); git clone --local of the same mirror: median {:.1} ms; ratios {:.2} and {:.2} ({rounds} rounds each)",
        h.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e3,
        l.as_secs_f64() * 1e3,
        h.as_secs_f64() / l.as_secs_f64(),
        c.as_secs_f64() / l.as_secs_f64()
    );
}
