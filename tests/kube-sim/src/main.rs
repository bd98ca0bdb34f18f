//! `kube-sim --kubeconfig FILE [--port N] [--data-dir DIR] [--watch-history N]
//! [--cron-time-scale N] [--no-runner]`: serves a stand-in Kubernetes API on 127.0.0.1, and
//! runs pods on this host, until killed (SIGINT/SIGTERM). `kube-sim pod-exec SPEC` is the
//! runner's container helper (see `runner::podexec`).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: kube-sim --kubeconfig FILE [--port N] [--data-dir DIR] [--watch-history N] [--cron-time-scale N] [--no-runner]
       kube-sim pod-exec SPEC   (internal: the runner's container helper)";

fn parse() -> Result<kube_sim::Options, String> {
    let mut o = kube_sim::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--kubeconfig" => o.kubeconfig = Some(PathBuf::from(val("--kubeconfig")?)),
            "--port" => o.port = val("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--data-dir" => o.data_dir = Some(PathBuf::from(val("--data-dir")?)),
            "--watch-history" => {
                o.watch_history = Some(
                    val("--watch-history")?
                        .parse()
                        .map_err(|e| format!("--watch-history: {e}"))?,
                )
            }
            "--cron-time-scale" => {
                o.runner.cron_time_scale = val("--cron-time-scale")?
                    .parse()
                    .map_err(|e| format!("--cron-time-scale: {e}"))?
            }
            "--no-runner" => o.runner.enabled = false,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if o.kubeconfig.is_none() {
        return Err(format!("--kubeconfig is required\n{USAGE}"));
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("pod-exec") {
        match args.get(2) {
            Some(spec) => kube_sim::runner::podexec::run(std::path::Path::new(spec)),
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let sim = match kube_sim::start(opts).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kube-sim: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "kube-sim serving on {} (kubeconfig {})",
            sim.url,
            sim.kubeconfig.display()
        );
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("kube-sim: cannot watch SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        sim.shutdown().await;
        ExitCode::SUCCESS
    })
}
