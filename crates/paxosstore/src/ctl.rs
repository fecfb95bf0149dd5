//! `paxosstore ctl`: operator commands over the admin HTTP port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum CtlCmd {
    /// Print the cluster as one node sees it; exit 1 when no majority is reachable.
    Status {
        /// The node's admin address (host:port).
        #[arg(long)]
        addr: String,
    },
}

pub fn run(cmd: CtlCmd) -> ExitCode {
    match cmd {
        CtlCmd::Status { addr } => status(&addr),
    }
}

fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("{addr}: {e}"))?;
    match body.split_once("\r\n\r\n") {
        Some((_, b)) => Ok(b.to_string()),
        None => Err(format!("{addr}: malformed HTTP response")),
    }
}

/// Pull `"key":value` out of flat JSON (our own, known shape).
fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat)? + pat.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

fn status(addr: &str) -> ExitCode {
    let body = match http_get(addr, "/status.json") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("paxosstore ctl: {e}");
            return ExitCode::from(1);
        }
    };
    let majority = field(&body, "majority_reachable") == Some("true");
    println!(
        "node {}  uptime {}s  clients {}  majority reachable: {}",
        field(&body, "id").unwrap_or("?"),
        field(&body, "uptime_s").unwrap_or("?"),
        field(&body, "clients").unwrap_or("?"),
        if majority { "yes" } else { "NO" }
    );
    println!("{:<8} {:<24} STATE", "MEMBER", "PEER ADDRESS");
    if let Some(members) = body.split_once("\"members\":[").map(|(_, m)| m) {
        for m in members.split("},{") {
            println!(
                "{:<8} {:<24} {}",
                field(m, "id").unwrap_or("?"),
                field(m, "peer").unwrap_or("?"),
                field(m, "state")
                    .unwrap_or("?")
                    .trim_end_matches([']', '}'])
            );
        }
    }
    if majority {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
