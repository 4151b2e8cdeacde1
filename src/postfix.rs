//! The one place that runs Postfix's own tools: postconf, postmap, postfix, postqueue
//! and postlog.
//!
//! Every call passes `-c DIR` so it acts on the chosen instance only. Tools are found only
//! in Postfix's own directories (`/usr/sbin`, `/usr/local/sbin`, `/sbin`), never through
//! an inherited `PATH`: root must not run what a user's `PATH` points at (and cron's
//! `PATH` lacks them anyway). Debug builds alone honour [`TOOL_DIR_VAR`], a directory
//! searched first, through which the tests inject fault programs. A failure is reported with
//! the argv, the exit status and the tool's stderr. Secrets never reach a command line:
//! postmap reads them from a file.
//!
//! Facts this relies on (see the Postfix semantics reference): postmap exits 0 even
//! when it skips malformed lines, so its stderr is read too; `postfix` prints nothing
//! unless stderr is a TTY, so its failures carry only an exit status; `postfix status`
//! returns 1 both for "not running" and for a broken main.cf; `postlog` writes the
//! mail log itself when postlogd does not run, and may take a second or two (see
//! [`log`]), so it alone runs under a deadline.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where Postfix's programs are looked for.
pub const TOOL_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// A directory searched before [`TOOL_DIRS`], in debug builds only: the tests' way to
/// inject fault programs. Release builds ignore it.
pub const TOOL_DIR_VAR: &str = "POSTRELAY_TOOL_DIR";

/// Finds a Postfix program.
pub fn tool(name: &str) -> Result<PathBuf> {
    let injected = if cfg!(debug_assertions) {
        std::env::var_os(TOOL_DIR_VAR).map(PathBuf::from)
    } else {
        None
    };
    injected
        .into_iter()
        .chain(TOOL_DIRS.map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name}: command not found in {} (is Postfix installed?)",
                TOOL_DIRS.join(", ")
            )
        })
}

/// A command line for messages and plans.
pub fn display_argv<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn run<S: AsRef<OsStr>>(name: &str, args: &[S]) -> Result<(String, Output)> {
    let program = tool(name)?;
    let shown = format!("{name} {}", display_argv(args));
    tracing::debug!("running {shown}");
    let output = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    tracing::debug!("{shown}: {}", output.status);
    Ok((shown, output))
}

fn failure(shown: &str, output: &Output, hint: &str) -> anyhow::Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim_end();
    if stderr.is_empty() {
        anyhow::anyhow!("`{shown}` failed ({}){hint}", output.status)
    } else {
        anyhow::anyhow!(
            "`{shown}` failed ({}):\n---\n{stderr}\n---{hint}",
            output.status
        )
    }
}

/// Postfix's compiled-in `default_database_type` (`postconf -d`: does not read main.cf,
/// so it does not wait for a freshly written main.cf to "cool down").
pub fn default_database_type(dir: &Path) -> Result<String> {
    let args = [
        OsStr::new("-c"),
        dir.as_os_str(),
        OsStr::new("-dh"),
        OsStr::new("default_database_type"),
    ];
    let (shown, out) = run("postconf", &args)?;
    let value = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || value.is_empty() {
        return Err(failure(&shown, &out, ""));
    }
    Ok(value)
}

/// The values of main.cf parameters as Postfix uses them (`postconf -c DIR -xh NAME...`:
/// the defaults for what main.cf does not set, `$name` references expanded), in the
/// order asked. Like every Postfix program, postconf first waits for a main.cf written
/// in the last second or two to "cool down".
pub fn values(dir: &Path, names: &[&str]) -> Result<Vec<String>> {
    let mut args = vec![OsStr::new("-c"), dir.as_os_str(), OsStr::new("-xh")];
    args.extend(names.iter().map(OsStr::new));
    let (shown, out) = run("postconf", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let values: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    // An unknown name is a warning on stderr and no line of output. Other warnings
    // (a config dir without master.cf) do not change the values.
    if !out.status.success() || values.len() != names.len() {
        return Err(failure(&shown, &out, ""));
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        tracing::debug!("{shown}: {line}");
    }
    Ok(values)
}

/// The lookup-table types this Postfix supports (`postconf -m`, which includes the
/// plugins listed in dynamicmaps.cf).
pub fn map_types(dir: &Path) -> Result<Vec<String>> {
    let (shown, out) = run(
        "postconf",
        &[OsStr::new("-c"), dir.as_os_str(), OsStr::new("-m")],
    )?;
    if !out.status.success() {
        return Err(failure(&shown, &out, ""));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// The argv of `postmap -c DIR TYPE:FILE`, for plans and messages.
pub fn postmap_argv(dir: &Path, map_type: &str, file: &Path) -> Vec<String> {
    vec![
        "postmap".into(),
        "-c".into(),
        dir.display().to_string(),
        format!("{map_type}:{}", file.display()),
    ]
}

/// Compiles `file` with postmap. Any warning about the file (a skipped line, a duplicate)
/// is an error: postmap itself would exit 0 and silently drop the entry.
pub fn postmap(dir: &Path, map_type: &str, file: &Path) -> Result<()> {
    let argv = postmap_argv(dir, map_type, file);
    let (shown, out) = run("postmap", &argv[1..])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    if !out.status.success() || stderr.lines().any(|l| l.contains(name.as_ref())) {
        return Err(failure(&shown, &out, ""));
    }
    for line in stderr.lines() {
        tracing::warn!("{line}");
    }
    Ok(())
}

/// A map's entries as `(key, value)` pairs.
pub type Entries = Vec<(String, String)>;

/// What a compiled map holds, as `postmap -s` dumps it, sorted; `Ok(None)` when postmap
/// cannot read it (a corrupt or truncated file: drift to repair, not a reason to stop).
/// The entries of a password map are passwords: the caller keeps them in a `Secret`.
pub fn dump(dir: &Path, map_type: &str, file: &Path) -> Result<Option<Entries>> {
    let Some(text) = dump_text(dir, map_type, file)? else {
        return Ok(None);
    };
    let entries = dump_entries(&text)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(Some(entries))
}

/// What `postmap -s` prints of a compiled map (see [`dump`]), for [`dump_entries`]:
/// a large map's entries need not be copied one by one.
pub fn dump_text(dir: &Path, map_type: &str, file: &Path) -> Result<Option<String>> {
    let spec = format!("{map_type}:{}", file.display());
    let args = [
        OsStr::new("-c"),
        dir.as_os_str(),
        OsStr::new("-s"),
        OsStr::new(&spec),
    ];
    let (shown, out) = run("postmap", &args)?;
    if !out.status.success() {
        tracing::warn!("{:#}", failure(&shown, &out, ""));
        return Ok(None);
    }
    Ok(Some(String::from_utf8(out.stdout).unwrap_or_else(|e| {
        String::from_utf8_lossy(e.as_bytes()).into_owned()
    })))
}

/// The entries of [`dump_text`]'s text (`key<TAB>value` lines), sorted.
pub fn dump_entries(text: &str) -> Vec<(&str, &str)> {
    let mut entries: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once('\t').unwrap_or((l, "")))
        .collect();
    entries.sort_unstable();
    entries
}

/// Whether the instance using `dir` runs (`postfix -c DIR status` exits 0).
pub fn is_running(dir: &Path) -> Result<bool> {
    let (_, out) = run(
        "postfix",
        &[OsStr::new("-c"), dir.as_os_str(), OsStr::new("status")],
    )?;
    Ok(out.status.success())
}

/// A `postfix` command that acts on a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Check,
    Reload,
}

impl Control {
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Check => "check",
            Control::Reload => "reload",
        }
    }
}

/// The argv of `postfix -c DIR ACTION`, for plans and messages.
pub fn control_argv(dir: &Path, action: Control) -> Vec<String> {
    vec![
        "postfix".into(),
        "-c".into(),
        dir.display().to_string(),
        action.as_str().into(),
    ]
}

/// `postfix -c DIR check` or `postfix -c DIR reload`.
pub fn control(dir: &Path, action: Control) -> Result<()> {
    let argv = control_argv(dir, action);
    let (shown, out) = run("postfix", &argv[1..])?;
    if !out.status.success() {
        let hint = " (postfix reports details only to the mail log)";
        return Err(failure(&shown, &out, hint));
    }
    Ok(())
}

/// The file name postmap writes for a source, or `None` for types that need no postmap.
pub fn compiled_suffix(map_type: &str) -> Result<Option<&'static str>> {
    Ok(match map_type {
        "hash" | "btree" => Some(".db"),
        "lmdb" => Some(".lmdb"),
        "cdb" => Some(".cdb"),
        "texthash" => None,
        other => {
            bail!("map type {other:?} is not supported (use hash, btree, lmdb, cdb or texthash)")
        }
    })
}

/// The argv of `postqueue -c DIR -f`, for plans and messages.
pub fn flush_argv(dir: &Path) -> Vec<String> {
    vec![
        "postqueue".into(),
        "-c".into(),
        dir.display().to_string(),
        "-f".into(),
    ]
}

/// `postqueue -c DIR -f`: asks the queue manager to retry all queued mail now.
pub fn flush(dir: &Path) -> Result<()> {
    let argv = flush_argv(dir);
    let (shown, out) = run("postqueue", &argv[1..])?;
    if !out.status.success() {
        return Err(failure(&shown, &out, ""));
    }
    Ok(())
}

/// How many messages in the deferred queue have a recipient deferred with `reason`
/// (`postqueue -c DIR -j`, one JSON object per message).
pub fn deferred_with(dir: &Path, reason: &str) -> Result<usize> {
    let (shown, out) = run(
        "postqueue",
        &[OsStr::new("-c"), dir.as_os_str(), OsStr::new("-j")],
    )?;
    if !out.status.success() {
        return Err(failure(&shown, &out, ""));
    }
    let mut found = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let message: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("`{shown}`: not a JSON line: {line:?}"))?;
        let deferred = message["queue_name"] == "deferred";
        let held = message["recipients"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["delay_reason"]
                    .as_str()
                    .is_some_and(|d| d.contains(reason))
            })
        });
        found += usize::from(deferred && held);
    }
    Ok(found)
}

/// The command master.cf runs for `service` (`retry/unix`), or `None` if it has no
/// such service (`postconf -M` prints nothing and exits 1).
pub fn service_command(dir: &Path, service: &str) -> Result<Option<String>> {
    let args = [
        OsStr::new("-c"),
        dir.as_os_str(),
        OsStr::new("-M"),
        OsStr::new(service),
    ];
    let (_, out) = run("postconf", &args)?;
    // name type private unpriv chroot wakeup maxproc command...
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(7)
        .map(str::to_string))
}

/// A process, told apart from a later one with the same PID by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    start: u64,
}

/// What `/proc/PID/stat` says: (command name, state, parent PID, start time).
fn stat(pid: i32) -> Option<(String, char, i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold anything, ')' included.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, starttime field 22.
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((name, state, ppid, start))
}

impl Process {
    /// Whether it still runs (a zombie has exited).
    pub fn is_running(&self) -> bool {
        stat(self.pid).is_some_and(|(_, state, _, start)| state != 'Z' && start == self.start)
    }
}

/// The instance's `queue_directory`. Asked before main.cf changes: postconf, like every
/// Postfix program, waits for a main.cf changed in the last second or two to "cool down".
pub fn queue_directory(dir: &Path) -> Result<PathBuf> {
    let [queue] = <[String; 1]>::try_from(values(dir, &["queue_directory"])?)
        .map_err(|v| anyhow::anyhow!("postconf gave {} values for queue_directory", v.len()))?;
    if queue.is_empty() {
        bail!(
            "{}: queue_directory is empty",
            dir.join("main.cf").display()
        );
    }
    Ok(PathBuf::from(queue))
}

/// The processes named `names` (their command, as `/proc/PID/comm` shows it) that the
/// master process of the instance with queue directory `queue` runs now, found through
/// `QUEUE/pid/master.pid`.
pub fn daemons(queue: &Path, names: &[&str]) -> Result<Vec<Process>> {
    let pid_file = queue.join("pid/master.pid");
    let master: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("{}: cannot read", pid_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{}: not a process ID", pid_file.display()))?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").context("/proc: cannot list")? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((name, state, ppid, start)) = stat(pid)
            && ppid == master
            && state != 'Z'
            && names.contains(&name.as_str())
        {
            found.push(Process { pid, start });
        }
    }
    Ok(found)
}

/// The tag of postrelay's records in the mail log (`postrelay[PID]: …`).
pub const LOG_TAG: &str = "postrelay";

/// How long postlog may take before it is killed. It first waits for a main.cf written
/// in the last second or two to "cool down", and after a fatal error (a mail log it
/// cannot open) it pauses 1 s before exiting: both well within this.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// The severity of a record in the mail log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Info,
    /// Postfix writes `warning: ` after the tag.
    Warning,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Info => "info",
            Priority::Warning => "warning",
        }
    }
}

/// The options of `postlog -c DIR -t postrelay -p PRIORITY -- TEXT`, without the text.
fn log_options(dir: &Path, priority: Priority) -> Vec<OsString> {
    vec![
        "-c".into(),
        dir.into(),
        "-t".into(),
        LOG_TAG.into(),
        "-p".into(),
        priority.as_str().into(),
    ]
}

/// Records `text` (one line, no password: see `report::audit_applied`) as one record in
/// the mail log of the instance using `dir`: `postlog -c DIR -t postrelay -p PRIORITY --
/// TEXT`. Postfix sends it where its own logging goes: to postlogd, which writes
/// `maillog_file`, when main.cf sets one and Postfix runs; to that file directly when
/// Postfix does not run (only root may); to syslog otherwise (nothing at all when no
/// syslog daemon listens on /dev/log, and postlog still exits 0). postlog echoes the
/// record to stderr only when that is a terminal: here it is a pipe, so nothing but the
/// report reaches postrelay's stdout. Killed after [`LOG_TIMEOUT`].
pub fn log(dir: &Path, priority: Priority, text: &str) -> Result<()> {
    let program = tool("postlog")?;
    let options = log_options(dir, priority);
    let shown = format!("postlog {} -- TEXT", display_argv(&options));
    tracing::debug!("running {shown} with TEXT {text:?}");
    let mut child = Command::new(&program)
        .args(&options)
        .arg("--")
        .arg(text)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + LOG_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for postlog")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            // Our own child, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Killed, its stderr is not waited for: a process it started may hold the pipe.
    let Some(status) = status else {
        bail!(
            "`{shown}` did not finish within {} s: killed",
            LOG_TIMEOUT.as_secs()
        );
    };
    let stderr = reader.join().unwrap_or_default();
    tracing::debug!("{shown}: {status}");
    let output = Output {
        status,
        stdout: Vec::new(),
        stderr,
    };
    if !status.success() {
        let hint = " (postlog says why only on a terminal)";
        return Err(failure(&shown, &output, hint));
    }
    Ok(())
}
