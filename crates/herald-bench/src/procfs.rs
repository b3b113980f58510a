//! A server's memory and CPU time, read from `/proc/<pid>`: the process and its descendants together, so
//! that nginx's master and workers count as one server, like Herald's single process.
//!
//! RSS sums each process's resident pages, so pages shared between processes (nginx's shared memory zone)
//! count once per process that touched them; PSS divides each shared page among its users, so it adds up.

use std::io;

use serde::Serialize;

/// Clock ticks per second of `/proc/<pid>/stat` times: `USER_HZ`, 100 on every Linux architecture in use.
const TICKS_PER_SEC: f64 = 100.0;

/// A server's resource use at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Usage {
    /// Resident set size, summed over the processes.
    pub(crate) rss_bytes: u64,
    /// Proportional set size, summed over the processes.
    pub(crate) pss_bytes: u64,
    /// User + system CPU time consumed so far.
    pub(crate) cpu_secs: f64,
    /// How many processes were counted.
    pub(crate) processes: u32,
}

/// `(ppid, cpu seconds)` from the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(u32, f64)> {
    // The command name is in parentheses and may hold spaces: fields are counted after the last `)`.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((ppid, ticks as f64 / TICKS_PER_SEC))
}

/// The value in kB of `key` in a `/proc` key-value file (`VmRSS:   1234 kB`), in bytes.
fn parse_kb(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    Some(line[key.len() + 1..].split_whitespace().next()?.parse::<u64>().ok()? * 1024)
}

fn stat(pid: u32) -> io::Result<(u32, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("unreadable /proc/{pid}/stat")))
}

/// CPU time of process `pid` alone.
pub(crate) fn cpu_secs(pid: u32) -> io::Result<f64> {
    Ok(stat(pid)?.1)
}

/// `pid` and every process below it.
fn family(pid: u32) -> io::Result<Vec<u32>> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(child) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Ok((ppid, _)) = stat(child) {
            parents.push((child, ppid));
        }
    }
    let mut members = vec![pid];
    let mut i = 0;
    while i < members.len() {
        let parent = members[i];
        members.extend(parents.iter().filter(|(_, p)| *p == parent).map(|(c, _)| *c));
        i += 1;
    }
    Ok(members)
}

/// The resource use of `pid` and its descendants.
pub(crate) fn usage(pid: u32) -> io::Result<Usage> {
    let mut usage = Usage::default();
    for member in family(pid)? {
        let Ok((_, cpu)) = stat(member) else { continue };
        let status = std::fs::read_to_string(format!("/proc/{member}/status")).unwrap_or_default();
        let rollup = std::fs::read_to_string(format!("/proc/{member}/smaps_rollup")).unwrap_or_default();
        usage.cpu_secs += cpu;
        usage.rss_bytes += parse_kb(&status, "VmRSS").unwrap_or(0);
        usage.pss_bytes += parse_kb(&rollup, "Pss").unwrap_or(0);
        usage.processes += 1;
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_even_with_spaces_in_it() {
        let stat = "4242 (nginx: worker (x)) S 4241 4241 4241 0 -1 4194624 10 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(stat), Some((4241, 3.0)));
    }

    #[test]
    fn kilobyte_values_are_read_by_exact_key() {
        let status = "VmHWM:\t  9000 kB\nVmRSS:\t  1234 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_kb(status, "VmRSS"), Some(1234 * 1024));
        assert_eq!(parse_kb("Pss_Anon: 5 kB\nPss: 7 kB\n", "Pss"), Some(7 * 1024));
        assert_eq!(parse_kb(status, "Pss"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let usage = usage(std::process::id()).unwrap();
        assert!(usage.rss_bytes > 0 && usage.processes >= 1, "{usage:?}");
    }
}
