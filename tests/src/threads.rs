//! A process's threads as `/proc` shows them: their scheduling policy and real-time
//! priority, and pinning them to a core.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// `SCHED_RR` in `/proc/PID/task/TID/stat`.
pub const SCHED_RR: u32 = 2;

/// The thread ids of process `pid`.
fn thread_ids(pid: u32) -> Vec<i32> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {dir}: {e}"));
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

/// (policy, real-time priority) of every thread of process `pid`.
pub fn policies(pid: u32) -> Vec<(u32, u32)> {
    thread_ids(pid)
        .into_iter()
        .filter_map(|tid| std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok())
        .map(|stat| policy_of(&stat))
        .collect()
}

/// Threads of process `pid` running `SCHED_RR`.
pub fn realtime(pid: u32) -> usize {
    policies(pid)
        .iter()
        .filter(|(policy, _)| *policy == SCHED_RR)
        .count()
}

/// Fields 41 (policy) and 40 (rt_priority) of a `stat` line; the command name, field 2, may
/// hold spaces, so counting starts after its closing parenthesis.
fn policy_of(stat: &str) -> (u32, u32) {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no command name in {stat:?}"));
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| -> u32 {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no field {n} in {stat:?}"))
    };
    (field(41), field(40))
}

/// A set of one core.
pub fn one_cpu(cpu: usize) -> CpuSet {
    let mut set = CpuSet::new();
    set.set(cpu).expect("a valid CPU number");
    set
}

/// Pins the calling thread to `cpu`.
pub fn pin_me(cpu: usize) {
    sched_setaffinity(Pid::from_raw(0), &one_cpu(cpu))
        .unwrap_or_else(|e| panic!("cannot pin this thread to CPU {cpu}: {e}"));
}

/// Pins every thread of process `pid` to `cpu` (threads it starts later inherit it).
pub fn pin_process(pid: u32, cpu: usize) {
    for tid in thread_ids(pid) {
        sched_setaffinity(Pid::from_raw(tid), &one_cpu(cpu))
            .unwrap_or_else(|e| panic!("cannot pin thread {tid} of {pid} to CPU {cpu}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_is_read_past_a_command_name_with_spaces() {
        let mut fields = vec!["0"; 50];
        fields[40 - 3] = "1";
        fields[41 - 3] = "2";
        let stat = format!("123 (tokio runtime) {}", fields.join(" "));
        assert_eq!(policy_of(&stat), (SCHED_RR, 1));
    }

    #[test]
    fn this_process_runs_no_real_time_thread() {
        assert_eq!(realtime(std::process::id()), 0);
        assert!(!policies(std::process::id()).is_empty());
    }
}
