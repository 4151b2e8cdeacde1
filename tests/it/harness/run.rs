//! Running the postrelay binary: a small builder ([`Cmd`]) and the finished run
//! ([`Run`]) with assertions on exit code and output. Every run, however it was
//! started, checks that no canary password reached stdout or stderr.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

use super::host::reachable_by_others;
use super::{CANARY, CANARY_FILE, CANARY2, NOBODY, skip_or_fail};

/// A postrelay command line being built.
pub struct Cmd {
    cmd: Command,
}

impl Cmd {
    /// `postrelay ARGS`; apply gets `--no-syslog`: the tests write nothing to the
    /// system's log (apply's audit line would go there through postlog).
    pub fn new(args: &[&str]) -> Cmd {
        let mut c = Cmd::with_audit(args);
        if args.first() == Some(&"apply") {
            c.args(&["--no-syslog"]);
        }
        c
    }

    /// `postrelay ARGS` as given: apply records in the mail log of the config dir's
    /// main.cf, which must send it to a file of the test's own ([`Host::with_maillog`],
    /// an `Instance`).
    ///
    /// [`Host::with_maillog`]: super::Host::with_maillog
    pub fn with_audit(args: &[&str]) -> Cmd {
        let mut cmd = Command::cargo_bin("postrelay").unwrap();
        cmd.args(args);
        cmd.env_remove("RUST_LOG");
        cmd.env_remove("POSTRELAY_FAILPOINT");
        cmd.stdin(Stdio::null());
        Cmd { cmd }
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.cmd.args(args);
        self
    }

    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.cmd.env(k, v);
        self
    }

    /// At the highest verbosity: `-vvv` and `RUST_LOG=trace`.
    pub fn loud(&mut self) -> &mut Self {
        self.args(&["-vvv"]).env("RUST_LOG", "trace")
    }

    pub fn run(&mut self) -> Run {
        Run::from_output(self.cmd.output().unwrap())
    }

    /// Runs the command with `input` on its stdin (`--config -`).
    pub fn run_with_input(&mut self, input: &[u8]) -> Run {
        Run::from_output(super::output_with_input(&mut self.cmd, input))
    }

    /// Runs the command under `wrapper`: a program and its arguments, to which the
    /// postrelay binary and its arguments are appended (`unshare ... sh -c SCRIPT sh`),
    /// with the command's environment.
    pub fn run_under(&mut self, wrapper: &[&str]) -> Run {
        let (program, args) = wrapper.split_first().expect("a wrapper program");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .arg(self.cmd.get_program())
            .args(self.cmd.get_args());
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(Stdio::null());
        Run::from_output(cmd.output().unwrap())
    }

    /// Starts the process with stdout and stderr piped; finish it with [`Run::wait`].
    pub fn spawn(&mut self) -> Child {
        self.cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the command, killing it (and failing the test) if it has not exited within
    /// `limit`: reading a FIFO, for one, must not hang.
    pub fn run_within(&mut self, limit: Duration) -> Run {
        let mut child = self.spawn();
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "postrelay {:?} still running after {limit:?}: killed",
                    self.cmd.get_args().collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Run::from_output(Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        })
    }

    /// Runs the command, noting when each line of its stderr arrived: with `-v` or
    /// `-vv`, when each step of the run happened, measured from outside.
    pub fn run_stamped(&mut self) -> (Run, Vec<(Instant, String)>) {
        let mut child = self.spawn();
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let lines: Vec<(Instant, String)> = BufReader::new(child.stderr.take().unwrap())
            .lines()
            .map(|l| (Instant::now(), l.unwrap()))
            .collect();
        let status = child.wait().unwrap();
        let stderr = lines
            .iter()
            .map(|(_, l)| format!("{l}\n"))
            .collect::<String>();
        let run = Run::from_output(Output {
            status,
            stdout: out.join().unwrap(),
            stderr: stderr.into_bytes(),
        });
        (run, lines)
    }

    /// Drops root's privileges for the run: as user nobody (from `/`) when the tests run
    /// as root; nothing to do otherwise. False (after [`skip_or_fail`]) when nobody
    /// cannot reach the binary.
    pub fn drop_privileges(&mut self) -> bool {
        if !nix::unistd::Uid::effective().is_root() {
            return true;
        }
        let bin = assert_cmd::cargo::cargo_bin("postrelay");
        if !reachable_by_others(&bin, 0o005) {
            skip_or_fail(&format!(
                "{} is not reachable by user nobody",
                bin.display()
            ));
            return false;
        }
        self.cmd.current_dir("/").uid(NOBODY).gid(NOBODY);
        true
    }
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    /// The signal that killed the process, if any.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Wraps a finished process; checks that no canary password was printed.
    pub fn from_output(out: Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for secret in [CANARY, CANARY2, CANARY_FILE] {
            run.assert_hides(secret);
        }
        run
    }

    /// Waits for a process started by [`Cmd::spawn`].
    pub fn wait(child: Child) -> Run {
        Run::from_output(child.wait_with_output().unwrap())
    }

    pub fn success(&self) -> &Self {
        self.code(0)
    }

    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}:\n{}",
            self.stderr
        );
        self
    }

    /// A failure with nothing on stdout: exit 2 and a `postrelay: error: ` message.
    pub fn error(&self) -> &Self {
        self.code(2);
        assert_eq!(self.stdout, "", "stdout must be empty on error");
        assert!(
            self.stderr.starts_with("postrelay: error: "),
            "expected a postrelay error:\n{}",
            self.stderr
        );
        self
    }

    /// Neither stdout nor stderr holds `secret`.
    pub fn assert_hides(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "a password leaked:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
    }
}
