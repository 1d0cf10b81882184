//! Runs plugin code so that no panic crosses the boundary. abi_stable aborts the process when
//! a panic reaches its glue, so every call from the host into plugin code goes through
//! [`guarded`], which turns a panic into a [`PluginError`] of kind `Panic`.
//!
//! The panic hook of the plugin's own std (a cdylib carries its own) is replaced by one that
//! records the message and location instead of printing them: the host logs the failure once,
//! where it handles the error.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use abi_stable::std_types::RResult;

use crate::abi::PluginError;
use crate::error::Error;

thread_local! {
    /// Where the last panic on this thread happened, set by the hook, taken by [`guarded`].
    static LAST_PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook of this library's std with one that only records the location.
/// Called at load; without it a panic is still caught, and std's default hook prints it.
pub(crate) fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            LAST_PANIC_LOCATION.with(|slot| *slot.borrow_mut() = location);
        }));
    });
}

/// Runs `f`, converting its error or its panic into a [`PluginError`] naming `plugin`.
pub(crate) fn guarded<T>(
    plugin: &str,
    f: impl FnOnce() -> Result<T, Error>,
) -> RResult<T, PluginError> {
    // AssertUnwindSafe: after a panic the host only reads the returned error; a generator
    // whose own state a panic left inconsistent is the plugin's concern, as in any Rust code.
    let outcome = panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let location = LAST_PANIC_LOCATION.with(|slot| slot.borrow_mut().take());
        let message = panic_message(payload.as_ref());
        Err(Error::panic(match location {
            Some(at) => format!("{message} (at {at})"),
            None => message,
        }))
    });
    match outcome {
        Ok(value) => RResult::ROk(value),
        Err(err) => RResult::RErr(err.into_abi(plugin)),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
