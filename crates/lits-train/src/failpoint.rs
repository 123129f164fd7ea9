//! Crash points for the resume tests. `LITS_FAILPOINT=<point>:<epoch>[:<step>]` makes the
//! training process kill itself with SIGKILL at that point of that epoch (from 1), exactly
//! as an operator's `kill -9` landing there would: no destructor, no flush.
//!
//! | point | where |
//! |---|---|
//! | `prepared` | after the cases are prepared, before the run's config is resolved |
//! | `step:E:S` | after step `S` (from 1) of epoch `E`, before the epoch ends |
//! | `after-validation:E` | after epoch `E`'s validation, before its records and checkpoint |
//! | `epoch-end:E` | after epoch `E`'s checkpoint, before the next epoch |
//! | `checkpoint-write:E` | in the middle of writing epoch `E`'s checkpoint |
//!
//! Unset (as for every user), each check compares with `None`.

/// Where a run can be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// After the cases are prepared, before the config is resolved and recorded.
    Prepared,
    /// After step `.1` of epoch `.0`.
    Step(u32, u64),
    /// After the validation of the epoch.
    AfterValidation(u32),
    /// After the epoch's checkpoint.
    EpochEnd(u32),
    /// During the epoch's checkpoint write.
    CheckpointWrite(u32),
}

fn parse(text: &str) -> Option<Point> {
    let mut parts = text.split(':');
    let name = parts.next()?;
    if name == "prepared" {
        return parts.next().is_none().then_some(Point::Prepared);
    }
    let epoch: u32 = parts.next()?.parse().ok()?;
    let point = match name {
        "step" => Point::Step(epoch, parts.next()?.parse().ok()?),
        "after-validation" => Point::AfterValidation(epoch),
        "epoch-end" => Point::EpochEnd(epoch),
        "checkpoint-write" => Point::CheckpointWrite(epoch),
        _ => return None,
    };
    parts.next().is_none().then_some(point)
}

/// Whether `LITS_FAILPOINT` names `point` (read once per process: checked every step).
pub fn armed(point: Point) -> bool {
    static ARMED: std::sync::OnceLock<Option<Point>> = std::sync::OnceLock::new();
    *ARMED.get_or_init(|| std::env::var("LITS_FAILPOINT").ok().and_then(|t| parse(&t))) == Some(point)
}

/// Kills this process with SIGKILL when `LITS_FAILPOINT` names `point`.
pub fn check(point: Point) {
    if armed(point) {
        kill();
    }
}

/// SIGKILL to this process.
pub fn kill() -> ! {
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid takes no pointers.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_and_nothing_else_does() {
        assert_eq!(parse("step:1:3"), Some(Point::Step(1, 3)));
        assert_eq!(parse("after-validation:2"), Some(Point::AfterValidation(2)));
        assert_eq!(parse("epoch-end:4"), Some(Point::EpochEnd(4)));
        assert_eq!(parse("checkpoint-write:3"), Some(Point::CheckpointWrite(3)));
        assert_eq!(parse("prepared"), Some(Point::Prepared));
        for bad in ["", "prepared:1", "step:1", "step:x:1", "epoch-end:1:2", "sleep:1"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
