use std::time::Instant;

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Before anything else, while the process has its one thread: the password leaves the
    // process environment (see `own_env`), and lives on only as a `Secret`.
    let taken = fargate_smb_mount::own_env::take_from_process();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(fargate_smb_mount::main(args, taken, started));
            // Let the blocking pool's threads end (a process that exits with them still parked
            // is killed under Wine), but do not wait long for blocking work still running: a
            // name lookup of a preflight that a stop abandoned.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            code
        }
        Err(e) => {
            eprintln!("fargate-smb-mount: could not start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}
