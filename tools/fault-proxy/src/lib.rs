//! A loopback TCP proxy that makes a link look like a real network, and breaks it on command.
//!
//! On loopback an SMB round trip takes ~20 µs, so a benchmark cannot show what a client a
//! network away from the file server sees (0.5 ms in one AZ, 1-2 ms across AZs), and no test can
//! drop a connection halfway. This proxy adds:
//! - **a one-way delay per direction**, accurate to about ±0.1 ms: tokio's timer and Python's
//!   event loop both round to 1 ms, so each direction has its own OS thread that sleeps to just
//!   short of the due time and then yields until it ([`sleep_until`]);
//! - **a bandwidth cap** (bytes per second), each chunk leaving when the link would be free;
//! - **faults**, armed for the next connections or fired at once: a TCP reset after N bytes in
//!   a direction or after a time, a stall (bytes are accepted and nothing is forwarded), and the
//!   close of one direction (a FIN toward that direction's receiver).
//!
//! Both ends must be loopback addresses: the proxy is a test tool and refuses anything else.

use socket2::SockRef;
use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Condvar, Mutex, MutexGuard, mpsc},
    thread,
    time::{Duration, Instant},
};

/// Which way bytes go: `Up` from the client to the upstream server, `Down` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::Up => 0,
            Direction::Down => 1,
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            other => Err(format!("direction {other:?}: up or down")),
        }
    }
}

/// What a fault does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Both sockets closed with SO_LINGER 0: each peer gets a TCP reset.
    Reset,
    /// Nothing more is forwarded either way; what arrives is read and held (a black hole).
    Stall,
    /// The fault's direction is half-closed: its receiver reads end of file; the other
    /// direction keeps working.
    Close,
}

/// When a fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Once this many bytes have been forwarded in the fault's direction (exactly: a chunk that
    /// crosses the mark is cut there).
    Bytes(u64),
    /// This long after the connection was accepted.
    After(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub direction: Direction,
    pub when: When,
}

impl Fault {
    /// `<reset|stall|close> <up|down> <bytes N | ms T>`.
    pub fn parse(words: &[&str]) -> Result<Self, String> {
        let [kind, direction, unit, amount] = words else {
            return Err("a fault is <reset|stall|close> <up|down> <bytes N | ms T>".into());
        };
        let kind = match *kind {
            "reset" => FaultKind::Reset,
            "stall" => FaultKind::Stall,
            "close" => FaultKind::Close,
            other => return Err(format!("fault {other:?}: reset, stall or close")),
        };
        let direction = Direction::parse(direction)?;
        let when = match *unit {
            "bytes" => When::Bytes(
                amount
                    .parse()
                    .map_err(|_| format!("bytes {amount:?}: a whole number"))?,
            ),
            "ms" => When::After(millis(amount)?),
            other => return Err(format!("{other:?}: bytes or ms")),
        };
        Ok(Self {
            kind,
            direction,
            when,
        })
    }
}

/// Milliseconds, fractions allowed ("0.25").
pub fn millis(text: &str) -> Result<Duration, String> {
    let ms: f64 = text
        .parse()
        .map_err(|_| format!("{text:?}: milliseconds, as a number"))?;
    if !(0.0..=600_000.0).contains(&ms) {
        return Err(format!("{text:?}: between 0 and 600000 ms"));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// One-way delay, client to upstream and back.
    pub delay: [Duration; 2],
    /// Bytes per second in each direction; `None`: as fast as loopback.
    pub rate: Option<u64>,
}

impl Config {
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> Self {
        Self {
            listen,
            upstream,
            delay: [Duration::ZERO; 2],
            rate: None,
        }
    }
}

/// Counters, as `stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub live: u64,
    /// Bytes forwarded up and down, over all connections.
    pub bytes: [u64; 2],
    /// Frames seen up and down, over all connections, where a frame is a 4-byte header whose
    /// low 3 bytes give the length of what follows, as SMB2 over TCP frames its messages
    /// (MS-SMB2 2.1): one compounded request is one frame. Counted as read from the source.
    pub frames: [u64; 2],
    /// Of those, the frames that are SMB2 transformed (encrypted) messages.
    pub encrypted_frames: [u64; 2],
    pub faults_fired: u64,
}

/// Counts length-prefixed frames in a byte stream fed in arbitrary pieces, and among them the
/// SMB2 transformed (encrypted) ones: a body that starts with 0xFD 'S' 'M' 'B' (MS-SMB2 2.2.41).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCounter {
    /// Bytes of the current frame's body still to come.
    body_left: usize,
    header: [u8; 4],
    header_got: usize,
    /// The first bytes of the current body, up to 4.
    magic: [u8; 4],
    magic_got: usize,
}

/// What one piece of a stream completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Frames {
    /// Frames whose header the piece completed.
    pub frames: u64,
    /// Frames whose body's first 4 bytes the piece completed, and which are transformed.
    pub encrypted: u64,
}

const TRANSFORM_MAGIC: [u8; 4] = [0xFD, b'S', b'M', b'B'];

impl FrameCounter {
    /// Feed the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Frames {
        let mut seen = Frames::default();
        while !data.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(data.len());
                let want = (4 - self.magic_got).min(take);
                if want > 0 {
                    self.magic[self.magic_got..self.magic_got + want]
                        .copy_from_slice(&data[..want]);
                    self.magic_got += want;
                    if self.magic_got == 4 && self.magic == TRANSFORM_MAGIC {
                        seen.encrypted += 1;
                    }
                }
                self.body_left -= take;
                data = &data[take..];
                continue;
            }
            let take = (4 - self.header_got).min(data.len());
            self.header[self.header_got..self.header_got + take].copy_from_slice(&data[..take]);
            self.header_got += take;
            data = &data[take..];
            if self.header_got == 4 {
                self.header_got = 0;
                self.magic_got = 0;
                self.body_left =
                    u32::from_be_bytes([0, self.header[1], self.header[2], self.header[3]])
                        as usize;
                seen.frames += 1;
            }
        }
        seen
    }
}

impl Stats {
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"accepted": {}, "live": {}, "bytes_up": {}, "bytes_down": {}, "frames_up": {}, "frames_down": {}, "encrypted_frames_up": {}, "encrypted_frames_down": {}, "faults_fired": {}}}"#,
            self.accepted,
            self.live,
            self.bytes[0],
            self.bytes[1],
            self.frames[0],
            self.frames[1],
            self.encrypted_frames[0],
            self.encrypted_frames[1],
            self.faults_fired
        )
    }
}

/// A fault waiting for the next connections.
#[derive(Debug, Clone, Copy)]
struct Armed {
    fault: Fault,
    connections: u64,
}

#[derive(Debug, Default)]
struct State {
    delay: [Duration; 2],
    rate: Option<u64>,
    armed: Vec<Armed>,
    conns: HashMap<u64, Arc<Conn>>,
    stats: Stats,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, Default)]
struct Flow {
    dead: bool,
    stalled: bool,
    closed: [bool; 2],
    forwarded: [u64; 2],
    faults: Vec<Fault>,
}

/// One proxied connection: its two sockets (for the faults) and its flow state.
#[derive(Debug)]
struct Conn {
    sockets: Mutex<Option<(TcpStream, TcpStream)>>,
    flow: Mutex<Flow>,
    wake: Condvar,
}

impl Conn {
    fn flow(&self) -> MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reset both peers: SO_LINGER 0, and the readers woken (a read shut down returns 0), so
    /// every thread lets go of its handle and the last close sends the reset.
    fn reset(&self) {
        self.flow().dead = true;
        self.wake.notify_all();
        let sockets = self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((client, upstream)) = sockets {
            for s in [&client, &upstream] {
                let _ = SockRef::from(s).set_linger(Some(Duration::ZERO));
                let _ = s.shutdown(Shutdown::Read);
            }
        }
    }

    fn set_stalled(&self, stalled: bool) {
        self.flow().stalled = stalled;
        self.wake.notify_all();
    }
}

/// A running proxy. Dropping it leaves the threads running until the process ends; tests and
/// benchmarks run one per process or per test.
#[derive(Debug, Clone)]
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
}

fn require_loopback(what: &str, addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{what} {addr} is not a loopback address: fault-proxy only runs on 127.0.0.0/8 or ::1"
            ),
        ))
    }
}

impl Proxy {
    pub fn start(config: Config) -> io::Result<Self> {
        require_loopback("the listen address", config.listen)?;
        require_loopback("the upstream address", config.upstream)?;
        let listener = TcpListener::bind(config.listen)?;
        let proxy = Self {
            addr: listener.local_addr()?,
            upstream: config.upstream,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    delay: config.delay,
                    rate: config.rate,
                    ..State::default()
                }),
            }),
        };
        let p = proxy.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || p.accept_loop(listener))?;
        Ok(proxy)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_delay(&self, up: Duration, down: Duration) {
        self.shared.lock().delay = [up, down];
    }

    pub fn set_rate(&self, rate: Option<u64>) {
        self.shared.lock().rate = rate;
    }

    /// `fault` for each of the next `connections` accepted.
    pub fn arm(&self, fault: Fault, connections: u64) {
        if connections > 0 {
            self.shared.lock().armed.push(Armed { fault, connections });
        }
    }

    pub fn disarm(&self) {
        self.shared.lock().armed.clear();
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        self.shared.lock().conns.values().cloned().collect()
    }

    /// Reset every live connection now.
    pub fn reset_all(&self) {
        for c in self.live() {
            c.reset();
            self.shared.lock().stats.faults_fired += 1;
        }
    }

    /// Stall (or resume) every live connection.
    pub fn stall_all(&self, stalled: bool) {
        for c in self.live() {
            c.set_stalled(stalled);
        }
    }

    pub fn stats(&self) -> Stats {
        let s = self.shared.lock();
        Stats {
            live: s.conns.len() as u64,
            ..s.stats
        }
    }

    fn accept_loop(&self, listener: TcpListener) {
        let mut next_id = 0u64;
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            next_id += 1;
            if let Err(e) = self.open(next_id, client) {
                eprintln!("fault-proxy: connection {next_id}: {e}");
            }
        }
    }

    fn open(&self, id: u64, client: TcpStream) -> io::Result<()> {
        let upstream = TcpStream::connect_timeout(&self.upstream, Duration::from_secs(5))?;
        // Nagle would hold small writes back by up to a round trip, on top of the delay.
        client.set_nodelay(true)?;
        upstream.set_nodelay(true)?;
        // Counted and registered at once: once `accepted` counts it, `reset` and `stall` reach it.
        let (conn, faults) = {
            let mut s = self.shared.lock();
            let faults: Vec<Fault> = s.armed.iter().map(|a| a.fault).collect();
            for a in &mut s.armed {
                a.connections -= 1;
            }
            s.armed.retain(|a| a.connections > 0);
            let conn = Arc::new(Conn {
                sockets: Mutex::new(Some((client.try_clone()?, upstream.try_clone()?))),
                flow: Mutex::new(Flow {
                    faults: faults.clone(),
                    ..Flow::default()
                }),
                wake: Condvar::new(),
            });
            s.conns.insert(id, conn.clone());
            s.stats.accepted += 1;
            (conn, faults)
        };
        for f in faults {
            if let When::After(after) = f.when {
                let (p, c) = (self.clone(), conn.clone());
                thread::Builder::new()
                    .name(format!("timer-{id}"))
                    .spawn(move || {
                        thread::sleep(after);
                        p.fire(&c, f, f.direction);
                    })?;
            }
        }
        let pumps = [
            (Direction::Up, client.try_clone()?, upstream.try_clone()?),
            (Direction::Down, upstream, client),
        ];
        let mut handles = Vec::new();
        for (dir, from, to) in pumps {
            let (p, c) = (self.clone(), conn.clone());
            handles.push(
                thread::Builder::new()
                    .name(format!("pump-{id}-{dir:?}"))
                    .spawn(move || p.pump(&c, dir, from, to))?,
            );
        }
        let shared = self.shared.clone();
        thread::Builder::new()
            .name(format!("reap-{id}"))
            .spawn(move || {
                for h in handles {
                    let _ = h.join();
                }
                shared.lock().conns.remove(&id);
            })?;
        Ok(())
    }

    fn fire(&self, conn: &Conn, fault: Fault, dir: Direction) {
        if conn.flow().dead {
            return;
        }
        self.shared.lock().stats.faults_fired += 1;
        match fault.kind {
            FaultKind::Reset => conn.reset(),
            FaultKind::Stall => conn.set_stalled(true),
            FaultKind::Close => {
                conn.flow().closed[dir.index()] = true;
                conn.wake.notify_all();
                if let Some((client, upstream)) =
                    &*conn.sockets.lock().unwrap_or_else(|e| e.into_inner())
                {
                    let receiver = match dir {
                        Direction::Up => upstream,
                        Direction::Down => client,
                    };
                    let _ = receiver.shutdown(Shutdown::Write);
                }
            }
        }
    }

    /// One direction: a reader thread stamps each chunk with its due time, this thread sends it
    /// then. Ends when the source ends (the end is passed on as a half-close), or the
    /// connection is reset.
    fn pump(&self, conn: &Conn, dir: Direction, mut from: TcpStream, mut to: TcpStream) {
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let shared = self.shared.clone();
        let reader = thread::Builder::new().spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut last_due = Instant::now();
            let mut frames = FrameCounter::default();
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let seen = frames.feed(&buf[..n]);
                let delay = {
                    let mut state = shared.lock();
                    state.stats.frames[dir.index()] += seen.frames;
                    state.stats.encrypted_frames[dir.index()] += seen.encrypted;
                    state.delay[dir.index()]
                };
                // A delay lowered on command never lets a chunk overtake an earlier one.
                let due = (Instant::now() + delay).max(last_due);
                last_due = due;
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        let mut link_free = Instant::now();
        for (due, data) in rx {
            let rate = self.shared.lock().rate;
            let start = match rate {
                Some(r) if r > 0 => {
                    let start = due.max(link_free);
                    link_free = start + Duration::from_secs_f64(data.len() as f64 / r as f64);
                    // The chunk is whole at the far end once it has been serialised.
                    link_free
                }
                _ => due,
            };
            sleep_until(start);
            if !self.forward(conn, dir, &mut to, &data) {
                break;
            }
        }
        let dead = conn.flow().dead;
        if !dead {
            let _ = to.shutdown(Shutdown::Write);
        }
        if let Ok(r) = reader {
            if dead {
                let _ = r.join();
            } else {
                // The other side may still be sending; the reader ends with its source.
                drop(r);
            }
        }
    }

    /// Write `data` unless a fault says otherwise; false once this direction is over.
    fn forward(&self, conn: &Conn, dir: Direction, to: &mut TcpStream, data: &[u8]) -> bool {
        let i = dir.index();
        let (send, fire) = {
            let mut flow = conn.flow();
            while flow.stalled && !flow.dead {
                flow = conn.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
            }
            if flow.dead {
                return false;
            }
            if flow.closed[i] {
                // Half-closed: what still arrives is dropped, as the network would.
                return true;
            }
            let before = flow.forwarded[i];
            let mut send = data.len() as u64;
            let mut fire = None;
            // The earliest mark a chunk reaches is the one that fires.
            for f in &flow.faults {
                if let When::Bytes(mark) = f.when
                    && f.direction == dir
                    && before + send >= mark
                    && fire.is_none_or(|_| mark.saturating_sub(before) < send)
                {
                    send = mark.saturating_sub(before);
                    fire = Some(*f);
                }
            }
            if let Some(f) = fire {
                flow.faults.retain(|x| *x != f);
            }
            flow.forwarded[i] += send;
            (send as usize, fire)
        };
        if send > 0 && to.write_all(&data[..send]).is_err() {
            return false;
        }
        self.shared.lock().stats.bytes[i] += send as u64;
        if let Some(f) = fire {
            if f.kind == FaultKind::Reset {
                // A close with SO_LINGER 0 discards what is still in the send queue: give the
                // receiver a moment to take the N bytes forwarded before the reset.
                thread::sleep(RESET_GRACE);
            }
            self.fire(conn, f, dir);
            if f.kind == FaultKind::Stall {
                // Hold here until resumed or reset; the rest of this chunk is not sent.
                let mut flow = conn.flow();
                while flow.stalled && !flow.dead {
                    flow = conn.wake.wait(flow).unwrap_or_else(|e| e.into_inner());
                }
                let resumed = !flow.dead;
                drop(flow);
                if resumed {
                    return to.write_all(&data[send..]).is_ok();
                }
                return false;
            }
            return f.kind != FaultKind::Reset;
        }
        true
    }

    /// Serve the control protocol on `listener`: one command a line, one answer a line.
    pub fn serve_control(&self, listener: TcpListener) {
        for stream in listener.incoming().flatten() {
            let p = self.clone();
            let _ = thread::Builder::new()
                .name("control".into())
                .spawn(move || p.control_session(stream));
        }
    }

    fn control_session(&self, stream: TcpStream) {
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let answer = match self.command(&line) {
                Ok(a) => a,
                Err(e) => format!("error: {e}"),
            };
            if writeln!(out, "{answer}").is_err() {
                return;
            }
        }
    }

    /// One control command; its answer.
    pub fn command(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stats"] => Ok(self.stats().to_json()),
            ["delay", up, down] => {
                self.set_delay(millis(up)?, millis(down)?);
                Ok("ok".into())
            }
            ["rate", "off"] => {
                self.set_rate(None);
                Ok("ok".into())
            }
            ["rate", r] => {
                let r = r
                    .parse()
                    .map_err(|_| format!("rate {r:?}: bytes per second, or off"))?;
                self.set_rate(Some(r));
                Ok("ok".into())
            }
            ["arm", rest @ ..] => {
                let (fault, count) = match rest {
                    [f @ .., n] if rest.len() == 5 => (
                        Fault::parse(f)?,
                        n.parse()
                            .map_err(|_| format!("connections {n:?}: a number"))?,
                    ),
                    f => (Fault::parse(f)?, 1),
                };
                if count == 0 {
                    return Err("connections: at least 1".into());
                }
                self.arm(fault, count);
                Ok("ok".into())
            }
            ["disarm"] => {
                self.disarm();
                Ok("ok".into())
            }
            ["reset"] => {
                self.reset_all();
                Ok("ok".into())
            }
            ["stall"] => {
                self.stall_all(true);
                Ok("ok".into())
            }
            ["resume"] => {
                self.stall_all(false);
                Ok("ok".into())
            }
            _ => Err(format!(
                "unknown command {line:?}: stats | delay <up-ms> <down-ms> | rate <bytes/s|off> | \
                 arm <reset|stall|close> <up|down> <bytes N|ms T> [connections] | disarm | reset | stall | resume"
            )),
        }
    }
}

/// The pause between the last byte before a reset mark and the reset (see [`Proxy::forward`]).
const RESET_GRACE: Duration = Duration::from_millis(20);

/// How long before the due time the thread stops sleeping and starts yielding: Linux wakes a
/// sleeping thread up to ~50 µs late (the default timer slack) and later under load.
const SPIN: Duration = Duration::from_micros(150);

/// Return at `t`, not a millisecond after: sleep to just short of it, then yield until it.
pub fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN {
            thread::sleep(left - SPIN);
        } else {
            thread::yield_now();
        }
    }
}

/// Round trips measured through a proxy to an echo server of its own.
#[derive(Debug, Clone)]
pub struct Probe {
    pub target: Duration,
    pub samples: Vec<Duration>,
}

impl Probe {
    fn at(&self, q: f64) -> Duration {
        let i = ((self.samples.len() - 1) as f64 * q).round() as usize;
        self.samples[i]
    }

    pub fn to_json(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            r#"{{"target_rtt_ms": {:.3}, "min_ms": {:.3}, "p50_ms": {:.3}, "p99_ms": {:.3}, "max_ms": {:.3}, "samples": {}}}"#,
            ms(self.target),
            ms(self.at(0.0)),
            ms(self.at(0.5)),
            ms(self.at(0.99)),
            ms(self.at(1.0)),
            self.samples.len()
        )
    }
}

/// Measure the round trip through a proxy with `delay` each way: `count` echoes of `size`
/// bytes, after a few to warm up.
pub fn probe(delay: Duration, count: usize, size: usize) -> io::Result<Probe> {
    let echo = TcpListener::bind("127.0.0.1:0")?;
    let echo_addr = echo.local_addr()?;
    thread::spawn(move || {
        for s in echo.incoming().flatten() {
            thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let Ok(mut w) = s.try_clone() else { return };
                let mut r = s;
                let _ = io::copy(&mut r, &mut w);
            });
        }
    });
    let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)), echo_addr);
    config.delay = [delay; 2];
    let proxy = Proxy::start(config)?;
    let mut s = TcpStream::connect(proxy.addr())?;
    s.set_nodelay(true)?;
    let out = vec![0x5au8; size.max(1)];
    let mut back = vec![0u8; out.len()];
    let mut samples = Vec::with_capacity(count);
    for i in 0..count + 10 {
        let t = Instant::now();
        s.write_all(&out)?;
        s.read_exact(&mut back)?;
        if i >= 10 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Ok(Probe {
        target: delay * 2,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::{FrameCounter, Frames};

    fn frame(body: &[u8], extra: usize) -> Vec<u8> {
        let len = body.len() + extra;
        let mut f = vec![0, (len >> 16) as u8, (len >> 8) as u8, len as u8];
        f.extend_from_slice(body);
        f.extend(std::iter::repeat_n(0xAB, extra));
        f
    }

    #[test]
    fn frames_are_counted_whatever_the_pieces() {
        let stream: Vec<u8> = [
            frame(&[], 0),
            frame(&[0xFD, b'S', b'M', b'B'], 70_000),
            frame(&[0xFE, b'S', b'M'], 0),
            frame(&[0xFD, b'S', b'M', b'B'], 1 << 20),
            frame(&[0xFD, b'S'], 0),
        ]
        .concat();
        for piece in [1usize, 2, 3, 5, 4096, stream.len()] {
            let mut counter = FrameCounter::default();
            let mut total = Frames::default();
            for c in stream.chunks(piece) {
                let seen = counter.feed(c);
                total.frames += seen.frames;
                total.encrypted += seen.encrypted;
            }
            assert_eq!(
                total,
                Frames {
                    frames: 5,
                    encrypted: 2
                },
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn a_header_split_at_the_end_is_not_counted_until_whole() {
        let mut counter = FrameCounter::default();
        assert_eq!(counter.feed(&[0, 0]).frames, 0);
        assert_eq!(counter.feed(&[0, 2, 9]).frames, 1);
        assert_eq!(counter.feed(&[9, 0, 0, 0]).frames, 0);
        assert_eq!(counter.feed(&[0]).frames, 1);
    }
}
