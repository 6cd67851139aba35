//! Helpers to run the real binary and to find leftover processes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `shoal` binary under test.
pub fn shoal() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal"));
    // Tests must not read the developer's own config.
    c.env("SHOAL_CONFIG_FILE", "/nonexistent/shoal-test-config.yaml");
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
