//! `dockless login` and `dockless logout`, as docker's.

use crate::build_cli::check_ca_certs;
use crate::{usage, Failure, EXIT_REGISTRY};
use clap::Args;
use dockless::remote;
use std::path::PathBuf;

#[derive(Args)]
pub struct LoginArgs {
    /// Registry host[:port].
    registry: String,
    #[arg(short = 'u', long)]
    username: String,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Password on the command line (visible to other users; prefer --password-stdin).
    #[arg(short = 'p', long, conflicts_with = "password_stdin")]
    password: Option<String>,
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_certs: Vec<PathBuf>,
    #[arg(long)]
    insecure: bool,
}

pub fn run_login(args: LoginArgs) -> Result<(), Failure> {
    check_ca_certs(&args.ca_certs)?;
    let password = match (&args.password, args.password_stdin) {
        (Some(p), _) => {
            eprintln!("warning: --password is visible to other users; prefer --password-stdin");
            p.clone()
        }
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return Err(usage(anyhow::anyhow!(
                    "--password-stdin: no password on stdin"
                )));
            }
            password.to_string()
        }
        (None, false) => {
            return Err(usage(anyhow::anyhow!(
                "give the password with --password-stdin"
            )))
        }
    };
    let opts = remote::Options {
        ca_certs: args.ca_certs.clone(),
        ..remote::Options::default()
    };
    let opts = if args.insecure {
        opts.insecure(&args.registry)
    } else {
        opts
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime
        .block_on(remote::login(
            &args.registry,
            &args.username,
            &password,
            &opts,
        ))
        .map_err(|e| Failure {
            code: EXIT_REGISTRY,
            error: e.into(),
        })?;
    eprintln!("Login Succeeded");
    Ok(())
}

pub fn run_logout(registry: &str) -> Result<(), Failure> {
    let removed = remote::remove_credential(registry).map_err(|e| Failure {
        code: EXIT_REGISTRY,
        error: e.into(),
    })?;
    match removed {
        true => eprintln!("Removing login credentials for {registry}"),
        false => eprintln!("Not logged in to {registry}"),
    }
    Ok(())
}
