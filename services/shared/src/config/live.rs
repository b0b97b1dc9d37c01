//! Live settings: the settings a service runs with are a [`watch::Receiver`] of the whole settings
//! value, fed by whoever may change them (the config centre, a test). A component with a setting
//! that can change at run time takes a receiver of just its part ([`project`]) when it is built and
//! applies changes itself; nothing reaches it through process-wide state.

use std::sync::Arc;

use tokio::sync::watch;

/// The settings of a running service, current and future.
pub type Live<S> = watch::Receiver<Arc<S>>;

/// A receiver of one part of `source` (`part(&settings)`), updated only when that part changes.
///
/// The forwarding task ends when `source`'s sender is gone or nobody holds the returned receiver;
/// after that, the receiver keeps the last value.
pub fn project<S, T, F>(source: &Live<S>, part: F) -> watch::Receiver<T>
where
    S: Send + Sync + 'static,
    T: PartialEq + Send + Sync + 'static,
    F: Fn(&S) -> T + Send + 'static,
{
    let mut source = source.clone();
    let (tx, rx) = watch::channel(part(&source.borrow_and_update()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                changed = source.changed() => if changed.is_err() { return },
            }
            let next = part(&source.borrow_and_update());
            tx.send_if_modified(|current| {
                let modified = *current != next;
                if modified {
                    *current = next;
                }
                modified
            });
        }
    });
    rx
}

/// A receiver that always holds `value` (for settings that never change, e.g. in the CLI).
pub fn fixed<T>(value: T) -> watch::Receiver<T> {
    watch::channel(value).1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_projection_sees_only_changes_of_its_part() {
        let (tx, rx) = watch::channel(Arc::new((1_u32, "a")));
        let mut first = project(&rx, |s| s.0);
        assert_eq!(*first.borrow(), 1);
        tx.send_replace(Arc::new((1, "b")));
        tx.send_replace(Arc::new((2, "b")));
        first.changed().await.expect("changed");
        assert_eq!(*first.borrow_and_update(), 2);
        drop(tx);
        assert!(first.changed().await.is_err(), "ends with the source");
        assert_eq!(*first.borrow(), 2, "keeps the last value");
    }
}
