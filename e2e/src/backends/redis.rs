//! Redis with AOF persistence, restartable on the same port and data directory.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::{READY_TIMEOUT, data_dir, path_str};
use crate::ports::free_port;
use crate::process::{ManagedProcess, ProcessSpec};
use crate::wait::{Outcome, wait_for};

/// A `redis-server` on a free loopback port with `appendonly yes` and `appendfsync everysec`.
///
/// [`kill`](Self::kill) is a crash (SIGKILL: the last second of writes may be lost, as in
/// production); [`stop`](Self::stop) is a clean shutdown; [`restart`](Self::restart) brings it
/// back on the same port with the same data directory, so it recovers from its AOF.
#[derive(Debug)]
pub struct Redis {
    process: ManagedProcess,
    port: u16,
    // Declared after `process`: dropped (removed) after the server is killed.
    data_dir: tempfile::TempDir,
}

impl Redis {
    /// Starts Redis and waits until it answers `PING`.
    pub async fn start() -> Result<Self> {
        let data_dir = data_dir("redis")?;
        let port = free_port()?;
        let process = ManagedProcess::start(
            ProcessSpec::new("redis-server", "redis-server")
                .arg("--bind")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string())
                .arg("--dir")
                .arg(path_str(data_dir.path()))
                .arg("--appendonly")
                .arg("yes")
                .arg("--appendfsync")
                .arg("everysec")
                // AOF only: no RDB snapshots behind the test's back.
                .arg("--save")
                .arg("")
                .arg("--daemonize")
                .arg("no")
                .arg("--protected-mode")
                .arg("no")
                .log_path(data_dir.path().join("redis.log")),
        )?;
        let mut redis = Self {
            process,
            port,
            data_dir,
        };
        redis.wait_ready().await?;
        Ok(redis)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        let process = &mut self.process;
        wait_for(
            &format!("redis on port {port} to answer PING"),
            READY_TIMEOUT,
            || {
                let running = process.ensure_running();
                async move {
                    running?;
                    // While loading the AOF, Redis answers -LOADING.
                    let reply = command_at(port, &["PING"]).await?;
                    anyhow::Ok(
                        Outcome::ready_if(reply == RespValue::Simple("PONG".to_owned()), reply)
                            .map_ready(),
                    )
                }
            },
        )
        .await
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory (holds `appendonlydir/`).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The server process (log, pid, signals).
    pub fn process(&mut self) -> &mut ManagedProcess {
        &mut self.process
    }

    /// SIGKILLs the server: a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.process.kill()
    }

    /// Stops the server cleanly (SIGTERM: Redis fsyncs the AOF and exits).
    pub fn stop(&mut self) -> Result<()> {
        let status = self.process.terminate(Duration::from_secs(30))?;
        if !status.success() {
            bail!("redis-server did not shut down cleanly: {status}");
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// runs) and waits until it has loaded its AOF and answers `PING`.
    pub async fn restart(&mut self) -> Result<()> {
        if self.process.is_running() {
            self.stop()?;
        }
        self.process.restart()?;
        self.wait_ready().await
    }

    /// Runs one command and returns the reply (`-ERR` replies are `RespValue::Error`, not `Err`).
    pub async fn command(&self, args: &[&str]) -> Result<RespValue> {
        command_at(self.port, args).await
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n ...`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n ...`; `None` for the null array.
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    /// The integer of an `Integer` reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Self::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// A bulk or simple string reply as text.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Self::Simple(s) => Some(s.clone()),
            Self::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

async fn command_at(port: u16, args: &[&str]) -> Result<RespValue> {
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .context("connecting to redis timed out")??;
    let mut stream = BufReader::new(stream);
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    stream.get_mut().write_all(&request).await?;
    tokio::time::timeout(Duration::from_secs(30), read_value(&mut stream))
        .await
        .context("redis reply timed out")?
}

async fn read_value(stream: &mut BufReader<TcpStream>) -> Result<RespValue> {
    // Iterative over arrays would be nicer; replies in tests are shallow, so recursion via
    // Box::pin is fine.
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        bail!("redis closed the connection");
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1.min(line.len()));
    match kind {
        "+" => Ok(RespValue::Simple(rest.to_owned())),
        "-" => Ok(RespValue::Error(rest.to_owned())),
        ":" => Ok(RespValue::Integer(rest.parse()?)),
        "$" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                return Ok(RespValue::Bulk(None));
            }
            let mut data = vec![0; usize::try_from(len)? + 2];
            stream.read_exact(&mut data).await?;
            data.truncate(data.len() - 2);
            Ok(RespValue::Bulk(Some(data)))
        }
        "*" => {
            let len: i64 = rest.parse()?;
            if len < 0 {
                return Ok(RespValue::Array(None));
            }
            let mut items = Vec::new();
            for _ in 0..len {
                items.push(Box::pin(read_value(stream)).await?);
            }
            Ok(RespValue::Array(Some(items)))
        }
        _ => bail!("unexpected redis reply line {line:?}"),
    }
}
