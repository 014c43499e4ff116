//! Process start-up: settings that a library reads only when the process starts.

/// Re-executes this process (same program, arguments and pid) once with `vars` added to its
/// environment, unless every one is already set (the caller's own values win). Returns `Ok` only
/// when nothing was missing, and `Err` when the re-execution failed. Call it early in `main`.
pub fn reexec_with_defaults(vars: &[(&str, &str)]) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let missing: Vec<_> = vars
        .iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut again = std::process::Command::new(std::env::current_exe()?);
    again.args(std::env::args_os().skip(1));
    for (k, v) in missing {
        again.env(k, v);
    }
    Err(again.exec())
}
