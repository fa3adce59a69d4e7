//! CPU time of processes, for benchmarks that report what each side of a
//! measurement spent (Linux `/proc`, `getrusage`).

/// CPU seconds (user + system) of this process.
pub fn own() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage the call may fill.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU seconds of process `pid` (0 if it is gone).
pub fn of(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| from_stat(&stat))
        .unwrap_or(0.0)
}

/// CPU seconds of every process whose command is `name` (e.g. `nats-server`).
pub fn of_command(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        if comm.trim() != name {
            continue;
        }
        if let Ok(stat) = std::fs::read_to_string(path.join("stat")) {
            total += from_stat(&stat);
        }
    }
    total
}

/// utime + stime of a `/proc/<pid>/stat` line, in seconds.
fn from_stat(stat: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    // Fields after the parenthesised command name: utime is 14th, stime 15th overall.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(11) + field(12)) / ticks
}
