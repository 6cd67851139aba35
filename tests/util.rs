//! Helpers to run the real binary and to find leftover processes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `shoal` binary under test.
pub fn shoal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
    // Tests must not read the developer's own config.
    c.env("SHOAL_CONFIG_FILE", "/nonexistent/shoal-test-config.yaml");
    // Nor write the developer's per-user cache (a test that wants it sets its own).
    c.env("SHOAL_CACHE_DIR", "");
    c.env_remove("CUDA_VISIBLE_DEVICES");
    c
}

/// Runs a command with a deadline; returns its output and how long it took.
pub fn run_timed(cmd: &mut Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start shoal");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // Past the limit the test fails anyway; do not leave the process behind.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("wait for shoal");
    drop(watchdog);
    (out, start.elapsed())
}

/// Text of stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Pids of live processes whose environment holds `tag` (each test sets a unique one).
pub fn processes_with_tag(tag: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(Path::new("/proc").join(pid.to_string()).join("environ")) else {
            continue;
        };
        // Zombies have an empty environ; they are already dead.
        if env.split(|&b| b == 0).any(|kv| kv == tag.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// A tag unique to this test run.
pub fn unique_tag(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("SHOAL_TEST_TAG={name}-{}-{nanos}", std::process::id())
}

/// Waits briefly for processes to disappear (reaping is asynchronous).
pub fn assert_none_left(tag: &str) {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with_tag(tag);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "processes left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs a command with stdout and stderr on a new pseudo-terminal (100
/// columns), as a user's terminal; returns its exit status and everything it
/// drew, escape sequences included.
pub fn run_in_pty(cmd: &mut Command, limit: Duration) -> (std::process::ExitStatus, Vec<u8>) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two descriptors into the given ints; the winsize is read only.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .expect("start shoal");
    // The child holds the only slave descriptors now: reading ends at its exit.
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once the last slave descriptor closes.
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let mut child = child;
    let status = child.wait().expect("wait for shoal");
    drop(watchdog);
    (status, reader.join().unwrap())
}
