//! The process table, read from /proc: who is whose child, which process group, since when.

/// One process, as /proc/PID/stat describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Process {
    /// Its id.
    pub pid: i32,
    /// Its parent's id.
    pub ppid: i32,
    /// Its process group.
    pub pgrp: i32,
    /// When it started, in clock ticks after boot.
    pub start: u64,
}

/// Every process we can read.
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok()).filter_map(process).collect()
}

/// One process, if it exists.
pub fn process(pid: i32) -> Option<Process> {
    parse_stat(pid, &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// One /proc/PID/stat line. The command name may hold spaces and parentheses: the fields after the
/// last ')' are fixed (state, ppid, pgrp, … starttime is the 20th of them).
fn parse_stat(pid: i32, stat: &str) -> Option<Process> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Process {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// This boot's id (new on every boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 10";
        assert_eq!(parse_stat(4242, line), Some(Process { pid: 4242, ppid: 1, pgrp: 4242, start: 777 }));
        let me = process(std::process::id() as i32).unwrap();
        assert!(processes().contains(&me));
        assert!(me.start > 0 && me.ppid > 0);
    }
}
