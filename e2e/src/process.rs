//! Child processes that cannot outlive the test process, with their output in a log file.
//!
//! Every child is started as `setpriv --pdeathsig KILL -- <program> <args>`: setpriv sets the
//! Linux parent-death signal and execs the program (same pid), so the kernel SIGKILLs the child
//! when its parent goes away, however the test process ends (panic, `exit`, SIGKILL). Rust runs
//! no destructors for statics such as the shared control plane, and `unsafe_code` is forbidden,
//! so `prctl` in a `pre_exec` hook is not an option.
//!
//! The "parent" of the death signal is the *thread* that forked the child. Tests run on
//! short-lived threads (libtest's, tokio's), so all children are forked by one spawner thread
//! that lives as long as the process.

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::rundir::run_dir;

/// What to run: program, arguments, environment, working directory and log file.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    current_dir: Option<PathBuf>,
    log_path: Option<PathBuf>,
}

impl ProcessSpec {
    /// A process called `name` (used for the log file and in messages) running `program`.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            current_dir: None,
            log_path: None,
        }
    }

    /// Appends one argument.
    #[must_use]
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable (the rest of the test process's environment is inherited).
    #[must_use]
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables.
    #[must_use]
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Removes an inherited environment variable (e.g. `KUBECONFIG` of the test process).
    #[must_use]
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// Runs the process in `dir`.
    #[must_use]
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// Writes stdout and stderr to `path` (default: `<run dir>/logs/<name>-<n>.log`).
    #[must_use]
    pub fn log_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_path = Some(path.into());
        self
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn command(&self, log: &File) -> Result<Command> {
        let mut command = Command::new("setpriv");
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating log file handle")?)
            .stderr(log.try_clone().context("duplicating log file handle")?);
        for key in &self.env_remove {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        Ok(command)
    }
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();

/// Spawns `command` from the process-lifetime spawner thread (see the module docs).
fn spawn_from_spawner_thread(command: Command) -> Result<Child> {
    let sender = SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("e2e-process-spawner".to_owned())
                .spawn(move || {
                    // Runs until the process exits: the sender lives in a static.
                    for mut request in rx {
                        let _ = request.reply.send(request.command.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("starting the spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (reply, response) = mpsc::channel();
    sender
        .send(SpawnRequest { command, reply })
        .map_err(|_| anyhow::anyhow!("spawner thread is gone"))?;
    let child = response.recv().context("spawner thread did not answer")?;
    child.context("spawning setpriv (util-linux) failed")
}

/// A child process of the test, SIGKILLed at the latest when the test process ends.
///
/// Its stdout and stderr go to a log file; when it is dropped during a panic (a failing test)
/// the tail of the log is printed, so a failure shows what the process said.
#[derive(Debug)]
pub struct ManagedProcess {
    spec: ProcessSpec,
    log_path: PathBuf,
    child: Option<Child>,
    exit_status: Option<ExitStatus>,
}

/// Number of log lines printed when a test fails.
const FAILURE_LOG_LINES: usize = 40;

impl ManagedProcess {
    /// Starts the process.
    pub fn start(spec: ProcessSpec) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let log_path = match &spec.log_path {
            Some(path) => path.clone(),
            None => {
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                run_dir()?
                    .join("logs")
                    .join(format!("{}-{n}.log", sanitize(&spec.name)))
            }
        };
        let mut process = Self {
            spec,
            log_path,
            child: None,
            exit_status: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<()> {
        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        writeln!(
            log,
            "### metricshard-e2e: starting {} {:?}",
            self.spec.program.display(),
            self.spec.args
        )?;
        let command = self.spec.command(&log)?;
        let child = spawn_from_spawner_thread(command).with_context(|| {
            format!(
                "starting {} ({})",
                self.spec.name,
                self.spec.program.display()
            )
        })?;
        self.child = Some(child);
        self.exit_status = None;
        Ok(())
    }

    /// Starts the process again with the same program, arguments and log file (appended to).
    /// It must have exited (see [`kill`](Self::kill), [`terminate`](Self::terminate)).
    pub fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "{} is still running; stop it before restarting",
                self.spec.name
            );
        }
        self.child = None;
        self.spawn()
    }

    /// The name given in the [`ProcessSpec`].
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The process id while it runs (or until it is reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file holding stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none() && self.child.is_some()
    }

    /// The exit status once the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.poll_exit()
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit_status = Some(status);
        }
        self.exit_status
    }

    /// Fails (with the log tail) when the process has exited: readiness waits call this so a
    /// crashed process fails the wait at once with its own words.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.poll_exit() {
            None if self.child.is_some() => Ok(()),
            status => bail!(
                "{} exited ({}); log {}:\n{}",
                self.spec.name,
                status.map_or_else(|| "never started".to_owned(), |s| s.to_string()),
                self.log_path.display(),
                self.log_tail(FAILURE_LOG_LINES)
            ),
        }
    }

    /// Sends a signal by name (`TERM`, `KILL`, `STOP`, `CONT`, `HUP`, ...) without waiting.
    pub fn signal(&mut self, signal: &str) -> Result<()> {
        if !self.is_running() {
            bail!("{} is not running", self.spec.name);
        }
        let pid = self.pid().context("no pid")?;
        let status = Command::new("kill")
            .arg("-s")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -s {signal} {pid} failed: {status}");
        }
        Ok(())
    }

    /// SIGKILLs the process and reaps it: a crash, as far as anyone else can tell.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && self.exit_status.is_none()
        {
            // Err means it already exited; wait() below reaps it either way.
            let _ = child.kill();
            self.exit_status = Some(child.wait().context("reaping killed process")?);
        }
        Ok(())
    }

    /// SIGTERMs the process and waits up to `grace` for it to exit, then SIGKILLs it.
    /// Returns the exit status (a SIGKILL shows as a signal exit).
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if self.is_running() {
            self.signal("TERM")?;
        }
        match self.wait_exit(grace) {
            Ok(status) => Ok(status),
            Err(_) => {
                self.kill()?;
                self.exit_status.context("no exit status after SIGKILL")
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Ok(status);
            }
            if self.child.is_none() {
                bail!("{} was never started", self.spec.name);
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.spec.name);
            }
            // Polling a child's exit: there is no portable blocking wait with a timeout.
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- {} (log {}), last {FAILURE_LOG_LINES} lines -----\n{}\n----- end of {} -----",
                self.spec.name,
                self.log_path.display(),
                self.log_tail(FAILURE_LOG_LINES),
                self.spec.name
            );
            crate::failure::print_recorded();
        }
        let _ = self.kill();
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_reports_exit() {
        let mut process = ManagedProcess::start(
            ProcessSpec::new("echo test", "/bin/sh").args(["-c", "echo hello; exit 3"]),
        )
        .unwrap();
        let status = process.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        assert!(process.log().contains("hello"), "{}", process.log());
        let err = process.ensure_running().unwrap_err().to_string();
        assert!(err.contains("hello"), "{err}");
    }

    #[test]
    fn terminate_and_restart() {
        let mut process =
            ManagedProcess::start(ProcessSpec::new("sleeper", "/bin/sleep").arg("600")).unwrap();
        assert!(process.is_running());
        let status = process.terminate(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
        process.restart().unwrap();
        assert!(process.is_running());
        process.kill().unwrap();
        assert!(!process.is_running());
        assert_eq!(
            process
                .log()
                .matches("### metricshard-e2e: starting")
                .count(),
            2
        );
    }

    #[test]
    fn child_dies_with_the_thread_that_is_not_its_parent() {
        // Started from a short-lived thread, the child must survive that thread: the spawner
        // thread, not the caller, is its parent.
        let mut process = std::thread::spawn(|| {
            ManagedProcess::start(ProcessSpec::new("survivor", "/bin/sleep").arg("600")).unwrap()
        })
        .join()
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            process.is_running(),
            "child died with the thread that asked for it"
        );
        process.kill().unwrap();
    }
}
