//! The bench on PostgreSQL: `bench --database postgres://… [--replicas 2]`.
//!
//! In one run, on databases of its own made on that server (dropped at the
//! end):
//! 1. ceilings: a plain sqlx loop of one transaction per mutation at 64 in
//!    flight (update a conversation, insert a message, and, to give the same
//!    promise as the service, take the next sequence from a per-workspace
//!    counter row and insert the event), the same loop without the counter
//!    row, and `pgbench`'s TPC-B-like rate at 64 clients when `pgbench` is
//!    installed; and the first replica's `Health/Check` rate;
//! 2. lifecycle mutations at 64 in flight through one replica, then spread
//!    over `--replicas` replicas;
//! 3. cross-replica delivery: widget and Inbox streams open on one replica
//!    while 64 writers write through another; every stream checked against
//!    `ListEvents`, commit→delivery p50/p99.

use sqlx::{Connection, PgConnection, postgres::PgPoolOptions};

use super::*;

/// Target: group commit against the naive loop with the same promise.
const TARGET_TIMES_NAIVE_PG: f64 = 3.0;
/// Target: commit→delivery p99 across replicas.
const TARGET_CROSS_P99_MS: f64 = 50.0;
/// In flight for the mutations, the naive loops and pgbench.
const CLIENTS: usize = 64;

#[derive(Debug, Serialize)]
struct PgReport {
    sizes: Sizes,
    replicas: usize,
    total_seconds: f64,
    cores: usize,
    load_at_start: f64,
    load_at_end: f64,
    naive_with_counter: Throughput,
    naive_without_counter: Throughput,
    pgbench_tps: Option<f64>,
    health: Throughput,
    seed: Seeded,
    one_replica: Throughput,
    replicas_spread: Throughput,
    cross_replica: Delivery,
}

/// A database of its own on the server of `url`: its URL, and a way back to
/// drop it.
struct Scratch {
    url: String,
    server: String,
    name: String,
}

impl Scratch {
    async fn create(server: &str, what: &str) -> Result<Self> {
        let name = format!("conversations_{what}_{}", ulid::Ulid::new()).to_lowercase();
        let mut admin = PgConnection::connect(server).await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let mut url = url::Url::parse(server)?;
        url.set_path(&name);
        Ok(Self {
            url: url.to_string(),
            server: server.to_owned(),
            name,
        })
    }

    async fn drop(self) -> Result<()> {
        let mut admin = PgConnection::connect(&self.server).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await?;
        admin.close().await?;
        Ok(())
    }
}

pub(super) async fn run(args: &Args, server: &str) -> Result<()> {
    let mut sizes = Sizes::of(args)?;
    // Enough conversations for the widget streams; the 1M-row phases are
    // the SQLite bench's.
    sizes.conversations = sizes.streams + 50;
    sizes.events = sizes.conversations;
    let replicas = args.replicas.max(2);
    let started = Instant::now();
    let load_at_start = load_average();
    progress(format!(
        "PostgreSQL at {}, {replicas} replicas, sizes: {sizes:?}",
        Location::Postgres(server.to_owned())
    ));

    let naive = Scratch::create(server, "naive").await?;
    progress(format!(
        "ceiling: naive sqlx loop, {CLIENTS} in flight, with a counter row"
    ));
    let naive_with_counter = naive_pg(&naive.url, true, sizes.ceiling_seconds).await?;
    progress("ceiling: naive sqlx loop without the counter row".into());
    let naive_without_counter = naive_pg(&naive.url, false, sizes.ceiling_seconds).await?;
    naive.drop().await?;
    let pgbench_tps = pgbench(server, sizes.ceiling_seconds).await?;

    let bench = Scratch::create(server, "bench").await?;
    let database = Location::Postgres(bench.url.clone());
    let seeded = seed(&database, &sizes).await?;
    let pool = Pool::new(seeded.kept.clone());
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(Server::spawn(&database).await?);
    }
    let first = Api::connect(&servers[0], sizes.connections).await?;
    progress("ceiling: Health/Check".into());
    let health = health_ceiling(&servers[0], 64, sizes.connections, sizes.ceiling_seconds).await?;
    progress(format!(
        "lifecycle mutations, {CLIENTS} in flight, one replica"
    ));
    let one_replica = lifecycle_mutations(&first, CLIENTS, sizes.timed()).await?;
    let all: Vec<&Server> = servers.iter().collect();
    let spread = Api::connect_spread(&all, sizes.connections.max(replicas)).await?;
    progress(format!(
        "lifecycle mutations, {CLIENTS} in flight, over {replicas} replicas"
    ));
    let replicas_spread = lifecycle_mutations(&spread, CLIENTS, sizes.timed()).await?;
    let widget_pool = pool.first(sizes.streams);
    progress(format!(
        "cross-replica fan-out: {} widget + {} Inbox streams on replica 2, writes through replica 1",
        sizes.streams, sizes.agent_streams
    ));
    let second = Api::connect(&servers[1], sizes.connections).await?;
    let streams = Streams::open(
        &servers[1],
        &second,
        &widget_pool,
        sizes.agent_streams,
        sizes.stream_connections,
    )
    .await?;
    let writes = write_mix(&first, &widget_pool, FAN_OUT_WRITERS, sizes.timed()).await?;
    // Checked against the writers' replica: its head is every write, and
    // the streams on the other must reach it.
    let cross_replica = streams.check(&first, writes).await?;
    drop((first, second, spread));
    for server in servers {
        server.stop().await?;
    }
    bench.drop().await?;

    let report = PgReport {
        sizes,
        replicas,
        total_seconds: started.elapsed().as_secs_f64(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        load_at_start,
        load_at_end: load_average(),
        naive_with_counter,
        naive_without_counter,
        pgbench_tps,
        health,
        seed: seeded,
        one_replica,
        replicas_spread,
        cross_replica,
    };
    report.print();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let json = args.json.clone().unwrap_or_else(|| {
        root.join(if report.sizes.smoke {
            "target/bench/postgres-smoke.json"
        } else {
            "target/bench/postgres.json"
        })
    });
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    println!(
        "wrote {} ({:.0} s in all)",
        json.display(),
        report.total_seconds
    );
    Ok(())
}

/// `CLIENTS` tasks, each one transaction per mutation: update a
/// conversation, insert a message; `counter`: also take the workspace's next
/// sequence from its counter row and insert the event with it (the promise
/// of a gap-free per-workspace feed).
async fn naive_pg(url: &str, counter: bool, seconds: f64) -> Result<Throughput> {
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(url)
        .await?;
    for statement in [
        "DROP TABLE IF EXISTS naive_events, naive_messages, naive_conversations, naive_counters",
        "CREATE TABLE naive_conversations (id BIGINT PRIMARY KEY, status TEXT NOT NULL, version BIGINT NOT NULL, update_time BIGINT NOT NULL)",
        "CREATE TABLE naive_messages (id BIGSERIAL PRIMARY KEY, conversation_id BIGINT NOT NULL REFERENCES naive_conversations (id), body TEXT NOT NULL, create_time BIGINT NOT NULL)",
        "CREATE TABLE naive_counters (workspace_id BIGINT PRIMARY KEY, event_head BIGINT NOT NULL)",
        "CREATE TABLE naive_events (workspace_id BIGINT NOT NULL, sequence BIGINT NOT NULL, conversation_id BIGINT NOT NULL, payload TEXT NOT NULL, PRIMARY KEY (workspace_id, sequence))",
        "INSERT INTO naive_conversations SELECT i, 'open', 1, 0 FROM generate_series(1, 1000) i",
        "INSERT INTO naive_counters VALUES (1, 0)",
    ] {
        sqlx::query(statement).execute(&pool).await?;
    }
    let throughput = drive(CLIENTS, Duration::from_secs_f64(seconds), |w, deadline| {
        let pool = pool.clone();
        async move {
            let mut log = WorkerLog::default();
            let mut i = w as i64;
            while Instant::now() < deadline {
                let conversation = i % 1000 + 1;
                i += CLIENTS as i64;
                let one = async {
                    let mut tx = pool.begin().await?;
                    sqlx::query(
                        "UPDATE naive_conversations SET version = version + 1, update_time = $1 WHERE id = $2",
                    )
                    .bind(i)
                    .bind(conversation)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO naive_messages (conversation_id, body, create_time) VALUES ($1, $2, $3)",
                    )
                    .bind(conversation)
                    .bind("How can I help?")
                    .bind(i)
                    .execute(&mut *tx)
                    .await?;
                    if counter {
                        let sequence: i64 = sqlx::query_scalar(
                            "UPDATE naive_counters SET event_head = event_head + 1 WHERE workspace_id = 1 RETURNING event_head",
                        )
                        .fetch_one(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO naive_events VALUES (1, $1, $2, '{\"type\":\"message_posted\"}')",
                        )
                        .bind(sequence)
                        .bind(conversation)
                        .execute(&mut *tx)
                        .await?;
                    }
                    tx.commit().await?;
                    Ok::<_, sqlx::Error>(())
                };
                let t = Instant::now();
                match one.await {
                    Ok(()) => log.latencies.push(t.elapsed()),
                    Err(error) => {
                        log.failed::<()>(error.to_string());
                    }
                }
            }
            log
        }
    })
    .await?;
    pool.close().await;
    Ok(throughput)
}

/// pgbench's TPC-B-like rate at `CLIENTS` clients on a scratch database, or
/// None when pgbench is not installed.
async fn pgbench(server: &str, seconds: f64) -> Result<Option<f64>> {
    let installed = tokio::process::Command::new("pgbench")
        .arg("--version")
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !installed {
        progress("pgbench is not installed: no TPC-B-like ceiling".into());
        return Ok(None);
    }
    let scratch = Scratch::create(server, "pgbench").await?;
    progress(format!("ceiling: pgbench TPC-B-like, {CLIENTS} clients"));
    let init = tokio::process::Command::new("pgbench")
        .args(["-i", "-q", "-s", "1", &scratch.url])
        .output()
        .await?;
    if !init.status.success() {
        scratch.drop().await?;
        return Err(format!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        )
        .into());
    }
    let run = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &format!("{}", seconds.ceil().max(1.0) as u64),
            &scratch.url,
        ])
        .output()
        .await?;
    scratch.drop().await?;
    let out = String::from_utf8_lossy(&run.stdout);
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
    if tps.is_none() {
        progress(format!(
            "pgbench printed no rate: {}",
            String::from_utf8_lossy(&run.stderr)
        ));
    }
    Ok(tps)
}

impl PgReport {
    fn print(&self) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let one = &self.one_replica;
        let naive = &self.naive_with_counter;
        println!();
        println!(
            "PostgreSQL, {} replicas, {} cores, load {:.1} -> {:.1}",
            self.replicas, self.cores, self.load_at_start, self.load_at_end
        );
        println!("{:<58} {:>14} {:>20}", "what", "rate", "p50 / p99");
        let line = |what: String, t: &Throughput| {
            println!(
                "{:<58} {:>12}/s {:>20}{}",
                what,
                thousands(t.per_second),
                latency(&t.latency),
                errors(t)
            );
        };
        line(
            format!("naive sqlx, 1 txn/mutation + counter row, {CLIENTS} in flight"),
            naive,
        );
        line(
            format!("naive sqlx, 1 txn/mutation, no counter row, {CLIENTS} in flight"),
            &self.naive_without_counter,
        );
        match self.pgbench_tps {
            Some(tps) => println!(
                "{:<58} {:>12}/s",
                format!("pgbench TPC-B-like, {CLIENTS} clients"),
                thousands(tps)
            ),
            None => println!("{:<58} {:>14}", "pgbench TPC-B-like", "not installed"),
        }
        line("Health/Check, replica 1".into(), &self.health);
        line(
            format!("lifecycle mutations, {CLIENTS} in flight, 1 replica"),
            one,
        );
        line(
            format!(
                "lifecycle mutations, {CLIENTS} in flight, {} replicas",
                self.replicas
            ),
            &self.replicas_spread,
        );
        let d = &self.cross_replica;
        println!(
            "{:<58} {:>14} {:>20}",
            format!(
                "cross-replica delivery, {} streams, writes {}/s",
                d.streams,
                thousands(d.writes.per_second)
            ),
            format!("{} events", thousands(d.events as f64)),
            latency(&d.latency)
        );
        println!(
            "  streams checked: missed {}, duplicated {}, out of order {}, unexpected {}, lagging {}",
            d.missed, d.duplicated, d.out_of_order, d.unexpected, d.lagging
        );
        println!();
        let times_naive = ratio(one.per_second, naive.per_second);
        println!(
            "target: mutations >= {TARGET_TIMES_NAIVE_PG}x the naive loop with the same promise: {times_naive:.2}x ({})",
            verdict(times_naive >= TARGET_TIMES_NAIVE_PG)
        );
        println!(
            "        (x{:.2} the naive loop without a counter row; {:.1}% of Health/Check{})",
            ratio(one.per_second, self.naive_without_counter.per_second),
            100.0 * ratio(one.per_second, self.health.per_second),
            self.pgbench_tps
                .map(|tps| format!("; x{:.2} pgbench", ratio(one.per_second, tps)))
                .unwrap_or_default()
        );
        println!(
            "target: cross-replica commit->delivery p99 <= {TARGET_CROSS_P99_MS} ms with {} streams: {:.1} ms ({})",
            d.streams,
            d.latency.p99_ms,
            verdict(d.latency.p99_ms <= TARGET_CROSS_P99_MS)
        );
        println!(
            "target: streams lose and double nothing: missed {} duplicated {} ({})",
            d.missed,
            d.duplicated,
            verdict(d.missed == 0 && d.duplicated == 0 && d.out_of_order == 0)
        );
    }
}
