//! Scheduling policy benchmarks: [`Cluster::place`] with 1,000 workers and 100,000 queued jobs,
//! no store, no actor.
//!
//! - `scheduler/fill`: an idle cluster and the full queue; one `place(now, usize::MAX)` fills
//!   every worker. Throughput is in placements.
//! - `scheduler/steady`: the cluster full, the queue at 100,000: each measured element is one
//!   placement decision: report the oldest running job finished, `place(now, 1)` (again with
//!   the next finish when the freed room fits no queued job). The queue is topped up with new
//!   jobs between timed batches of 1,000 decisions. Time moves 1 ms per step.
//! - `scheduler/steady_with_enqueue`: the same with a new job queued after each finish, inside
//!   the measurement: the whole loop of the Scheduler actor under load.
//!
//! Before the benchmarks, the binary prints the resident memory the 100,000 queued jobs take
//! (from `/proc/self/status`, Linux only).
//!
//! Run with `cargo bench --bench scheduler`; figures in `docs/performance.md`. The inputs come
//! from a fixed seed with no dependency on `rand`, so every run measures the same cluster.
//!
//! The shape aims at a large real installation: 11 worker label sets (mostly Linux, some GPU,
//! Windows and macOS), 2 to 8 slots with matching CPU and memory (a fifth of the workers do not
//! count CPU and memory); jobs from 200 projects (a few large ones), each project using 3 of 12
//! `runs_on` sets, 40% without a resource request, 2% needing a whole 16-core worker, 20% with a
//! raised priority, 1% in one of 50 concurrency groups, 0.5% needing a label no worker has;
//! queued over the hour before `now`, so most of them starve and reservations are in play.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hodei_domain::ids::{JobId, RunId, Timestamp, WorkerId};
use hodei_domain::model::{Cpu, Label, Memory, Name, Resources};
use hodei_domain::schedule::{Cluster, Policy, QueuedJob, Worker, WorkerState};

const WORKERS: usize = 1_000;
const QUEUED: usize = 100_000;
const SEED: u64 = 0x5EED_0F5C_4ED0_1E00;
/// The jobs are queued over the hour before `NOW`.
const NOW: Timestamp = Timestamp(3_600_000);

/// splitmix64: a fixed, portable sequence of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// The index of a weight picked with probability proportional to it.
    fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut pick = self.below(weights.iter().sum());
        for (index, &weight) in weights.iter().enumerate() {
            if pick < weight {
                return index;
            }
            pick -= weight;
        }
        unreachable!("the pick is below the sum of the weights")
    }
}

fn labels(names: &[&str]) -> Vec<Label> {
    names.iter().map(|name| name.parse().unwrap()).collect()
}

/// Worker label sets and how many workers in a thousand have each.
const WORKER_LABELS: [(&[&str], u64); 11] = [
    (&["linux", "x86_64", "docker"], 400),
    (&["linux", "x86_64"], 150),
    (&["linux", "arm64", "docker"], 100),
    (&["linux", "arm64"], 50),
    (&["linux", "x86_64", "docker", "large"], 80),
    (&["linux", "x86_64", "gpu"], 40),
    (&["linux", "x86_64", "gpu", "docker"], 30),
    (&["windows", "x86_64"], 60),
    (&["macos", "arm64"], 50),
    (&["macos", "x86_64"], 20),
    (&["linux", "x86_64", "docker", "ssd"], 20),
];

/// The `runs_on` sets jobs use; the last one no worker has.
const RUNS_ON: [&[&str]; 12] = [
    &[],
    &["linux"],
    &["linux", "docker"],
    &["linux", "x86_64"],
    &["linux", "arm64"],
    &["linux", "docker", "large"],
    &["linux", "gpu"],
    &["windows"],
    &["macos"],
    &["macos", "arm64"],
    &["linux", "arm64", "docker"],
    &["fpga"],
];

fn worker(rng: &mut Rng, index: usize) -> Worker {
    let (names, _) = WORKER_LABELS[rng.weighted(&WORKER_LABELS.map(|(_, w)| w))];
    let (slots, cores, gib) = [(2, 4, 8), (4, 8, 16), (8, 16, 32)][rng.weighted(&[3, 5, 2])];
    let counted = rng.below(5) != 0;
    Worker {
        id: WorkerId(format!("worker-{index:04}")),
        labels: labels(names).into_iter().collect(),
        slots,
        capacity: Resources {
            cpu: counted.then(|| Cpu::from_millis(cores * 1000)).flatten(),
            memory: counted.then(|| Memory::from_bytes(gib << 30)).flatten(),
        },
        state: WorkerState::Ready,
    }
}

/// The jobs' fixed attributes by project: names and the three `runs_on` sets each uses.
struct Projects {
    names: Vec<Name>,
    runs_on: Vec<[Vec<Label>; 3]>,
    groups: Vec<Name>,
}

impl Projects {
    fn new(rng: &mut Rng) -> Projects {
        let names = (0..200)
            .map(|p| format!("project-{p:03}").parse().unwrap())
            .collect();
        let runs_on = (0..200)
            .map(|_| {
                // Mostly the common Linux sets; `fpga` only through the 0.5% below.
                std::array::from_fn(|_| {
                    labels(RUNS_ON[rng.weighted(&[3, 4, 6, 3, 2, 1, 1, 1, 1, 1, 1, 0])])
                })
            })
            .collect();
        let groups = (0..50)
            .map(|g| format!("deploy-{g:02}").parse().unwrap())
            .collect();
        Projects {
            names,
            runs_on,
            groups,
        }
    }

    fn job(&self, rng: &mut Rng, seq: u64, queued_at: Timestamp) -> QueuedJob {
        // A fifth of the projects hold half of the jobs.
        let project = if rng.below(2) == 0 {
            rng.below(40)
        } else {
            rng.below(200)
        } as usize;
        let runs_on = if rng.below(200) == 0 {
            labels(RUNS_ON[11])
        } else {
            self.runs_on[project][rng.below(3) as usize].clone()
        };
        let (cores, gib) =
            [(0, 0), (1, 2), (2, 4), (4, 8), (16, 32)][rng.weighted(&[40, 35, 15, 8, 2])];
        QueuedJob {
            job: JobId(seq),
            run: RunId(seq / 8),
            project: self.names[project].clone(),
            runs_on,
            resources: Resources {
                cpu: Cpu::from_millis(cores * 1000),
                memory: Memory::from_bytes(gib << 30),
            },
            priority: [0, 10, 50][rng.weighted(&[80, 15, 5])],
            concurrency: (rng.below(100) == 0).then(|| self.groups[rng.below(50) as usize].clone()),
            seq,
            queued_at,
        }
    }
}

/// Everything a benchmark needs: the cluster with its workers and the full queue, and the
/// generator for the jobs that arrive later.
struct Input {
    cluster: Cluster,
    projects: Projects,
    rng: Rng,
}

fn workers_only(rng: &mut Rng) -> Cluster {
    let mut cluster = Cluster::new(Policy::default());
    for index in 0..WORKERS {
        cluster.add_worker(worker(rng, index)).unwrap();
    }
    cluster
}

fn enqueue_all(cluster: &mut Cluster, projects: &Projects, rng: &mut Rng) {
    for seq in 0..QUEUED as u64 {
        // Spread evenly over the hour before `NOW`.
        let queued_at = Timestamp(seq as i64 * NOW.0 / QUEUED as i64);
        cluster.enqueue(projects.job(rng, seq, queued_at)).unwrap();
    }
}

fn input() -> Input {
    let mut rng = Rng(SEED);
    let mut cluster = workers_only(&mut rng);
    let projects = Projects::new(&mut rng);
    enqueue_all(&mut cluster, &projects, &mut rng);
    Input {
        cluster,
        projects,
        rng,
    }
}

/// Resident memory of this process in bytes, if the platform tells it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Prints what the queue costs in memory: resident memory after registering the workers and
/// after queuing the 100,000 jobs (generated one at a time, so no input list is counted).
fn report_memory() {
    let mut rng = Rng(SEED);
    let before = resident_bytes();
    let mut cluster = workers_only(&mut rng);
    let projects = Projects::new(&mut rng);
    let workers = resident_bytes();
    enqueue_all(&mut cluster, &projects, &mut rng);
    let queued = resident_bytes();
    match (before, workers, queued) {
        (Some(before), Some(workers), Some(queued)) => {
            let jobs = queued.saturating_sub(workers);
            println!(
                "scheduler memory: {WORKERS} workers {:.1} MiB; {QUEUED} queued jobs {:.1} MiB \
                 ({} bytes per queued job), resident set growth",
                workers.saturating_sub(before) as f64 / (1 << 20) as f64,
                jobs as f64 / (1 << 20) as f64,
                jobs / QUEUED as u64,
            );
        }
        _ => println!("scheduler memory: not measured (no /proc/self/status)"),
    }
    black_box(&cluster);
}

fn fill(c: &mut Criterion, input: &Input) {
    let placements = input.cluster.clone().place(NOW, usize::MAX).len();
    println!(
        "scheduler/fill: {placements} placements fill {WORKERS} workers from {QUEUED} queued jobs"
    );
    let mut group = c.benchmark_group("scheduler");
    group
        .throughput(Throughput::Elements(placements as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("fill", |b| {
        b.iter_batched(
            || input.cluster.clone(),
            |mut cluster| {
                let placed = cluster.place(black_box(NOW), usize::MAX);
                assert_eq!(placed.len(), placements);
                // Dropped after the measurement, not inside it.
                (cluster, placed)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The full cluster of the steady state, with its running jobs oldest first.
struct Steady {
    cluster: Cluster,
    running: VecDeque<JobId>,
    projects: Projects,
    rng: Rng,
    now: Timestamp,
    seq: u64,
    /// Jobs finished and not yet replaced by a new queued job.
    owed: usize,
    finishes: u64,
    decisions: u64,
}

impl Steady {
    fn new(input: Input) -> Steady {
        let Input {
            mut cluster,
            projects,
            rng,
        } = input;
        let running = cluster
            .place(NOW, usize::MAX)
            .into_iter()
            .map(|p| p.job)
            .collect();
        Steady {
            cluster,
            running,
            projects,
            rng,
            now: NOW,
            seq: QUEUED as u64,
            owed: 0,
            finishes: 0,
            decisions: 0,
        }
    }

    /// Queues a new job, as if just submitted.
    fn enqueue(&mut self) {
        let job = self.projects.job(&mut self.rng, self.seq, self.now);
        self.seq += 1;
        self.cluster.enqueue(job).unwrap();
    }

    /// One placement decision: reports the oldest running job finished and places one job,
    /// again until one is placed (the freed room may fit no queued job). With `enqueue`, a new
    /// job is queued after each finish; without, it is owed, for `repay` to queue outside the
    /// measurement.
    fn decide(&mut self, enqueue: bool) {
        loop {
            self.now = Timestamp(self.now.0 + 1);
            if let Some(oldest) = self.running.pop_front() {
                self.cluster.finished(oldest).unwrap();
                self.finishes += 1;
            }
            if enqueue {
                self.enqueue();
            } else {
                self.owed += 1;
            }
            if let Some(placement) = self.cluster.place(self.now, 1).pop() {
                self.running.push_back(placement.job);
                self.decisions += 1;
                return;
            }
        }
    }

    /// Queues the jobs owed, so that the queue stays at 100,000.
    fn repay(&mut self) {
        for _ in 0..std::mem::take(&mut self.owed) {
            self.enqueue();
        }
    }
}

fn steady(c: &mut Criterion, input: Input) {
    let mut steady = Steady::new(input);
    let mut group = c.benchmark_group("scheduler");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(50)
        .measurement_time(Duration::from_secs(20));
    // finish + place; the queue is topped up between timed batches of 1,000 decisions.
    group.bench_function("steady", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let batch = (iters - done).min(1_000);
                let start = Instant::now();
                for _ in 0..batch {
                    steady.decide(false);
                }
                elapsed += start.elapsed();
                steady.repay();
                done += batch;
            }
            elapsed
        })
    });
    // finish + enqueue + place: the whole loop of a Scheduler actor under load.
    group.bench_function("steady_with_enqueue", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                steady.decide(true);
            }
            start.elapsed()
        })
    });
    group.finish();
    println!(
        "scheduler/steady: {} decisions after {} finishes; {} queued, {} placed at the end",
        steady.decisions,
        steady.finishes,
        steady.cluster.queued_len(),
        steady.cluster.placed_len(),
    );
}

fn benches(c: &mut Criterion) {
    report_memory();
    let input = input();
    fill(c, &input);
    steady(c, input);
}

criterion_group!(scheduler, benches);
criterion_main!(scheduler);
