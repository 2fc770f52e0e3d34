//! The controller's one shutdown mechanism: a flag that is set once and that every
//! task can wait for, including tasks started after it was set.

use std::sync::Arc;

use tokio::sync::watch;

/// Sets the flag. Cloning shares the same flag.
#[derive(Debug, Clone)]
pub(crate) struct Trigger(Arc<watch::Sender<bool>>);

impl Trigger {
    pub(crate) fn new() -> Trigger {
        Trigger(Arc::new(watch::channel(false).0))
    }

    pub(crate) fn fire(&self) {
        self.0.send_replace(true);
    }

    pub(crate) fn signal(&self) -> Signal {
        Signal(self.0.subscribe())
    }
}

/// Observes the flag.
#[derive(Debug, Clone)]
pub(crate) struct Signal(watch::Receiver<bool>);

impl Signal {
    /// Resolves once the flag is set, at once if it already is. A dropped trigger
    /// counts as fired: nothing could set it any more, so waiting would be forever.
    pub(crate) async fn fired(&self) {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|set| *set).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_subscribers_see_the_flag() {
        let t = Trigger::new();
        let early = t.signal();
        let waiting = tokio::spawn(async move { early.fired().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        t.fire();
        waiting.await.unwrap();
        t.signal().fired().await;
    }

    #[tokio::test]
    async fn dropped_trigger_releases_waiters() {
        let t = Trigger::new();
        let s = t.signal();
        drop(t);
        s.fired().await;
    }
}
