//! `hodei server` on PostgreSQL: one of the replicas that share the database. It follows —
//! serving what it can and forwarding the rest to the leader ([`hodei_api::replica`]) — until
//! it wins the leadership; then the caller starts the supervision tree and serves as the
//! leader, renewing the lease ([`renew`]). A leader that finds itself deposed stops.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

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
    let leads = |epoch: u64, leader: watch::Sender<Option<LeaderInfo>>, cluster: Cluster| {
        Followed::Leads(Leadership {
            holder: holder.clone(),
            address: address.clone(),
            epoch,
            ttl,
            leader,
            cluster,
        })
    };
    // The follower's server, started the first time another replica is found to lead.
    let mut serving: Option<hodei_api::replica::ServerHandle> = None;
    let mut warned = false;
    loop {
        match store.try_lead(&holder, &address, ttl).await {
            Ok(Lead::Led { epoch }) => {
                if let Some(server) = serving.take() {
                    // In-flight forwards are cut; their clients try again, on the new leader.
                    server.stop(false).await;
                }
                return leads(epoch, leader, cluster);
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

/// Renews the leadership until it is lost; then `deposed` gets the epoch of the leader that
/// took over. A renewal that cannot reach the database is tried again: if nobody took over
/// meanwhile, this replica leads on; if somebody did, its writes were already refused (the
/// fence) and the next renewal says so.
pub fn renew(store: PgStore, leadership: &Leadership, deposed: oneshot::Sender<u64>) {
    let (holder, epoch, ttl) = (leadership.holder.clone(), leadership.epoch, leadership.ttl);
    let me = leadership.me();
    let leader = leadership.leader.clone();
    let _ = leader.send(Some(me.clone()));
    // The first write that finds the epoch moved on, or the renewal that does, stops this
    // replica.
    let deposed = Arc::new(std::sync::Mutex::new(Some(deposed)));
    let tell = deposed.clone();
    store.fence(epoch, move |now| {
        if let Some(sender) = tell.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = sender.send(now);
        }
    });
    actix::spawn(async move {
        let mut warned = false;
        loop {
            tokio::time::sleep(ttl / 4).await;
            match store.renew(&holder, epoch, ttl).await {
                Ok(Renewal::Renewed) => {
                    if warned {
                        tracing::warn!(epoch, "The leadership is renewed again.");
                        warned = false;
                    }
                    let _ = leader.send(Some(me.clone()));
                }
                Ok(Renewal::Deposed { by }) => {
                    let _ = leader.send(Some(by.clone()));
                    store.depose(by.epoch);
                    return;
                }
                Err(err) => {
                    if !warned {
                        tracing::warn!(epoch, error = %err, "Cannot renew the leadership; trying again.");
                        warned = true;
                    }
                }
            }
        }
    });
}
