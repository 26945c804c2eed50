//! Running kubectl against the test cluster.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::AsyncWriteExt as _;

/// How long one kubectl invocation may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);

/// A kubectl invocation being built: `cluster.kubectl().args(["get", "ns"]).run_ok().await`.
#[derive(Debug, Clone)]
pub struct Kubectl {
    program: PathBuf,
    kubeconfig: OsString,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
}

/// What a kubectl invocation did.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl KubectlOutput {
    /// Whether kubectl exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl std::fmt::Display for KubectlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl Kubectl {
    /// kubectl `program` with `KUBECONFIG=kubeconfig`.
    pub fn new(program: &Path, kubeconfig: &OsStr) -> Self {
        Self {
            program: program.to_path_buf(),
            kubeconfig: kubeconfig.to_owned(),
            args: Vec::new(),
            stdin: None,
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

    /// Feeds `input` on standard input (e.g. for `apply -f -`).
    #[must_use]
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs kubectl; a non-zero exit is not an error here (see [`run_ok`](Self::run_ok)).
    pub async fn run(self) -> Result<KubectlOutput> {
        let command_line = std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {command_line}"))?;
        if let Some(input) = self.stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(&input)
                .await
                .context("writing kubectl stdin")?;
            drop(pipe);
        }
        let output = tokio::time::timeout(KUBECTL_TIMEOUT, child.wait_with_output())
            .await
            .with_context(|| {
                format!("`{command_line}` did not finish within {KUBECTL_TIMEOUT:?}")
            })??;
        Ok(KubectlOutput {
            command: command_line,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// Runs kubectl and fails (with its output) unless it exits 0.
    pub async fn run_ok(self) -> Result<KubectlOutput> {
        let output = self.run().await?;
        if !output.success() {
            bail!("{output}");
        }
        Ok(output)
    }
}
