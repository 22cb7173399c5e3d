//! Values whose drop blocks: the PostgreSQL driver closes a connection by blocking on its own
//! runtime, which panics on a thread that drives async tasks (and aborts the process when it
//! happens during unwinding). [`OffRuntime`] moves such a value to a plain thread to be
//! dropped when it is dropped inside a runtime, as at shutdown or when a task is aborted.

use std::ops::Deref;

/// A value dropped off the async runtime. See the [module documentation](self).
#[derive(Debug)]
pub struct OffRuntime<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> OffRuntime<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self(Some(value))
    }
}

impl<T: Send + 'static> Deref for OffRuntime<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // Only `drop` takes the value out.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("taken only by drop"))
    }
}

impl<T: Clone + Send + 'static> Clone for OffRuntime<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Send + 'static> Drop for OffRuntime<T> {
    fn drop(&mut self) {
        let Some(value) = self.0.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(value);
        }
        // A thread that cannot be started leaves the value unclosed rather than panicking.
        let spawned = std::thread::Builder::new()
            .name("meshtun-drop".into())
            .spawn(move || drop(value));
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot close database connections off the runtime");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Records whether it was dropped on a thread that runs async tasks.
    struct Probe(Arc<AtomicBool>, std::sync::mpsc::Sender<()>);

    impl Drop for Probe {
        fn drop(&mut self) {
            let in_runtime = tokio::runtime::Handle::try_current().is_ok();
            self.0.store(in_runtime, Ordering::SeqCst);
            let _ = self.1.send(());
        }
    }

    #[tokio::test]
    async fn a_value_dropped_in_a_runtime_is_dropped_on_a_plain_thread() {
        let in_runtime = Arc::new(AtomicBool::new(true));
        let (done, dropped) = std::sync::mpsc::channel();
        drop(OffRuntime::new(Probe(in_runtime.clone(), done)));
        dropped
            .recv_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        assert!(!in_runtime.load(Ordering::SeqCst));
    }

    #[test]
    fn outside_a_runtime_it_is_dropped_at_once() {
        let in_runtime = Arc::new(AtomicBool::new(true));
        let (done, dropped) = std::sync::mpsc::channel();
        drop(OffRuntime::new(Probe(in_runtime.clone(), done)));
        assert!(dropped.try_recv().is_ok(), "dropped in place");
        assert!(!in_runtime.load(Ordering::SeqCst));
    }
}
