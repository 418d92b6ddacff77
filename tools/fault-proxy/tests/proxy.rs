//! The proxy against real sockets on loopback: what it forwards, and what each fault does to
//! each peer.

// Helpers of a test: a setup step that fails is the test failing, and `expect` says which.
#![allow(clippy::expect_used)]

use fault_proxy::{Config, Direction, Fault, FaultKind, Proxy, When};
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// An upstream server: each connection's stream is handed to the test.
fn upstream() -> (SocketAddr, mpsc::Receiver<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            if tx.send(s).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

fn proxy(up: SocketAddr) -> Proxy {
    Proxy::start(Config::new("127.0.0.1:0".parse().expect("addr"), up)).expect("start")
}

fn accepted(rx: &mpsc::Receiver<TcpStream>) -> TcpStream {
    let s = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("upstream accepted");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Until the proxy has taken `n` connections in all (the upstream may accept a connection a
/// moment before the proxy has registered it).
fn wait_accepted(p: &Proxy, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats().accepted < n {
        assert!(
            Instant::now() < deadline,
            "the proxy never took connection {n}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

fn connect(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(p.addr()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Everything until end of file or an error: the bytes, and the error's kind.
fn read_all(s: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e.kind())),
        }
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn forwards_both_ways_unchanged_and_passes_a_half_close_on() {
    let (up, rx) = upstream();
    let p = proxy(up);
    let mut c = connect(&p);
    let mut s = accepted(&rx);
    let data = pattern(3 * 1024 * 1024 + 17);
    let writer = {
        let mut c = c.try_clone().expect("clone");
        let data = data.clone();
        thread::spawn(move || {
            c.write_all(&data).expect("write");
            c.shutdown(Shutdown::Write).expect("shutdown");
        })
    };
    let (got, err) = read_all(&mut s);
    writer.join().expect("writer");
    assert_eq!(err, None, "the upstream reads to end of file");
    assert!(
        got == data,
        "{} bytes forwarded of {}",
        got.len(),
        data.len()
    );
    // The other direction still works after the client's half-close.
    s.write_all(b"answer").expect("answer");
    s.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut c), (b"answer".to_vec(), None));
    let stats = p.stats();
    assert_eq!(stats.bytes, [data.len() as u64, 6]);
    assert_eq!(stats.accepted, 1);
}

#[test]
fn a_reset_after_n_bytes_forwards_exactly_n_then_resets_both_peers() {
    let (up, rx) = upstream();
    let p = proxy(up);
    p.arm(
        Fault {
            kind: FaultKind::Reset,
            direction: Direction::Up,
            when: When::Bytes(100_000),
        },
        1,
    );
    let mut c = connect(&p);
    let mut s = accepted(&rx);
    let mut writer = c.try_clone().expect("clone");
    let sender = thread::spawn(move || {
        let data = pattern(1024 * 1024);
        // Fails once the reset arrives.
        writer.write_all(&data).err().map(|e| e.kind())
    });
    let (got, err) = read_all(&mut s);
    assert_eq!(got.len(), 100_000);
    assert!(got == pattern(100_000));
    assert_eq!(
        err,
        Some(ErrorKind::ConnectionReset),
        "the upstream sees a reset"
    );
    // The client's socket reports the reset once: to whichever of its reader and its writer
    // asks first (the other then sees the end of the stream or a broken pipe).
    let (_, read_err) = read_all(&mut c);
    let write_err = sender.join().expect("sender");
    assert!(
        read_err == Some(ErrorKind::ConnectionReset)
            || write_err == Some(ErrorKind::ConnectionReset),
        "the client sees a reset: read {read_err:?}, write {write_err:?}"
    );
    assert_eq!(p.stats().faults_fired, 1);

    // The fault was armed for one connection: the next one is clean.
    let mut c2 = connect(&p);
    let mut s2 = accepted(&rx);
    c2.write_all(&pattern(200_000)).expect("write");
    c2.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut s2), (pattern(200_000), None));
}

#[test]
fn a_reset_at_a_time_and_a_reset_on_command() {
    let (up, rx) = upstream();
    let p = proxy(up);
    p.arm(
        Fault {
            kind: FaultKind::Reset,
            direction: Direction::Down,
            when: When::After(Duration::from_millis(50)),
        },
        1,
    );
    let mut c = connect(&p);
    let _s = accepted(&rx);
    let started = Instant::now();
    assert_eq!(read_all(&mut c).1, Some(ErrorKind::ConnectionReset));
    assert!(started.elapsed() >= Duration::from_millis(40));

    let mut c2 = connect(&p);
    let mut s2 = accepted(&rx);
    wait_accepted(&p, 2);
    assert_eq!(p.command("reset"), Ok("ok".into()));
    assert_eq!(read_all(&mut c2).1, Some(ErrorKind::ConnectionReset));
    assert_eq!(read_all(&mut s2).1, Some(ErrorKind::ConnectionReset));
}

#[test]
fn a_stall_forwards_nothing_until_resumed() {
    let (up, rx) = upstream();
    let p = proxy(up);
    p.arm(
        Fault {
            kind: FaultKind::Stall,
            direction: Direction::Up,
            when: When::Bytes(10),
        },
        1,
    );
    let mut c = connect(&p);
    let mut s = accepted(&rx);
    c.write_all(&pattern(1000)).expect("write");
    let mut first = [0u8; 10];
    s.read_exact(&mut first).expect("the bytes before the mark");
    assert_eq!(first.to_vec(), pattern(10));
    // Accepted from the client, held: the upstream reads nothing more, the other way neither.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut more = [0u8; 1];
    let e = s
        .read(&mut more)
        .expect_err("nothing forwarded while stalled");
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    s.write_all(b"x").expect("write down");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(
        c.read(&mut more).is_err(),
        "nothing forwarded down while stalled"
    );
    assert_eq!(p.command("resume"), Ok("ok".into()));
    c.shutdown(Shutdown::Write).expect("shutdown");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (rest, err) = read_all(&mut s);
    assert_eq!((rest, err), (pattern(1000)[10..].to_vec(), None));
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    c.read_exact(&mut more)
        .expect("the held byte, after resume");
    assert_eq!(&more, b"x");
}

#[test]
fn a_close_of_one_direction_ends_it_and_leaves_the_other() {
    let (up, rx) = upstream();
    let p = proxy(up);
    p.arm(
        Fault {
            kind: FaultKind::Close,
            direction: Direction::Down,
            when: When::Bytes(5),
        },
        1,
    );
    let mut c = connect(&p);
    let mut s = accepted(&rx);
    s.write_all(b"hello, and more").expect("write");
    assert_eq!(read_all(&mut c), (b"hello".to_vec(), None));
    c.write_all(b"still up").expect("write up");
    c.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(read_all(&mut s), (b"still up".to_vec(), None));
}

#[test]
fn the_delay_holds_each_direction_back() {
    let (up, rx) = upstream();
    let mut config = Config::new("127.0.0.1:0".parse().expect("addr"), up);
    config.delay = [Duration::from_millis(20), Duration::from_millis(30)];
    let p = Proxy::start(config).expect("start");
    let mut c = connect(&p);
    let mut s = accepted(&rx);
    let t = Instant::now();
    c.write_all(b"ping").expect("write");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).expect("read");
    let up_took = t.elapsed();
    s.write_all(b"pong").expect("write");
    c.read_exact(&mut buf).expect("read");
    // Lower bounds only: a delivery before the due time is a bug, a late one only load.
    assert!(up_took >= Duration::from_millis(20), "{up_took:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn only_loopback_addresses() {
    let e = Proxy::start(Config::new(
        "127.0.0.1:0".parse().expect("addr"),
        "192.0.2.1:445".parse().expect("addr"),
    ))
    .expect_err("refused");
    assert!(e.to_string().contains("not a loopback address"), "{e}");
}

#[test]
fn control_commands_are_checked() {
    let (up, _rx) = upstream();
    let p = proxy(up);
    assert_eq!(p.command("arm reset up bytes 10 3"), Ok("ok".into()));
    assert_eq!(p.command("arm stall down ms 2.5"), Ok("ok".into()));
    assert_eq!(p.command("delay 0.25 0.25"), Ok("ok".into()));
    assert_eq!(p.command("rate 1000000"), Ok("ok".into()));
    assert_eq!(p.command("disarm"), Ok("ok".into()));
    for bad in [
        "arm reset sideways bytes 1",
        "arm explode up bytes 1",
        "delay x 1",
        "rate fast",
        "frobnicate",
    ] {
        assert!(p.command(bad).is_err(), "{bad}");
    }
    assert!(
        p.command("stats")
            .expect("stats")
            .contains("\"accepted\": 0")
    );
}

#[test]
fn a_reset_reaches_a_writer_blocked_on_a_peer_that_does_not_read() {
    let (up, rx) = upstream();
    let p = proxy(up);
    let c = connect(&p);
    let mut s = accepted(&rx);
    wait_accepted(&p, 1);
    // The client reads nothing: the proxy takes all the server sends, and its writer towards
    // the client blocks once the socket buffers between them are full.
    let total = 32 << 20;
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..total >> 20 {
        s.write_all(&chunk)
            .expect("the proxy takes what the server sends");
    }
    let mut forwarded = p.stats().bytes[1];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        thread::sleep(Duration::from_millis(300));
        let now = p.stats().bytes[1];
        if now == forwarded {
            break;
        }
        forwarded = now;
        assert!(Instant::now() < deadline, "the writer never blocked");
    }
    assert!(
        forwarded < total,
        "everything reached the client: the writer never blocked, the test proves nothing"
    );
    assert_eq!(p.command("reset"), Ok("ok".into()));
    // The blocked writer lets go of its socket (the reset's shutdown wakes it; checked, since a
    // writer that stayed blocked would hold the connection, and the reset, for good), so the
    // proxy forgets the connection and the server sees the reset.
    let deadline = Instant::now() + Duration::from_secs(5);
    while p.stats().live > 0 {
        assert!(
            Instant::now() < deadline,
            "the connection stayed live after a reset"
        );
        thread::sleep(Duration::from_millis(10));
    }
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(read_all(&mut s).1, Some(ErrorKind::ConnectionReset));
    drop(c);
}
