//! A scripted [`FaultInjector`] for tests: make chosen tasks' operations fail a number of times
//! (or always), and record when each attempt happened.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use sync_worker::faults::FaultInjector;
use tasksync_shared::Operation;
use uuid::Uuid;

/// How often a task's operations fail before they succeed.
#[derive(Clone, Copy, Debug)]
pub enum Failing {
    Times(u32),
    Always,
}

/// Fails the operations of scripted tasks and keeps a log of every attempt it saw.
#[derive(Debug, Default)]
pub struct ScriptedFaults {
    script: Mutex<HashMap<Uuid, Failing>>,
    attempts: Mutex<Vec<(Uuid, u32, Instant)>>,
}

impl ScriptedFaults {
    /// Scripts the operations of `task`.
    pub fn fail(&self, task: Uuid, how: Failing) {
        self.script.lock().unwrap().insert(task, how);
    }

    /// Lets the operations of `task` succeed from now on ("the cause is fixed").
    pub fn heal(&self, task: Uuid) {
        self.script.lock().unwrap().remove(&task);
    }

    /// (attempt number, when) of every attempt of operation `op_id`, in order.
    pub fn attempts_of(&self, op_id: Uuid) -> Vec<(u32, Instant)> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _, _)| *id == op_id)
            .map(|(_, n, at)| (*n, *at))
            .collect()
    }
}

impl FaultInjector for ScriptedFaults {
    fn before_apply(&self, op: &Operation, attempt: u32) -> Result<(), String> {
        let scripted = self.script.lock().unwrap().get(&op.task_id).copied();
        if scripted.is_some() {
            self.attempts
                .lock()
                .unwrap()
                .push((op.op_id, attempt, Instant::now()));
        }
        match scripted {
            Some(Failing::Always) => Err(format!("injected failure (attempt {attempt})")),
            Some(Failing::Times(n)) if attempt <= n => Err(format!(
                "injected failure (attempt {attempt} of {n} failing)"
            )),
            _ => Ok(()),
        }
    }
}
