//! Asking every shard: a job per worker, through its inbox, and the answers gathered.

use std::sync::mpsc;
use std::time::Duration;

use petrel_state::broker::Broker;
use petrel_state::Instant;

use crate::shared::{Shared, WorkerMessage};

/// How long an operator's request waits for a busy worker.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `job` on every shard (with the worker's index) and returns the answers in worker
/// order; `None` if a worker did not answer in time (it is stopping, or stuck).
pub(crate) fn ask_all<T, F>(shared: &Shared, job: F) -> Option<Vec<T>>
where
    T: Send + 'static,
    F: Fn(&mut Broker, Instant, usize) -> T + Send + Sync + Clone + 'static,
{
    let workers = shared.workers();
    let (sender, receiver) = mpsc::channel();
    for index in 0..workers {
        let sender = sender.clone();
        let job = job.clone();
        shared.send(
            index,
            WorkerMessage::Admin(Box::new(move |broker, now| {
                let _ = sender.send((index, job(broker, now, index)));
            })),
        );
    }
    drop(sender);
    let mut answers: Vec<Option<T>> = (0..workers).map(|_| None).collect();
    for _ in 0..workers {
        let (index, answer) = receiver.recv_timeout(ANSWER_TIMEOUT).ok()?;
        answers[index] = Some(answer);
    }
    answers.into_iter().collect()
}
