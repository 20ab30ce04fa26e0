//! `hpk8s`: turns bare GPU instances into a Kubernetes cluster.
//!
//! This binary is thin on purpose: it parses the command line, sets up
//! logging, and hands each subcommand (one module each under [`cli`]) a
//! node loaded once. All behaviour lives in the `lifecycle` library. A
//! failure prints one line, `error[<kind>]: <message>`, and exits with its
//! class's code (`docs/exit-codes.md`).

mod cli;
mod logging;

use std::process::ExitCode;

use clap::Parser;
use lifecycle::error::class::ExitClass;

fn main() -> ExitCode {
    // hpk8s runs as root and writes tokens and credentials: nothing it
    // creates is readable by others unless it says so (every file and
    // directory gets an explicit mode).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let cli = cli::Cli::parse();
    // kube's TLS and the AWS SDK's may link different rustls providers;
    // one process-wide default keeps rustls from having to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let journald = logging::init(cli.log_format);
    let output = cli.command.output();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let failure = cli::Failure::from(
                anyhow::Error::from(e).context("cannot start the async runtime"),
            );
            return failure.report(output, journald);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::Failure::from(e).report(output, journald),
    }
}

/// The exit code of a class.
fn exit_code(class: ExitClass) -> ExitCode {
    ExitCode::from(class.code())
}
