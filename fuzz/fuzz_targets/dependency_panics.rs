//! The PDF and image stages catch a dependency's panic at their boundary and return a typed
//! error; that is the behaviour under test, so a caught panic is not a crash of ours. libFuzzer's
//! panic hook aborts at every panic, caught or not, and one known pdf_oxide bug would then stop
//! every long run. This hook lets a panic unwind to the stage's `catch_unwind` when it was raised
//! inside a dependency (its location is in the cargo registry) on a stage's helper thread, and
//! logs its location (never its message, which can quote the input) for an upstream report. Any
//! other panic (in our code, or on the fuzzer's thread, where nothing catches it) still aborts.

use std::sync::Once;

pub fn tolerate_caught_dependency_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let helper = std::thread::current().name().is_some_and(|n| n != "main");
            match info.location() {
                Some(l) if helper && in_dependency(l.file()) => {
                    eprintln!("caught dependency panic at {}:{}", l.file(), l.line());
                }
                _ => fuzzer_hook(info),
            }
        }));
    });
}

/// A source path inside the cargo registry or a git checkout: a dependency's code, not ours.
fn in_dependency(file: &str) -> bool {
    let f = file.replace('\\', "/");
    f.contains("/.cargo/registry/") || f.contains("/.cargo/git/")
}
