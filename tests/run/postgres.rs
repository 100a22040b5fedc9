//! Realistic container jobs: a Debian job that talks to a PostgreSQL service by its name, and
//! the examples with `image:` and `services:`, all under `hodei run` on the engine of this
//! machine, with the images `scripts/images` builds from Debian's packages.

use std::process::Command;

use super::{busybox_image, compact, hodei, hodei_containers, run, scratch, text, write};

/// Builds the Debian and PostgreSQL images once (`scripts/images` keeps those the engine has).
fn debian_images() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/images");
        let out = Command::new(script)
            .output()
            .unwrap_or_else(|err| panic!("{script}: {err}"));
        assert!(
            out.status.success(),
            "{script} failed: the Docker tests need its images\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    });
}

#[test]
fn a_debian_job_waits_for_its_postgres_service_and_talks_to_it_by_name() {
    let _engine = busybox_image();
    debian_images();
    let before = hodei_containers();
    let dir = scratch("postgres");
    let file = write(
        &dir,
        "p.yml",
        r#"name: shop
jobs:
  db-test:
    image: hodei-test/debian-psql:bookworm
    pull: never
    services:
      db:
        image: postgres:15
        env: { POSTGRES_USER: ci, POSTGRES_PASSWORD: ci-password, POSTGRES_DB: shop }
        ports: [5432]
    env: { PGHOST: db, PGUSER: ci, PGDATABASE: shop, PGPASSWORD: ci-password }
    steps:
      - name: wait
        run: until pg_isready --quiet; do sleep 0.5; done; echo "db is ready"
      - name: load
        run: psql -v ON_ERROR_STOP=1 --quiet -c 'CREATE TABLE items (n int)' -c 'INSERT INTO items SELECT generate_series(1, 10)'
      - name: query
        run: psql --tuples-only --no-align -c "SELECT current_user || ' sees sum=' || sum(n) FROM items"
"#,
    );
    let out = run(hodei().args(["run", &file]));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("db-test | db is ready"), "{stdout}");
    assert!(stdout.contains("db-test | ci sees sum=55"), "{stdout}");
    assert!(
        stdout.contains("database system is ready to accept connections"),
        "the service's output is kept: {stdout}"
    );
    assert_eq!(hodei_containers(), before, "no container is left behind");
}

#[test]
fn the_example_with_a_postgres_service_runs_green() {
    let _engine = busybox_image();
    debian_images();
    let before = hodei_containers();
    let out = run(hodei().args([
        "run",
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/postgres-service.yml"),
    ]));
    let stdout = compact(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    for expected in [
        "schema | 3 users, the first ada",
        "platform | checked on Debian GNU/Linux 12 (bookworm)",
        "report | report written on the host, Linux",
        "of `postgres-service`: succeeded",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?}: {stdout}");
    }
    assert_eq!(hodei_containers(), before, "no container is left behind");
}
