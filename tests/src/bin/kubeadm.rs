//! The kubeadm stand-in for tests (see `harness::kubeadm_stand_in`): never
//! shipped, found through env `HPK8S_FAKE_KUBEADM`.

use harness::kubeadm_stand_in::commands::{self, Failure};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // Both ring and aws-lc-rs are linked into this crate: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match commands::run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<Failure>() {
                Some(f) => eprintln!("{f}"),
                None => eprintln!("error: {e:#}"),
            }
            eprintln!("To see the stack trace of this error execute with --v=5 or higher");
            std::process::ExitCode::FAILURE
        }
    }
}
