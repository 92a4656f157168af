//! A TCP proxy in front of a dependency (a database, a broker, a mail server, a vendor) that
//! injects the faults networks and failing servers produce, so a connector's tests can check
//! that it retries, lets everything else flow, and catches up once the fault is healed.
//! Threads of its own, so it works under any test runtime.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the proxy does to the traffic while a fault is injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// The dependency is down: new connections are reset as they arrive and open ones closed.
    Refuse = 1,
    /// Connections are reset (TCP RST) at once and at their next byte: a link that drops
    /// connections mid-stream.
    Reset = 2,
    /// Bytes are held, neither forwarded nor refused: a partition. A client notices only by
    /// its own timeouts. Bytes still held when the fault is healed go on, as TCP would
    /// retransmit them.
    Blackhole = 3,
    /// Bytes go on in 256-byte pieces 1 ms apart, about 200 KB/s each way (a 2 Mbit/s link).
    Slow = 4,
    /// A connection forwards half of its next read and is then closed: a peer that dies in
    /// the middle of a write.
    Partial = 5,
}

impl Fault {
    /// Every fault, in the order the fault tests inject them.
    pub const ALL: [Fault; 5] = [
        Fault::Refuse,
        Fault::Reset,
        Fault::Blackhole,
        Fault::Partial,
        Fault::Slow,
    ];

    /// Whether a client that waits long enough gets through: only a slow link lets
    /// requests succeed while it lasts.
    pub fn lets_through(self) -> bool {
        self == Fault::Slow
    }

    fn from_u8(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u8 == n)
    }
}

/// `mode` when no fault is injected.
const PASS: u8 = 0;

/// A TCP proxy on a loopback port; see the module docs.
#[derive(Debug)]
pub struct Proxy {
    /// The loopback port to connect to instead of the dependency's.
    pub port: u16,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// [`PASS`] or a [`Fault`].
    mode: AtomicU8,
    /// Connections and reads a fault acted on.
    injected: AtomicU64,
    /// Connections accepted, faulted or not.
    accepted: AtomicU64,
    open: Mutex<Vec<Weak<Conn>>>,
}

/// One proxied connection; its sockets close when both directions' pumps have let go.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// Reset: the pumps must not half-close (FIN) before the RST.
    aborted: AtomicBool,
}

impl Conn {
    /// Closes both ends (FIN).
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    /// Resets both ends: with a zero linger the last close sends RST, and shutting down
    /// the read sides wakes the pumps so that they let go.
    fn reset(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        for s in [&self.client, &self.server] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
            let _ = s.shutdown(Shutdown::Read);
        }
    }
}

impl Proxy {
    /// Forwards a new loopback port to `target` (`host:port`).
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let shared = Arc::new(Shared::default());
        let (accepting, target) = (Arc::clone(&shared), target.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                accepting.accepted.fetch_add(1, Ordering::Relaxed);
                if accepting.mode.load(Ordering::SeqCst) == Fault::Refuse as u8 {
                    accepting.injected.fetch_add(1, Ordering::Relaxed);
                    let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let conn = Arc::new(Conn {
                    client,
                    server,
                    aborted: AtomicBool::new(false),
                });
                {
                    let mut open = accepting.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.retain(|c| c.strong_count() > 0);
                    open.push(Arc::downgrade(&conn));
                }
                for to_server in [true, false] {
                    let (conn, shared) = (Arc::clone(&conn), Arc::clone(&accepting));
                    std::thread::spawn(move || pump(&conn, to_server, &shared));
                }
            }
        });
        Self { port, shared }
    }

    /// Injects `fault` from now until [`Proxy::heal`] or another fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.mode.store(fault as u8, Ordering::SeqCst);
        let act: fn(&Conn) = match fault {
            Fault::Refuse => Conn::close,
            Fault::Reset => Conn::reset,
            _ => return,
        };
        let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        for conn in open.iter().filter_map(Weak::upgrade) {
            self.shared.injected.fetch_add(1, Ordering::Relaxed);
            act(&conn);
        }
    }

    /// Forwards everything again.
    pub fn heal(&self) {
        self.shared.mode.store(PASS, Ordering::SeqCst);
    }

    /// [`Fault::Refuse`]: the dependency goes away.
    pub fn cut(&self) {
        self.inject(Fault::Refuse);
    }

    /// [`Proxy::heal`]: the dependency is back.
    pub fn restore(&self) {
        self.heal();
    }

    /// How many connections clients have opened so far. Behind a blackhole, where nothing
    /// is acted on until it heals, a new one shows that a client gave up and tried again.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// How many connections and reads a fault has acted on so far.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::Relaxed)
    }
}

/// Copies one direction of `conn` under whatever fault is injected at each read.
fn pump(conn: &Conn, to_server: bool, shared: &Shared) {
    let (mut from, mut to) = if to_server {
        (&conn.client, &conn.server)
    } else {
        (&conn.server, &conn.client)
    };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mode = loop {
            let mode = shared.mode.load(Ordering::SeqCst);
            if mode != Fault::Blackhole as u8 {
                break mode;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Some(fault) = Fault::from_u8(mode) else {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        };
        shared.injected.fetch_add(1, Ordering::Relaxed);
        match fault {
            Fault::Slow => {
                let sent = buf[..n].chunks(256).all(|piece| {
                    std::thread::sleep(Duration::from_millis(1));
                    to.write_all(piece).is_ok()
                });
                if !sent {
                    break;
                }
            }
            Fault::Partial => {
                let _ = to.write_all(&buf[..n / 2]);
                conn.close();
                break;
            }
            Fault::Reset => {
                conn.reset();
                break;
            }
            Fault::Refuse | Fault::Blackhole => {
                conn.close();
                break;
            }
        }
    }
    if !conn.aborted.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn round_trip(port: u16, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn each_fault_breaks_what_it_should_and_healing_restores_it() {
        let proxy = Proxy::start(&echo());
        let msg = vec![7u8; 2000];
        assert_eq!(round_trip(proxy.port, &msg).unwrap(), msg);

        proxy.inject(Fault::Slow);
        assert_eq!(
            round_trip(proxy.port, &msg).unwrap(),
            msg,
            "slow gets there"
        );

        for fault in [Fault::Refuse, Fault::Reset, Fault::Partial] {
            proxy.inject(fault);
            assert!(
                round_trip(proxy.port, &msg).is_err(),
                "{fault:?} lets through"
            );
        }

        // A partition holds the bytes: the read times out, and they arrive once healed.
        proxy.inject(Fault::Blackhole);
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s.write_all(b"held").unwrap();
        let mut back = [0u8; 4];
        assert!(
            s.read_exact(&mut back).is_err(),
            "nothing through a blackhole"
        );
        proxy.heal();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"held");

        assert_eq!(round_trip(proxy.port, &msg).unwrap(), msg);
        assert!(proxy.injected() >= 5, "{}", proxy.injected());
    }

    #[test]
    fn a_reset_is_a_reset_not_an_orderly_close() {
        let proxy = Proxy::start(&echo());
        let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        s.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        proxy.inject(Fault::Reset);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let err = s.read(&mut one).and_then(|n| {
            // A FIN would read as 0; the RST may arrive only after it is provoked by a write.
            if n == 0 {
                s.write_all(b"y")?;
                s.read(&mut one)
            } else {
                Ok(n)
            }
        });
        assert!(
            matches!(&err, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{err:?}"
        );
    }
}
