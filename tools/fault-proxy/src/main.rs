//! fault-proxy: see the library's documentation; `fault-proxy --help` for the options.

use fault_proxy::{Config, Fault, Proxy, millis, probe};
use std::{net::SocketAddr, net::TcpListener, process::ExitCode, time::Duration};

const USAGE: &str = "\
usage: fault-proxy --upstream ADDR [--listen ADDR] [--control ADDR] [--delay-ms MS]
                   [--up-ms MS] [--down-ms MS] [--rate BYTES_PER_S]
                   [--fault '<reset|stall|close> <up|down> <bytes N|ms T>' [--fault-connections K]]...
       fault-proxy probe [--delay-ms MS] [--count N] [--size BYTES]

Loopback only. Prints one line, `listening=ADDR control=ADDR`, once it accepts connections;
the control port takes one command a line (stats, delay, rate, arm, disarm, reset, stall,
resume). A --fault applies to each of the next K connections (default 1).
`probe` measures the round trip through a proxy of its own and prints it as JSON.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fault-proxy: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn value<'a>(args: &'a [String], i: &mut usize, flag: &str) -> Result<&'a str, String> {
    *i += 1;
    args.get(*i)
        .map(String::as_str)
        .ok_or_else(|| format!("{flag} needs a value"))
}

fn addr(text: &str, flag: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{flag} {text:?}: an address as 127.0.0.1:445"))
}

fn run(args: &[String]) -> Result<(), String> {
    if args.first().map(String::as_str) == Some("probe") {
        return run_probe(&args[1..]);
    }
    let mut listen = addr("127.0.0.1:0", "--listen")?;
    let mut control = addr("127.0.0.1:0", "--control")?;
    let mut upstream = None;
    let mut delay = [Duration::ZERO; 2];
    let mut rate = None;
    let mut faults: Vec<(Fault, u64)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        match flag {
            "--listen" => listen = addr(value(args, &mut i, flag)?, flag)?,
            "--control" => control = addr(value(args, &mut i, flag)?, flag)?,
            "--upstream" => upstream = Some(addr(value(args, &mut i, flag)?, flag)?),
            "--delay-ms" => delay = [millis(value(args, &mut i, flag)?)?; 2],
            "--up-ms" => delay[0] = millis(value(args, &mut i, flag)?)?,
            "--down-ms" => delay[1] = millis(value(args, &mut i, flag)?)?,
            "--rate" => {
                let v = value(args, &mut i, flag)?;
                rate = Some(
                    v.parse()
                        .map_err(|_| format!("--rate {v:?}: bytes per second"))?,
                );
            }
            "--fault" => {
                let v = value(args, &mut i, flag)?;
                let words: Vec<&str> = v.split_whitespace().collect();
                faults.push((Fault::parse(&words)?, 1));
            }
            "--fault-connections" => {
                let v = value(args, &mut i, flag)?;
                let n = v
                    .parse()
                    .map_err(|_| format!("--fault-connections {v:?}: a number"))?;
                let last = faults
                    .last_mut()
                    .ok_or("--fault-connections follows the --fault it counts")?;
                last.1 = n;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
        i += 1;
    }
    let upstream = upstream.ok_or("--upstream is required")?;
    let mut config = Config::new(listen, upstream);
    config.delay = delay;
    config.rate = rate;
    let proxy = Proxy::start(config).map_err(|e| e.to_string())?;
    for (fault, n) in faults {
        proxy.arm(fault, n);
    }
    if !control.ip().is_loopback() {
        return Err(format!("--control {control}: a loopback address"));
    }
    let control = TcpListener::bind(control).map_err(|e| format!("--control: {e}"))?;
    let control_addr = control.local_addr().map_err(|e| e.to_string())?;
    println!("listening={} control={control_addr}", proxy.addr());
    proxy.serve_control(control);
    Ok(())
}

fn run_probe(args: &[String]) -> Result<(), String> {
    let (mut delay, mut count, mut size) = (Duration::ZERO, 1000usize, 64usize);
    let mut i = 0;
    while i < args.len() {
        let flag = args[i].as_str();
        let v = value(args, &mut i, flag)?;
        let number = || {
            v.parse::<usize>()
                .map_err(|_| format!("{flag} {v:?}: a number"))
        };
        match flag {
            "--delay-ms" => delay = millis(v)?,
            "--count" => count = number()?.max(1),
            "--size" => size = number()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
        i += 1;
    }
    let p = probe(delay, count, size).map_err(|e| format!("probe: {e}"))?;
    println!("{}", p.to_json());
    Ok(())
}
