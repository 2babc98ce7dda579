//! The SSH side of the local runtime: the accept loop, authentication, and sessions that run
//! commands as child processes of the miner. Kept apart from the runtime bookkeeping so the
//! protocol handling (russh's `Handler`) reads on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::{PrivateKey, PublicKey};
use russh::server::{run_stream, Auth, Config, Handle, Handler, Msg, Session};
use russh::{Channel, ChannelId, CryptoVec, Disconnect, MethodKind, MethodSet, Sig};
use rustix::process::{Pid, Signal};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::line::{Action, LineDiscipline};
use super::lock;

/// The only user that may log in.
const USER: &str = "root";

/// The russh configuration every local server uses.
pub(super) fn server_config(host_key: PrivateKey) -> Arc<Config> {
    Arc::new(Config {
        server_id: russh::SshId::Standard("SSH-2.0-nicompute_local".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
        // Failed attempts cost this long (russh pads rejections to it); OpenSSH's first "none"
        // probe is answered at once so that logins stay quick.
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host_key],
        // An idle interactive shell is fine; a vanished client is found by keepalives.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        nodelay: true,
        ..Config::default()
    })
}

/// What an allocation's server and its sessions share.
pub(super) struct Shared {
    pub(super) allocation_id: String,
    pub(super) dir: PathBuf,
    /// SHA-256 of root's password: compared in constant time, the password itself is not kept.
    password_digest: [u8; 32],
    /// Paused: new logins and new commands are refused, running processes are stopped.
    pub(super) paused: AtomicBool,
    /// Being removed: as paused, for good.
    pub(super) closing: AtomicBool,
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    next_conn: u64,
    conns: HashMap<u64, ConnEntry>,
    /// Process groups started by sessions, by raw pgid. A group stays listed while it has members,
    /// even after its connection ended, so that remove and restart can kill it.
    groups: HashMap<i32, Group>,
}

struct Group {
    conn: u64,
    /// The group's leader (the session's `sh`) has not exited yet.
    leader_running: bool,
}

#[derive(Default)]
struct ConnEntry {
    handle: Option<Handle>,
    task: Option<AbortHandle>,
}

impl Shared {
    pub(super) fn new(allocation_id: String, dir: PathBuf, password: &str) -> Self {
        Self {
            allocation_id,
            dir,
            password_digest: Sha256::digest(password.as_bytes()).into(),
            paused: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
        }
    }

    fn refusing(&self) -> bool {
        self.paused.load(Ordering::SeqCst) || self.closing.load(Ordering::SeqCst)
    }

    fn password_matches(&self, candidate: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate.as_bytes()).into();
        let diff = digest.iter().zip(self.password_digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }

    /// The keys of `dir/.ssh/authorized_keys` now.
    async fn authorized(&self, key: &PublicKey) -> bool {
        let path = self.dir.join(".ssh").join("authorized_keys");
        let Ok(Ok(text)) = tokio::task::spawn_blocking(move || std::fs::read_to_string(path)).await else {
            return false;
        };
        parse_authorized_keys(&text).0.iter().any(|k| k.key_data() == key.key_data())
    }

    /// Sends `signal` to every process group of this allocation's sessions.
    pub(super) fn signal_all(&self, signal: Signal) {
        let groups: Vec<i32> = lock(&self.registry).groups.keys().copied().collect();
        for pgid in groups {
            signal_group(pgid, signal);
        }
    }

    /// Closes every SSH connection and kills every process its sessions started; keeps listening.
    pub(super) async fn drop_sessions(&self) {
        let (conns, groups) = {
            let mut reg = lock(&self.registry);
            let conns: Vec<ConnEntry> = reg.conns.drain().map(|(_, c)| c).collect();
            let groups: Vec<i32> = reg.groups.drain().map(|(g, _)| g).collect();
            (conns, groups)
        };
        for pgid in &groups {
            signal_group(*pgid, Signal::KILL);
        }
        for conn in conns {
            if let Some(handle) = conn.handle {
                let bye =
                    handle.disconnect(Disconnect::ByApplication, "the allocation was stopped".into(), String::new());
                let _ = tokio::time::timeout(Duration::from_secs(2), bye).await;
            }
            if let Some(task) = conn.task {
                task.abort();
            }
        }
    }

    fn add_group(&self, pgid: i32, conn: u64) {
        let mut reg = lock(&self.registry);
        if !reg.conns.contains_key(&conn) {
            // A restart or remove dropped the connection while this command was starting.
            drop(reg);
            signal_group(pgid, Signal::KILL);
            return;
        }
        // Forget groups that have no member left (their ids may be reused by someone else).
        reg.groups.retain(|g, _| group_alive(*g));
        reg.groups.insert(pgid, Group { conn, leader_running: true });
    }

    /// The group's leader exited (and was reaped).
    fn leader_exited(&self, pgid: i32) {
        let mut reg = lock(&self.registry);
        if group_alive(pgid) {
            if let Some(g) = reg.groups.get_mut(&pgid) {
                g.leader_running = false;
            }
        } else {
            reg.groups.remove(&pgid);
        }
    }

    /// The client went away while the group's command still runs: hang it up, as a terminal
    /// would. Processes left behind by a command that has finished (`nohup … &`) are left alone,
    /// as OpenSSH's sshd leaves them.
    fn hang_up(&self, pgid: i32) {
        let running = lock(&self.registry).groups.get(&pgid).is_some_and(|g| g.leader_running);
        if running {
            // A paused (stopped) process gets it when unpaused.
            signal_group(pgid, Signal::HUP);
        }
    }

    /// A connection ended: hang up its running commands and forget it.
    fn connection_ended(&self, conn: u64) {
        let groups: Vec<i32> = {
            let mut reg = lock(&self.registry);
            reg.conns.remove(&conn);
            reg.groups.iter().filter(|(_, g)| g.conn == conn && g.leader_running).map(|(p, _)| *p).collect()
        };
        for pgid in groups {
            self.hang_up(pgid);
        }
    }
}

fn group_alive(pgid: i32) -> bool {
    Pid::from_raw(pgid).is_some_and(|pid| rustix::process::test_kill_process_group(pid).is_ok())
}

fn signal_group(pgid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pgid) {
        // ESRCH: the group is already gone, which is what we wanted.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// The OpenSSH public keys in `authorized_keys` text (options before the key are ignored), and
/// how many non-blank, non-comment lines did not hold one.
pub(super) fn parse_authorized_keys(text: &str) -> (Vec<PublicKey>, usize) {
    let mut keys = Vec::new();
    let mut bad = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        // `[options] keytype base64 [comment]`: try from each word, so options are skipped.
        let found = line
            .match_indices(|c: char| c.is_ascii_whitespace())
            .map(|(i, _)| i + 1)
            .chain(std::iter::once(0))
            .filter_map(|start| line.get(start..))
            .map(str::trim_start)
            .find_map(|rest| PublicKey::from_openssh(rest).ok());
        // Prefer the whole line first (the common case).
        match PublicKey::from_openssh(line).ok().or(found) {
            Some(k) => keys.push(k),
            None => bad += 1,
        }
    }
    (keys, bad)
}

/// Accepts connections until the task is aborted (which drops the listener).
pub(super) async fn serve(listener: Arc<TcpListener>, config: Arc<Config>, shared: Arc<Shared>) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: back off rather than spin.
                tracing::warn!(allocation = %shared.allocation_id, error = %e, "local SSH server: accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        if shared.paused.load(Ordering::SeqCst) {
            // Paused: as a frozen container's port, it greets no one (the renter's check of a
            // pause is that no SSH banner comes).
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        let conn = {
            let mut reg = lock(&shared.registry);
            reg.next_conn += 1;
            let conn = reg.next_conn;
            reg.conns.insert(conn, ConnEntry::default());
            conn
        };
        tracing::debug!(allocation = %shared.allocation_id, %peer, conn, "local SSH connection");
        let handler = Connection { shared: shared.clone(), conn, channels: HashMap::new() };
        let shared2 = shared.clone();
        let config = config.clone();
        let task = tokio::spawn(async move {
            match run_stream(config, socket, handler).await {
                Ok(session) => {
                    if let Some(entry) = lock(&shared2.registry).conns.get_mut(&conn) {
                        entry.handle = Some(session.handle());
                    }
                    if let Err(e) = session.await {
                        tracing::debug!(conn, error = %e, "local SSH connection ended with an error");
                    }
                }
                Err(e) => tracing::debug!(conn, error = %e, "local SSH handshake failed"),
            }
            shared2.connection_ended(conn);
        });
        if let Some(entry) = lock(&shared.registry).conns.get_mut(&conn) {
            entry.task = Some(task.abort_handle());
        }
    }
}

/// One SSH connection (russh calls it a session; its channels are our sessions).
struct Connection {
    shared: Arc<Shared>,
    conn: u64,
    channels: HashMap<ChannelId, ChannelState>,
}

/// What a channel runs.
#[derive(Debug)]
enum Program {
    /// `sh -c COMMAND`.
    Exec(String),
    /// `sh`, or `sh -i` with a PTY.
    Shell,
    /// OpenSSH's sftp-server, for the `sftp` subsystem.
    Sftp(&'static str),
}

/// Where distributions put OpenSSH's sftp-server (Debian/Ubuntu, Fedora/RHEL, Arch, Alpine…).
const SFTP_SERVERS: [&str; 4] = [
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/lib/ssh/sftp-server",
    "/usr/libexec/sftp-server",
];

fn sftp_server() -> Option<&'static str> {
    SFTP_SERVERS.into_iter().find(|p| std::path::Path::new(p).is_file())
}

#[derive(Default)]
struct ChannelState {
    /// Set by a PTY request: emulate a terminal's line discipline.
    pty: Option<LineDiscipline>,
    term: Option<String>,
    /// Environment the client sent (LANG and LC_* only).
    env: Vec<(String, String)>,
    /// Feeds the process's stdin; dropped on EOF.
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    /// The process group of the running command.
    pgid: Option<i32>,
    started: bool,
}

impl Connection {
    fn allowed(&self, user: &str) -> bool {
        user == USER && !self.shared.refusing()
    }

    /// Starts what the channel asked for, wired to it.
    fn launch(&mut self, channel: ChannelId, program: Program, session: &mut Session) -> Result<(), russh::Error> {
        let state = self.channels.entry(channel).or_default();
        if state.started || self.shared.refusing() {
            session.channel_failure(channel)?;
            return Ok(());
        }
        let mut pty = state.pty.is_some();
        let mut cmd = match &program {
            Program::Exec(c) => {
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.arg("-c").arg(c);
                cmd
            }
            Program::Shell if pty => {
                let mut cmd = tokio::process::Command::new("/bin/sh");
                cmd.arg("-i");
                cmd
            }
            Program::Shell => tokio::process::Command::new("/bin/sh"),
            Program::Sftp(server) => {
                // A binary protocol: never through the pretend terminal.
                pty = false;
                state.pty = None;
                tokio::process::Command::new(server)
            }
        };
        let dir = &self.shared.dir;
        cmd.current_dir(dir)
            .env_clear()
            .env("HOME", dir)
            .env("PWD", dir)
            .env("SHELL", "/bin/sh")
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()));
        for var in ["USER", "LOGNAME", "LANG", "TZ"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        for (k, v) in &state.env {
            cmd.env(k, v);
        }
        if let Some(term) = &state.term {
            cmd.env("TERM", term);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so that it and everything it starts can be signalled together.
            .process_group(0)
            .kill_on_drop(false);
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(allocation = %self.shared.allocation_id, error = %e, "local SSH: cannot start {program:?}");
                session.channel_failure(channel)?;
                return Ok(());
            }
        };
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        if let Some(pgid) = pgid {
            self.shared.add_group(pgid, self.conn);
        }
        state.pgid = pgid;
        state.started = true;

        let (tx, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        state.stdin = Some(tx);
        if let Some(stdin) = child.stdin.take() {
            tokio::spawn(feed_stdin(stdin, rx));
        }
        let handle = session.handle();
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let out = child.stdout.take();
            let err = child.stderr.take();
            // With a (pretend) terminal, stderr goes to the terminal too.
            let err_ext = if pty { None } else { Some(1) };
            tokio::join!(pump(out, &handle, channel, None, pty), pump(err, &handle, channel, err_ext, pty));
            let status = child.wait().await;
            if let Some(pgid) = pgid {
                shared.leader_exited(pgid);
            }
            let _ = handle.eof(channel).await;
            match status {
                Ok(status) => send_exit(&handle, channel, status).await,
                Err(e) => {
                    tracing::warn!(error = %e, "local SSH: waiting for a command failed");
                    let _ = handle.exit_status_request(channel, 255).await;
                }
            }
            let _ = handle.close(channel).await;
        });
        session.channel_success(channel)?;
        Ok(())
    }

    fn signal_channel(&self, channel: ChannelId, signal: Signal) {
        if let Some(pgid) = self.channels.get(&channel).and_then(|s| s.pgid) {
            signal_group(pgid, signal);
        }
    }
}

async fn feed_stdin(mut stdin: tokio::process::ChildStdin, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(data) = rx.recv().await {
        if stdin.write_all(&data).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
    // Sender dropped: EOF for the process (stdin is closed when dropped here).
    let _ = stdin.shutdown().await;
}

/// Copies a process's output to the channel (`ext`: extended data type, 1 for stderr).
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    handle: &Handle,
    channel: ChannelId,
    ext: Option<u32>,
    crlf: bool,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = buf.get(..n).unwrap_or_default();
        let data = if crlf { CryptoVec::from(super::line::onlcr(chunk)) } else { CryptoVec::from_slice(chunk) };
        let sent = match ext {
            Some(ext) => handle.extended_data(channel, ext, data).await,
            None => handle.data(channel, data).await,
        };
        if sent.is_err() {
            // The channel is gone: dropping the pipe gives the writer EPIPE.
            return;
        }
    }
}

async fn send_exit(handle: &Handle, channel: ChannelId, status: std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        let _ = handle.exit_status_request(channel, u32::try_from(code).unwrap_or(255)).await;
        return;
    }
    let signal = status.signal().unwrap_or(0);
    match sig_of_raw(signal) {
        Some(sig) => {
            let _ = handle.exit_signal_request(channel, sig, status.core_dumped(), String::new(), String::new()).await;
        }
        // A signal SSH has no name for: report it as a shell would.
        None => {
            let _ = handle.exit_status_request(channel, 128 + signal.unsigned_abs()).await;
        }
    }
}

fn sig_of_raw(raw: i32) -> Option<Sig> {
    let table = [
        (Signal::ABORT, Sig::ABRT),
        (Signal::ALARM, Sig::ALRM),
        (Signal::FPE, Sig::FPE),
        (Signal::HUP, Sig::HUP),
        (Signal::ILL, Sig::ILL),
        (Signal::INT, Sig::INT),
        (Signal::KILL, Sig::KILL),
        (Signal::PIPE, Sig::PIPE),
        (Signal::QUIT, Sig::QUIT),
        (Signal::SEGV, Sig::SEGV),
        (Signal::TERM, Sig::TERM),
        (Signal::USR1, Sig::USR1),
    ];
    table.into_iter().find(|(s, _)| s.as_raw() == raw).map(|(_, sig)| sig)
}

fn signal_of_sig(sig: &Sig) -> Option<Signal> {
    Some(match sig {
        Sig::ABRT => Signal::ABORT,
        Sig::ALRM => Signal::ALARM,
        Sig::FPE => Signal::FPE,
        Sig::HUP => Signal::HUP,
        Sig::ILL => Signal::ILL,
        Sig::INT => Signal::INT,
        Sig::KILL => Signal::KILL,
        Sig::PIPE => Signal::PIPE,
        Sig::QUIT => Signal::QUIT,
        Sig::SEGV => Signal::SEGV,
        Sig::TERM => Signal::TERM,
        Sig::USR1 => Signal::USR1,
        Sig::Custom(name) if name == "USR2" => Signal::USR2,
        Sig::Custom(_) => return None,
    })
}

impl Handler for Connection {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        // Compare even for a refused user, so that timing tells nothing either way.
        let matches = self.shared.password_matches(password);
        if self.allowed(user) && matches {
            tracing::info!(allocation = %self.shared.allocation_id, conn = self.conn, "local SSH login (password)");
            return Ok(Auth::Accept);
        }
        Ok(Auth::reject())
    }

    async fn auth_publickey_offered(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        if self.allowed(user) && self.shared.authorized(key).await {
            return Ok(Auth::Accept);
        }
        Ok(Auth::reject())
    }

    async fn auth_publickey(&mut self, user: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        // The signature is verified; the key must still be listed (the list may have changed).
        if self.allowed(user) && self.shared.authorized(key).await {
            tracing::info!(allocation = %self.shared.allocation_id, conn = self.conn, "local SSH login (public key)");
            return Ok(Auth::Accept);
        }
        Ok(Auth::reject())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        // The handler's callbacks drive the channel; russh copes with the channel object gone.
        self.channels.insert(channel.id(), ChannelState::default());
        Ok(true)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // No real PTY: accepted, and emulated by a line discipline (see the module docs).
        let state = self.channels.entry(channel).or_default();
        if state.started {
            session.channel_failure(channel)?;
            return Ok(());
        }
        state.pty = Some(LineDiscipline::default());
        state.term = Some(term.to_owned()).filter(|t| !t.is_empty());
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // As OpenSSH's usual AcceptEnv: the locale only.
        if name == "LANG" || name.starts_with("LC_") {
            self.channels.entry(channel).or_default().env.push((name.to_owned(), value.to_owned()));
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.launch(channel, Program::Shell, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.launch(channel, Program::Exec(command), session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // sftp (and so scp, which speaks it by default) when the host has OpenSSH's sftp-server;
        // without it, `scp -O` (the legacy protocol) still works through exec.
        match (name, sftp_server()) {
            ("sftp", Some(server)) => self.launch(channel, Program::Sftp(server), session),
            _ => {
                tracing::debug!(subsystem = name, "local SSH: subsystem refused");
                session.channel_failure(channel)?;
                Ok(())
            }
        }
    }

    async fn data(&mut self, channel: ChannelId, data: &[u8], session: &mut Session) -> Result<(), Self::Error> {
        let Some(state) = self.channels.get_mut(&channel) else { return Ok(()) };
        let Some(line) = state.pty.as_mut() else {
            if let Some(stdin) = &state.stdin {
                let _ = stdin.send(data.to_vec());
            }
            return Ok(());
        };
        let mut echo = Vec::new();
        let mut actions = Vec::new();
        line.feed(data, &mut echo, &mut actions);
        if !echo.is_empty() {
            session.data(channel, CryptoVec::from(echo))?;
        }
        for action in actions {
            match action {
                Action::Input(bytes) => {
                    if let Some(stdin) = &state.stdin {
                        let _ = stdin.send(bytes);
                    }
                }
                Action::Eof => state.stdin = None,
                Action::Signal(signal) => {
                    if let Some(pgid) = state.pgid {
                        signal_group(pgid, signal);
                    }
                }
            }
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&channel) {
            state.stdin = None;
        }
        Ok(())
    }

    async fn channel_close(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(pgid) = self.channels.remove(&channel).and_then(|s| s.pgid) {
            self.shared.hang_up(pgid);
        }
        Ok(())
    }

    async fn signal(&mut self, channel: ChannelId, signal: Sig, _session: &mut Session) -> Result<(), Self::Error> {
        if let Some(signal) = signal_of_sig(&signal) {
            self.signal_channel(channel, signal);
        }
        Ok(())
    }
}
