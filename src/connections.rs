//! Sockets that hold a connection without using it are closed.
//!
//! tonic serves HTTP/2 and (for grpc-web and the static files) HTTP/1.1
//! through hyper, but sets no timer on the HTTP/1.1 side, so hyper's
//! header-read timeout never runs; and neither protocol has a deadline for
//! a client's first byte. Left alone, a client that connects and says
//! nothing, trickles a request's headers a byte at a time (slowloris), or
//! leaves an HTTP/1.1 keep-alive connection idle holds its socket and task
//! forever, and a few thousand of them exhaust the server's file
//! descriptors. [`Guarded`] wraps every accepted socket, under TLS, and
//! closes it (its pending read fails with `TimedOut`, which ends hyper's
//! connection) when:
//!
//! - no byte has come within `first_byte` of the accept;
//! - the client has sent bytes and the server has written nothing since,
//!   for `unanswered`: headers that never finish, a request never answered;
//! - nothing has crossed in either direction for `idle`.
//!
//! What it promises: a connection in use is never cut. An open event
//! stream writes a checkpoint every heartbeat and HTTP/2 pings every
//! `ping_every`; a client's bytes on HTTP/2 (pings, settings, requests)
//! are answered at once, and window updates follow the server's own
//! writes. So [`ConnectionTimeouts::check`] requires `unanswered` to exceed
//! `ping_every`, and `idle` to exceed the heartbeat.
//!
//! What it never does: parse a protocol, or touch a read or write that
//! makes progress. It only looks at the clock when a read would wait.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// How long a connection may wait on its client; see the module's comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionTimeouts {
    /// From the accept to the client's first byte (for TLS, its hello).
    pub first_byte: Duration,
    /// From a client's bytes to the server's next write.
    pub unanswered: Duration,
    /// With no byte either way.
    pub idle: Duration,
    /// How often an HTTP/2 connection with nothing to read is pinged.
    pub ping_every: Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self {
            first_byte: Duration::from_secs(10),
            unanswered: Duration::from_secs(40),
            idle: DEFAULT_IDLE,
            ping_every: Duration::from_secs(30),
        }
    }
}

/// How long a connection may go with no byte either way, by default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(120);

impl ConnectionTimeouts {
    /// Refuses timeouts that would cut connections in use: an event
    /// stream's heartbeat must come within `idle`, and a ping within
    /// `unanswered`.
    pub fn check(&self, heartbeat: Duration) -> Result<(), String> {
        if self.idle <= heartbeat {
            return Err(format!(
                "the connection idle timeout ({} s) must be longer than the event streams' heartbeat ({} s), \
                 or idle streams over HTTP/1.1 would be cut",
                self.idle.as_secs_f64(),
                heartbeat.as_secs_f64()
            ));
        }
        if self.unanswered <= self.ping_every {
            return Err(format!(
                "the unanswered-bytes timeout ({} s) must be longer than the HTTP/2 ping interval ({} s)",
                self.unanswered.as_secs_f64(),
                self.ping_every.as_secs_f64()
            ));
        }
        Ok(())
    }
}

/// Why a connection was closed, as the metric's `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    NoFirstByte,
    Unanswered,
    Idle,
}

impl Cut {
    fn label(self) -> &'static str {
        match self {
            Cut::NoFirstByte => "no_first_byte",
            Cut::Unanswered => "unanswered",
            Cut::Idle => "idle",
        }
    }

    fn error(self) -> io::Error {
        let why = match self {
            Cut::NoFirstByte => "the client sent nothing after connecting",
            Cut::Unanswered => "the client's bytes never made a request",
            Cut::Idle => "the connection was idle",
        };
        io::Error::new(io::ErrorKind::TimedOut, why)
    }
}

/// A socket that closes itself when its client keeps it waiting; see the
/// module's comment.
pub struct Guarded<IO> {
    io: IO,
    timeouts: ConnectionTimeouts,
    accepted: Instant,
    /// The last byte either way.
    last_activity: Instant,
    read_any: bool,
    /// The first byte read since the server last wrote.
    unanswered_since: Option<Instant>,
    /// Wakes a waiting read at (or, after activity, before) its deadline.
    timer: Pin<Box<Sleep>>,
}

impl<IO> Guarded<IO> {
    /// Guards `io`, accepted now.
    pub fn new(io: IO, timeouts: ConnectionTimeouts) -> Self {
        let now = Instant::now();
        Self {
            io,
            timeouts,
            accepted: now,
            last_activity: now,
            read_any: false,
            unanswered_since: None,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.first_byte)),
        }
    }

    /// When the client must have done something by, and what it will have
    /// failed to do.
    fn deadline(&self) -> (Instant, Cut) {
        if !self.read_any {
            (self.accepted + self.timeouts.first_byte, Cut::NoFirstByte)
        } else if let Some(since) = self.unanswered_since {
            (since + self.timeouts.unanswered, Cut::Unanswered)
        } else {
            (self.last_activity + self.timeouts.idle, Cut::Idle)
        }
    }

    fn wrote(&mut self, bytes: usize) {
        if bytes > 0 {
            self.last_activity = Instant::now();
            self.unanswered_since = None;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        if let Poll::Ready(result) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if buf.filled().len() > before {
                let now = Instant::now();
                this.read_any = true;
                this.last_activity = now;
                this.unanswered_since.get_or_insert(now);
            }
            return Poll::Ready(result);
        }
        // The read waits on the client: is it late?
        let (deadline, cut) = this.deadline();
        // A deadline that moved later leaves the timer early; it then
        // wakes this read, which sets it again. So activity costs no timer
        // update, only a deadline that comes sooner does.
        if deadline < this.timer.deadline() {
            this.timer.as_mut().reset(deadline);
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // The timer was set for this deadline or an earlier one.
        if Instant::now() < deadline {
            this.timer.as_mut().reset(deadline);
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        ::metrics::counter!(crate::metrics::CONNECTIONS_CUT, "reason" => cut.label()).increment(1);
        tracing::debug!(
            reason = cut.label(),
            "closing a connection that kept the server waiting"
        );
        Poll::Ready(Err(cut.error()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(bytes)) = result {
            this.wrote(bytes);
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(bytes)) = result {
            this.wrote(bytes);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The socket's own peer and local addresses (and, under TLS, its
/// certificates) stay what handlers see.
impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Guarded<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_that_would_cut_streams_or_pinged_connections_are_refused() {
        let defaults = ConnectionTimeouts::default();
        assert_eq!(defaults.check(Duration::from_secs(5)), Ok(()));
        let error = defaults
            .check(Duration::from_secs(120))
            .expect_err("idle == heartbeat");
        assert!(error.contains("heartbeat (120 s)"), "{error}");
        let unpinged = ConnectionTimeouts {
            unanswered: Duration::from_secs(30),
            ..defaults
        };
        let error = unpinged
            .check(Duration::from_secs(5))
            .expect_err("unanswered == ping interval");
        assert!(error.contains("ping interval (30 s)"), "{error}");
    }
}
