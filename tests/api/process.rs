//! The server binary as a child process, as an operator runs it: for the
//! tests that kill it or measure its memory. `CONVERSATIONS_BIN` picks the
//! binary (CI points it at the release build); otherwise the test build's.

use std::{process::Stdio, time::Duration};

use conversations::store::Location;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub struct Server {
    pub child: Child,
    pub addr: String,
}

pub fn binary() -> String {
    std::env::var("CONVERSATIONS_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_conversations").to_owned())
}

/// Starts the binary on `database`; returns it, its address and (on a new
/// database) the agent key it printed.
pub async fn serve(database: &Location) -> (Server, Option<String>) {
    let argument: std::ffi::OsString = match database {
        Location::File(path) => path.into(),
        Location::Postgres(url) => url.into(),
    };
    let mut child = Command::new(binary())
        .args(["--database"])
        .arg(argument)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    let (addr, key) = announcement(&mut child).await;
    (Server { child, addr }, key)
}

/// Reads a starting server's stdout up to the line that says where it
/// listens: that address, and the agent key it printed before (a new
/// database's).
pub async fn announcement(child: &mut Child) -> (String, Option<String>) {
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut key = None;
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the server starts within 30 s")
            .expect("read stdout")
            .expect("the server printed its address");
        if let Some(k) = line.strip_prefix("agent key: ") {
            key = Some(k.trim().to_owned());
        }
        if let Some(addr) = line.strip_prefix("Listening on ") {
            return (addr.trim().to_owned(), key);
        }
    }
}

/// `message` with `authorization: Bearer <key>`, for plain generated
/// clients.
pub fn authorized<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("metadata"),
    );
    request
}

impl Server {
    /// The server's resident memory, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}
