//! Commit notices between the servers of one database: a wake-up, never
//! the data (readers read the events table by sequence).
//!
//! Notices are sent after the batch has committed, by a task of their own,
//! coalesced to one `pg_notify` per wake-up however many batches committed
//! meanwhile. Never inside the write transaction: PostgreSQL serialises the
//! commits of every transaction holding a pending notification on one
//! instance-wide lock. Listeners also poll every workspace's head once a
//! second and after any reconnection, so a lost notice (a dropped listen
//! connection, a full queue) delays a delivery by at most that much.

use std::{collections::HashMap, time::Duration};

use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;

use crate::{domain::WorkspaceId, store::CommitNotice};

/// The channel the servers of one database talk on.
const CHANNEL: &str = "conversations_commits";
/// How often a listener reads every head, notices or not.
pub const POLL: Duration = Duration::from_secs(1);
/// Most notices waiting to be sent.
const QUEUE: usize = 4096;
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7000;

/// Starts the task that announces committed heads; returns its queue. It
/// ends when every sender is gone.
pub fn start_announcer(pool: PgPool) -> mpsc::Sender<(WorkspaceId, i64)> {
    let (heads, mut queued) = mpsc::channel::<(WorkspaceId, i64)>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = queued.recv().await {
            let mut latest = HashMap::from([(first.0, first.1)]);
            while let Ok((workspace, head)) = queued.try_recv() {
                let known = latest.entry(workspace).or_insert(head);
                *known = (*known).max(head);
            }
            for payload in payloads(&latest) {
                if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(%error, "could not announce a commit; the others will poll");
                }
            }
        }
    });
    heads
}

/// `workspace:head` pairs, comma-separated, in payloads PostgreSQL takes.
fn payloads(heads: &HashMap<WorkspaceId, i64>) -> Vec<String> {
    let mut payloads = vec![String::new()];
    for (workspace, head) in heads {
        let pair = format!("{}:{head}", workspace.0);
        let last = payloads.last_mut().expect("never empty");
        if !last.is_empty() && last.len() + pair.len() + 1 > MAX_PAYLOAD {
            payloads.push(pair);
        } else {
            if !last.is_empty() {
                last.push(',');
            }
            last.push_str(&pair);
        }
    }
    payloads
}

/// Parses a payload; pairs that do not parse are skipped.
fn parse(payload: &str) -> impl Iterator<Item = (WorkspaceId, i64)> + '_ {
    payload.split(',').filter_map(|pair| {
        let (workspace, head) = pair.split_once(':')?;
        Some((WorkspaceId(workspace.parse().ok()?), head.parse().ok()?))
    })
}

/// Starts listening for other servers' commits: a notice per announced
/// head, and [`CommitNotice::Resync`] at the start, every [`POLL`] and
/// after the listen connection was lost. Ends when the receiver is dropped.
pub fn start_listener(pool: PgPool) -> mpsc::Receiver<CommitNotice> {
    let (notices, received) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = match connect(&pool).await {
                    Ok(listener) => Some(listener),
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for other servers' commits; polling");
                        None
                    }
                };
                if notices.send(CommitNotice::Resync).await.is_err() {
                    return;
                }
            }
            let heard = async {
                match listener.as_mut() {
                    Some(listener) => listener.try_recv().await,
                    None => std::future::pending().await,
                }
            };
            let sent = tokio::select! {
                heard = heard => match heard {
                    Ok(Some(notification)) => {
                        let mut sent = Ok(());
                        for (workspace, head) in parse(notification.payload()) {
                            sent = notices.send(CommitNotice::Head(workspace, head)).await;
                        }
                        sent
                    }
                    // The connection was lost: notices may have been missed.
                    Ok(None) | Err(_) => {
                        listener = None;
                        Ok(())
                    }
                },
                _ = poll.tick() => notices.send(CommitNotice::Resync).await,
                () = notices.closed() => return,
            };
            if sent.is_err() {
                return;
            }
        }
    });
    received
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_through_payloads_that_postgresql_accepts() {
        let heads: HashMap<_, _> = (0..2000).map(|w| (WorkspaceId(w), w * 1_000_003)).collect();
        let payloads = payloads(&heads);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let parsed: HashMap<_, _> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(parsed, heads);
        assert_eq!(
            parse("7:12,junk,:3,8:x").collect::<Vec<_>>(),
            [(WorkspaceId(7), 12)]
        );
    }
}
