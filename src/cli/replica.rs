//! `hodei server` on PostgreSQL: one of the replicas that share the database. It follows —
//! serving what it can and forwarding the rest to the leader ([`hodei_api::replica`]) — until
//! it wins the leadership; then the caller starts the supervision tree and serves as the
//! leader, renewing the lease ([`renew`]). A leader that finds itself deposed stops.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hodei_adapters::postgres::{Lead, PgStore, Renewal};
use hodei_api::replica::{Cluster, Follower, serve_follower};
use hodei_domain::ports::LeaderInfo;
use tokio::sync::{oneshot, watch};

use super::{EXIT_INTERNAL, EXIT_OK};
use crate::config::ServerConfig;

/// This replica, once it leads.
pub struct Leadership {
    pub holder: String,
    pub address: String,
    pub epoch: u64,
    pub ttl: Duration,
    /// When the request that won the lease was sent: the lease runs at least `ttl` from then.
    pub won: Instant,
    /// The leader as this replica last read it (itself, while it leads).
    pub leader: watch::Sender<Option<LeaderInfo>>,
    pub cluster: Cluster,
}

impl Leadership {
    fn me(&self) -> LeaderInfo {
        LeaderInfo {
            holder: self.holder.clone(),
            address: self.address.clone(),
            epoch: self.epoch,
            expires_in_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// How a replica stopped following.
pub enum Followed {
    /// It leads now.
    Leads(Leadership),
    /// A signal stopped it while it followed: the exit code.
    Stopped(u8),
}

/// The machine's host name, or `localhost`.
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer it is given.
    let done = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if done && !name.is_empty() => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// This life of this replica: its name and where the others reach it.
pub fn identity(config: &ServerConfig, listener: &TcpListener, tls: bool) -> (String, String) {
    let host = host_name();
    let node = config
        .replica
        .node_name
        .clone()
        .unwrap_or_else(|| host.clone());
    // Tells one life of the replica from the next.
    let suffix: String = hodei_api::auth::generate()
        .map(|token| {
            token
                .trim_start_matches(hodei_api::auth::TOKEN_PREFIX)
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(6)
                .collect()
        })
        .unwrap_or_else(|_| format!("{:x}", std::process::id()));
    let holder = format!("{node}-{suffix}");
    let address = config.replica.advertise_url.clone().unwrap_or_else(|| {
        let port = listener.local_addr().map_or(8080, |a| a.port());
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{host}:{port}")
    });
    (holder, address)
}

/// How often a follower tries to take the leadership: often enough that a dead leader is
/// replaced within a small part of the lease after its lease ran out.
fn try_every(ttl: Duration) -> Duration {
    (ttl / 8).clamp(Duration::from_millis(50), Duration::from_millis(500))
}

/// Follows until this replica leads, serving as a follower on `listener` meanwhile (from the
/// first moment another replica is found to lead). `stop` resolves when a signal asks the
/// server to stop.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    store: &PgStore,
    config: &ServerConfig,
    listener: &TcpListener,
    tls: Option<hodei_api::tls::TlsConfig>,
    (holder, address): (String, String),
    stop: &mut (dyn std::future::Future<Output = ()> + Unpin),
    shown: &str,
) -> Followed {
    let ttl = config.replica.leader_lease;
    let (leader, seen) = watch::channel(None::<LeaderInfo>);
    let cluster = Cluster {
        replica: holder.clone(),
        leader: seen,
    };
    let leads =
        |epoch: u64, won: Instant, leader: watch::Sender<Option<LeaderInfo>>, cluster: Cluster| {
            Followed::Leads(Leadership {
                holder: holder.clone(),
                address: address.clone(),
                epoch,
                ttl,
                won,
                leader,
                cluster,
            })
        };
    // The follower's server, started the first time another replica is found to lead.
    let mut serving: Option<hodei_api::replica::ServerHandle> = None;
    let mut warned = false;
    loop {
        let asked = Instant::now();
        match store.try_lead(&holder, &address, ttl).await {
            Ok(Lead::Led { epoch }) => {
                if let Some(server) = serving.take() {
                    // In-flight forwards are cut; their clients try again, on the new leader.
                    server.stop(false).await;
                }
                return leads(epoch, asked, leader, cluster);
            }
            Ok(Lead::Held(info)) => {
                warned = false;
                let _ = leader.send(Some(info.clone()));
                if serving.is_none() {
                    match start_follower(store, config, listener, tls.clone(), cluster.clone()) {
                        Ok(server) => {
                            println!(
                                "Hodei server listening on {}://{} ({shown}): a follower of {} at {}",
                                if tls.is_some() { "https" } else { "http" },
                                listener
                                    .local_addr()
                                    .map_or_else(|_| config.listen.to_string(), |a| a.to_string()),
                                info.holder,
                                info.address
                            );
                            let _ = std::io::Write::flush(&mut std::io::stdout());
                            let handle = server.handle();
                            actix::spawn(async move {
                                if let Err(err) = server.await {
                                    tracing::error!(error = %err, "The follower's HTTP server failed.");
                                }
                            });
                            serving = Some(handle);
                        }
                        Err(err) => {
                            eprintln!("error: cannot serve as a follower: {err}");
                            return Followed::Stopped(EXIT_INTERNAL);
                        }
                    }
                }
            }
            Err(err) => {
                if !warned {
                    tracing::warn!(error = %err, "Cannot read the leadership; trying again.");
                    warned = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(try_every(ttl)) => {}
            () = &mut *stop => {
                if let Some(server) = serving.take() {
                    server.stop(true).await;
                }
                return Followed::Stopped(EXIT_OK);
            }
        }
    }
}

fn start_follower(
    store: &PgStore,
    config: &ServerConfig,
    listener: &TcpListener,
    tls: Option<hodei_api::tls::TlsConfig>,
    cluster: Cluster,
) -> Result<hodei_api::replica::Server, String> {
    let (doorbell, _) = tokio::sync::broadcast::channel(1024);
    if config.replica.log_notifications {
        store.listen_logs(doorbell.clone());
    }
    let reader = store.clone();
    let read_tail: hodei_api::replica::ReadTail = Arc::new(move |job, from, max| {
        let reader = reader.clone();
        Box::pin(async move { reader.read_committed(job, from, max).await })
    });
    let follower = Follower::new(
        cluster,
        Arc::new(store.clone()),
        Arc::new(store.clone()),
        read_tail,
        doorbell,
    )?;
    let listener = listener
        .try_clone()
        .map_err(|err| format!("cannot share the socket: {err}"))?;
    serve_follower(follower, listener, config.http_workers, tls).map_err(|err| err.to_string())
}

/// Why a leader stops leading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deposed {
    /// Another replica took over, with this epoch.
    By { epoch: u64 },
    /// The lease could not be renewed for this long: another replica may take over when it
    /// runs out, so this one stops first.
    Unrenewed { for_ms: u64 },
}

impl std::fmt::Display for Deposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deposed::By { epoch } => write!(f, "another one took over (epoch {epoch})"),
            Deposed::Unrenewed { for_ms } => write!(
                f,
                "its lease could not be renewed for {for_ms} ms (the database does not answer), \
                 and another replica may take over when it runs out"
            ),
        }
    }
}

/// How long a leader goes on without renewing its lease: three quarters of it, so that it has
/// stopped before another replica can take over. Past it, a leader that cannot reach the
/// database (its writes are refused anyway) stops rather than go on driving containers, pods
/// and agents beside a new leader.
fn renew_deadline(ttl: Duration) -> Duration {
    ttl * 3 / 4
}

/// Renews the leadership until it is lost; then `deposed` says why. A renewal that cannot reach
/// the database is tried again while the lease surely holds (see [`renew_deadline`]); past
/// that, this replica stops: if nobody took over, it wins the lease again as soon as the
/// database answers, and if somebody did, its writes were already refused (the fence).
pub fn renew(store: PgStore, leadership: &Leadership, deposed: oneshot::Sender<Deposed>) {
    let (holder, epoch, ttl) = (leadership.holder.clone(), leadership.epoch, leadership.ttl);
    let me = leadership.me();
    let leader = leadership.leader.clone();
    let _ = leader.send(Some(me.clone()));
    // The first write that finds the epoch moved on, or the renewal that does, stops this
    // replica.
    let tell = Arc::new(std::sync::Mutex::new(Some(deposed)));
    let depose = move |why: Deposed| {
        if let Some(sender) = tell.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = sender.send(why);
        }
    };
    let fenced = depose.clone();
    store.fence(epoch, move |now| fenced(Deposed::By { epoch: now }));
    let mut renewed = leadership.won;
    actix::spawn(async move {
        let mut warned = false;
        loop {
            tokio::time::sleep(ttl / 4).await;
            let asked = Instant::now();
            let answer = tokio::time::timeout(ttl / 4, store.renew(&holder, epoch, ttl)).await;
            match answer {
                Ok(Ok(Renewal::Renewed)) => {
                    renewed = asked;
                    if warned {
                        tracing::warn!(epoch, "The leadership is renewed again.");
                        warned = false;
                    }
                    let _ = leader.send(Some(me.clone()));
                }
                // It resigned: a clean stop is under way, nothing more to renew.
                Ok(Ok(Renewal::Deposed { by })) if by.holder == holder && by.epoch == epoch => {
                    return;
                }
                Ok(Ok(Renewal::Deposed { by })) => {
                    let _ = leader.send(Some(by.clone()));
                    store.depose(by.epoch);
                    return;
                }
                failed => {
                    let error = match failed {
                        Ok(Err(err)) => err.to_string(),
                        _ => format!("no answer within {} ms", (ttl / 4).as_millis()),
                    };
                    let unrenewed = renewed.elapsed();
                    if unrenewed >= renew_deadline(ttl) {
                        tracing::error!(epoch, error = %error, "The lease could not be renewed in time: this replica stops leading.");
                        depose(Deposed::Unrenewed {
                            for_ms: u64::try_from(unrenewed.as_millis()).unwrap_or(u64::MAX),
                        });
                        return;
                    }
                    if !warned {
                        tracing::warn!(epoch, error = %error, "Cannot renew the leadership; trying again.");
                        warned = true;
                    }
                }
            }
        }
    });
}
