use std::time::Instant;

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(fargate_smb_mount::main(args, started));
            // Do not wait for blocking work still running (a name lookup of a preflight a stop
            // abandoned): the process is about to exit.
            runtime.shutdown_background();
            code
        }
        Err(e) => {
            eprintln!("fargate-smb-mount: could not start the async runtime: {e}");
            1
        }
    };
    std::process::exit(code);
}
