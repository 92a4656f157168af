//! One Postgres-wire connection, served as pgwire's own loop serves it, with three limits
//! that loop does not have: a client has [`Limits::startup`] to sign in, may then stay
//! silent for [`Limits::idle`] at most between two messages (PostgreSQL's
//! `idle_session_timeout`), and may send no message larger than [`Limits::max_message`]
//! (pgwire buffers up to 1 GiB for one, before and after sign-in).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion_postgres::pgwire::api::{
    ClientInfo, ErrorHandler as _, PgWireConnectionState, PgWireServerHandlers,
};
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError};
use datafusion_postgres::pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use datafusion_postgres::pgwire::tokio::TlsAcceptor;
use datafusion_postgres::pgwire::tokio::server::{
    PgWireMessageServerCodec, negotiate_tls, process_error, process_message,
};
use futures::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

/// The largest message a client may send before it has signed in: a startup packet or a
/// password exchange is a few hundred bytes.
const BEFORE_SIGN_IN: usize = 64 * 1024;

/// How long and how much a client may take.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From connecting to signed in.
    pub startup: Duration,
    /// Once signed in, the longest wait for a whole message from its first byte, or for
    /// the first byte; `None` waits for ever.
    pub idle: Option<Duration>,
    /// The largest message, in bytes, once signed in.
    pub max_message: usize,
    /// Connections closed by each limit.
    pub closed_startup: Arc<AtomicU64>,
    pub closed_idle: Arc<AtomicU64>,
    pub closed_oversized: Arc<AtomicU64>,
}

/// A client's stream that reads each message's header as it passes and fails the read
/// that brings one longer than `limit`: pgwire's codec would otherwise buffer up to 1 GiB of
/// a message before decoding it. It also notes when the message arriving began, for the
/// idle clock.
struct Capped<T> {
    io: T,
    limit: usize,
    /// The next message has no type byte: the startup packet.
    untyped: bool,
    /// The current header's bytes so far.
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message's body still to come.
    body_left: usize,
    /// When the first byte of a message not yet whole arrived.
    started: Option<tokio::time::Instant>,
}

impl<T> Capped<T> {
    fn new(io: T, limit: usize) -> Self {
        Self {
            io,
            limit,
            untyped: true,
            header: [0; 5],
            have: 0,
            body_left: 0,
            started: None,
        }
    }

    /// Follows message boundaries through `bytes`.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        if !bytes.is_empty() && self.started.is_none() {
            self.started = Some(tokio::time::Instant::now());
        }
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
            } else {
                let need = if self.untyped { 4 } else { 5 };
                let n = (need - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == need {
                    let mut len = [0u8; 4];
                    len.copy_from_slice(&self.header[need - 4..need]);
                    // The length counts itself.
                    let len = u32::from_be_bytes(len) as usize;
                    if len > self.limit {
                        return Err(TooLarge(self.limit));
                    }
                    self.body_left = len.saturating_sub(4);
                    self.have = 0;
                    self.untyped = false;
                }
            }
            if self.have == 0 && self.body_left == 0 {
                // Whole: the next message's clock starts with its first byte.
                self.started = (!bytes.is_empty()).then(tokio::time::Instant::now);
            }
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Capped<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if let Err(e) = this.scan(fresh) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Capped<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A message past [`Capped::limit`].
#[derive(Debug)]
struct TooLarge(usize);

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a message larger than {} bytes", self.0)
    }
}

impl std::error::Error for TooLarge {}

/// Whether `e` is a read [`Capped`] refused.
fn too_large(e: &PgWireError) -> bool {
    matches!(e, PgWireError::IoError(io) if io.get_ref().is_some_and(|inner| inner.is::<TooLarge>()))
}

/// Serves `tcp` until the client leaves or breaks a limit.
///
/// # Errors
/// The socket's, while answering.
pub(super) async fn serve<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: H,
    limits: &Limits,
) -> io::Result<()> {
    let startup_deadline = tokio::time::Instant::now() + limits.startup;
    let negotiated = match tokio::time::timeout_at(startup_deadline, negotiate_tls(tcp, tls)).await
    {
        Ok(negotiated) => negotiated?,
        Err(_) => {
            limits.closed_startup.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
    };
    // A TLS handshake the client began without asking (no acceptor to finish it).
    let Some(socket) = negotiated else {
        return Ok(());
    };
    let parts = socket.into_parts();
    let mut io = Capped::new(parts.io, BEFORE_SIGN_IN);
    // What negotiation read past its own request is the start of the startup packet.
    if io.scan(&parts.read_buf).is_err() {
        limits.closed_oversized.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    let mut rebuilt = FramedParts::new::<PgWireBackendMessage>(io, parts.codec);
    rebuilt.read_buf = parts.read_buf;
    rebuilt.write_buf = parts.write_buf;
    let mut socket = Framed::from_parts(rebuilt);

    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let on_error = handlers.error_handler();
    loop {
        let signed_in = !matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        socket.get_mut().limit = if signed_in {
            limits.max_message
        } else {
            BEFORE_SIGN_IN
        };
        let next = match (signed_in, limits.idle) {
            (false, _) => tokio::time::timeout_at(startup_deadline, socket.next()).await,
            // Silence between messages, or a message that takes that long to arrive whole:
            // a large statement on its way is not idle, one trickled in to hold the
            // connection is.
            (true, Some(idle)) => loop {
                let deadline = socket
                    .get_ref()
                    .started
                    .unwrap_or_else(tokio::time::Instant::now)
                    + idle;
                match tokio::time::timeout_at(deadline, socket.next()).await {
                    Err(_)
                        if socket
                            .get_ref()
                            .started
                            .is_some_and(|t| t + idle > tokio::time::Instant::now()) =>
                    {
                        continue;
                    }
                    next => break next,
                }
            },
            (true, None) => Ok(socket.next().await),
        };
        let message = match next {
            Err(_) if signed_in => {
                limits.closed_idle.fetch_add(1, Ordering::Relaxed);
                // 57P05: idle_session_timeout, as PostgreSQL words it.
                let idle = limits.idle.unwrap_or_default();
                return fatal(
                    &mut socket,
                    "57P05",
                    format!(
                        "terminating connection due to idle-session timeout (no whole message in {} s; [pgwire] idle_timeout_secs)",
                        idle.as_secs()
                    ),
                )
                .await;
            }
            Err(_) => {
                limits.closed_startup.fetch_add(1, Ordering::Relaxed);
                return fatal(
                    &mut socket,
                    "08006",
                    format!(
                        "not signed in within {} s of connecting",
                        limits.startup.as_secs()
                    ),
                )
                .await;
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) if too_large(&e) => {
                limits.closed_oversized.fetch_add(1, Ordering::Relaxed);
                // 54000: program_limit_exceeded.
                let limit = socket.get_ref().limit;
                return fatal(
                    &mut socket,
                    "54000",
                    format!(
                        "message larger than {limit} bytes{}; the connection is closed",
                        if signed_in {
                            " ([pgwire] max_message_mb)"
                        } else {
                            " before signing in"
                        }
                    ),
                )
                .await;
            }
            // The client went away (reset, broken pipe): nobody to tell.
            Ok(Some(Err(PgWireError::IoError(e)))) => {
                tracing::debug!(error = %e, "Postgres-wire client gone");
                return Ok(());
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "unreadable Postgres-wire message; closing");
                return fatal(&mut socket, "08P01", format!("unreadable message: {e}")).await;
            }
            Ok(Some(Ok(message))) => message,
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        if let Err(mut e) = process_message(
            message,
            &mut socket,
            Arc::clone(&startup),
            Arc::clone(&simple),
            Arc::clone(&extended),
            Arc::clone(&copy),
            Arc::clone(&cancel),
        )
        .await
        {
            on_error.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_query).await?;
        }
    }
}

/// Tells the client why it is being let go, and lets it go. What it is still sending is
/// read and dropped for a moment first: closing a socket with unread bytes resets it, and a
/// reset can reach the client before the reason does.
async fn fatal<T, S>(
    socket: &mut Framed<Capped<T>, PgWireMessageServerCodec<S>>,
    code: &str,
    message: String,
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let info = ErrorInfo::new("FATAL".into(), code.into(), message);
    let linger = async {
        socket
            .send(PgWireBackendMessage::ErrorResponse(info.into()))
            .await?;
        let io = &mut socket.get_mut().io;
        io.shutdown().await?;
        let mut scratch = vec![0u8; 64 * 1024];
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match io.read(&mut scratch).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    // The client may be gone or not reading; it is closed either way.
    let _ = tokio::time::timeout(LINGER, linger).await;
    Ok(())
}

/// How long, and for how many bytes, a client let go is still read from.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, body: usize) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body as u32 + 4).to_be_bytes());
        m.resize(5 + body, b'x');
        m
    }

    #[test]
    fn message_lengths_are_checked_at_each_header_however_the_bytes_arrive() {
        let mut c = Capped::new((), 100);
        // The startup packet has no type byte.
        let mut startup = 40u32.to_be_bytes().to_vec();
        startup.resize(40, 0);
        let mut stream = startup;
        for body in [10, 95, 0, 60] {
            stream.extend(typed(b'P', body));
        }
        // Pipelined in one read, or a byte at a time: headers are found either way.
        assert!(c.scan(&stream).is_ok());
        let mut c = Capped::new((), 100);
        for b in &stream {
            assert!(c.scan(std::slice::from_ref(b)).is_ok());
        }
        // One announcing 101 bytes (its length counts itself) is refused at its header, in
        // whichever read completes the header.
        let too_long = typed(b'Q', 97);
        let mut c = Capped::new((), 100);
        c.untyped = false;
        assert!(c.scan(&too_long[..3]).is_ok());
        assert!(c.scan(&too_long[3..5]).is_err());
        // The idle clock runs from a message's first byte until it is whole.
        let mut c = Capped::new((), 100);
        c.untyped = false;
        let one = typed(b'Q', 20);
        assert!(c.scan(&one[..7]).is_ok());
        assert!(c.started.is_some(), "a message on its way");
        assert!(c.scan(&one[7..]).is_ok());
        assert!(c.started.is_none(), "whole, and nothing after it");
        // Many small messages together are no large one.
        let mut c = Capped::new((), 100);
        c.untyped = false;
        let many: Vec<u8> = (0..1000).flat_map(|_| typed(b'B', 50)).collect();
        assert!(c.scan(&many).is_ok());
    }
}
