//! What made a test fail, repeated after the log dumps its failure triggers.
//!
//! When a test panics, dropping its processes and namespace prints the tail of every log, often
//! hundreds of lines, after the panic message. A CI report that keeps only the end of a failed
//! test's output then shows logs but not why the test failed. So the harness records each
//! panic's message and location, and every failure dump ends by repeating them.

use std::panic::PanicHookInfo;
use std::sync::{Mutex, Once, PoisonError};

static RECORDED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Records every panic of this test process (keeping the default report). Idempotent.
pub(crate) fn record_panics() {
    INSTALL.call_once(|| {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            RECORDED.lock().unwrap_or_else(PoisonError::into_inner).push(describe(info));
            default_hook(info);
        }));
    });
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let thread = std::thread::current().name().unwrap_or("<unnamed>").to_owned();
    let message = info
        .payload()
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| info.payload().downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<a panic without a message>".to_owned());
    // The report's first paragraph: an error's backtrace, if any, is in the report above.
    let message = message.split("\n\nStack backtrace:").next().unwrap_or_default().to_owned();
    let location = info.location().map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
    format!("test {thread} panicked{location}: {message}")
}

/// Repeats the recorded panics; called at the end of every failure dump.
pub(crate) fn print_recorded() {
    let recorded = RECORDED.lock().unwrap_or_else(PoisonError::into_inner);
    for failure in recorded.iter() {
        eprintln!("----- the failure behind this dump: {failure}");
    }
}
