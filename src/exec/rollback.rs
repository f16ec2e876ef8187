//! Undo stack for provisioning: every step that builds something registers how to take it
//! down again; if the run does not reach [`Rollback::commit`], the undo actions run in
//! reverse order, also while unwinding from a panic (the release profile keeps
//! `panic = "unwind"` for exactly this).

use std::fmt;

use crate::error::{Error, Leftover};

type UndoFn = Box<dyn FnOnce() -> anyhow::Result<()>>;

pub struct Rollback {
    steps: Vec<(String, UndoFn)>,
}

impl fmt::Debug for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|(what, _)| what))
            .finish()
    }
}

impl Default for Rollback {
    fn default() -> Self {
        Self::new()
    }
}

impl Rollback {
    pub fn new() -> Self {
        Rollback { steps: Vec::new() }
    }

    /// Register the undo of a step that just succeeded. `what` names the thing to undo
    /// (for example "dm mapping ephemeral-encrypted").
    pub fn push(
        &mut self,
        what: impl Into<String>,
        undo: impl FnOnce() -> anyhow::Result<()> + 'static,
    ) {
        self.steps.push((what.into(), Box::new(undo)));
    }

    /// The run succeeded: keep everything that was built.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Keep what was built if `result` is a success; otherwise undo it, and say so in the
    /// error: [`Error::RolledBack`] when nothing is left, [`Error::RollbackIncomplete`] with
    /// what is left otherwise. A failure before anything was built stays as it is.
    pub fn settle<T>(self, result: Result<T, Error>) -> Result<T, Error> {
        match result {
            Ok(value) => {
                self.commit();
                Ok(value)
            }
            Err(failure) => {
                let built_anything = !self.steps.is_empty();
                let leftovers = self.unwind();
                let failure = Box::new(failure);
                Err(if !leftovers.is_empty() {
                    Error::RollbackIncomplete { failure, leftovers }
                } else if built_anything {
                    Error::RolledBack { failure }
                } else {
                    *failure
                })
            }
        }
    }

    /// Undo everything now, newest first; returns what could not be undone.
    pub fn unwind(mut self) -> Vec<Leftover> {
        self.run_undo()
    }

    fn run_undo(&mut self) -> Vec<Leftover> {
        let mut leftovers = Vec::new();
        while let Some((what, undo)) = self.steps.pop() {
            if let Err(error) = undo() {
                leftovers.push(Leftover {
                    what,
                    error: crate::error::render_chain(&error),
                });
            }
        }
        leftovers
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        for leftover in self.run_undo() {
            eprintln!("tosskey: rollback could not remove {leftover}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<&'static str>>>;
    type UndoFactory = Box<dyn Fn(&'static str) -> UndoFn>;

    /// A shared log and a factory of undo actions that append their name to it.
    fn recorder() -> (Log, UndoFactory) {
        let log: Log = Rc::default();
        let shared = Rc::clone(&log);
        let factory = move |name| -> UndoFn {
            let log = Rc::clone(&shared);
            Box::new(move || {
                log.borrow_mut().push(name);
                Ok(())
            })
        };
        (log, Box::new(factory))
    }

    #[test]
    fn unwinds_in_reverse_order() {
        let (log, undo) = recorder();
        let mut rollback = Rollback::new();
        rollback.push("md", undo("md"));
        rollback.push("dm", undo("dm"));
        rollback.push("mount", undo("mount"));
        assert!(rollback.unwind().is_empty());
        assert_eq!(*log.borrow(), ["mount", "dm", "md"]);
    }

    #[test]
    fn commit_keeps_everything() {
        let (log, undo) = recorder();
        let mut rollback = Rollback::new();
        rollback.push("md", undo("md"));
        rollback.commit();
        assert!(log.borrow().is_empty());
    }

    #[test]
    fn drop_without_commit_undoes_even_on_panic() {
        let (log, undo) = recorder();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rollback = Rollback::new();
            rollback.push("md", undo("md"));
            panic!("step failed");
        }));
        assert!(result.is_err());
        assert_eq!(*log.borrow(), ["md"]);
    }

    #[test]
    fn failed_undo_is_reported_and_the_rest_still_runs() {
        let (log, undo) = recorder();
        let mut rollback = Rollback::new();
        rollback.push("md", undo("md"));
        rollback.push("dm ephemeral-encrypted", || anyhow::bail!("EBUSY"));
        let leftovers = rollback.unwind();
        assert_eq!(leftovers.len(), 1);
        assert_eq!(leftovers[0].to_string(), "dm ephemeral-encrypted (EBUSY)");
        assert_eq!(*log.borrow(), ["md"]);
    }

    #[test]
    fn settle_keeps_on_success_and_reports_leftovers_on_failure() {
        let (log, undo) = recorder();
        let mut rollback = Rollback::new();
        rollback.push("md", undo("md"));
        assert_eq!(rollback.settle(Ok(7)).unwrap(), 7);
        assert!(log.borrow().is_empty());

        let mut rollback = Rollback::new();
        rollback.push("dm x", || anyhow::bail!("EBUSY"));
        let err = rollback
            .settle::<()>(Err(anyhow::anyhow!("mkfs failed").into()))
            .unwrap_err();
        assert_eq!(err.exit_code(), crate::error::ROLLBACK_INCOMPLETE);
        assert!(format!("{err:#}").contains("dm x (EBUSY)"), "{err:#}");
    }

    #[test]
    fn a_failure_says_whether_anything_was_rolled_back() {
        let (log, undo) = recorder();
        let mut rollback = Rollback::new();
        rollback.push("dm x", undo("dm x"));
        let err = rollback
            .settle::<()>(Err(anyhow::anyhow!("mkfs failed").into()))
            .unwrap_err();
        assert_eq!(*log.borrow(), ["dm x"]);
        assert_eq!(err.exit_code(), crate::error::FAILED);
        assert_eq!(
            crate::error::render(&err),
            "mkfs failed; the run was rolled back and nothing it built is left"
        );
        // Nothing built yet: the failure is all there is to say.
        let err = Rollback::new()
            .settle::<()>(Err(anyhow::anyhow!("no such key").into()))
            .unwrap_err();
        assert_eq!(crate::error::render(&err), "no such key");
    }
}
