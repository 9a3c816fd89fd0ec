//! Query embeddings that find every in-flight slot taken ride together. They
//! wait as one group per (model, dimensions), and the next slot this task gets
//! carries the whole group in one provider request (up to the batch limits),
//! so under load queries spend a fraction of the slots and requests they would
//! alone, and a query waits for one request's turn, not for every query ahead
//! of it. A query that finds a slot free is sent at once, alone.
//!
//! Every non-empty group has exactly one dispatcher taking slots for it: the
//! query that makes a group non-empty starts it, and it runs until it leaves
//! the group empty. Dispatchers and sends are tasks of their own, so a caller
//! that goes away (a client disconnect) strands nobody.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::batcher::BatchLimits;
use super::limiter::{Lane, Slot};
use super::{CallContext, Gateway, LlmError, Paced};

/// One query waiting for a slot.
pub(super) struct Waiter {
    pub ctx: CallContext,
    pub text: String,
    pub tokens: usize,
    /// When the query was asked for, to record how long it waited for a slot.
    pub asked: tokio::time::Instant,
    pub reply: oneshot::Sender<Result<Vec<f32>, LlmError>>,
}

type GroupKey = (String, usize);

#[derive(Default)]
pub(super) struct QueryGroups {
    groups: Mutex<HashMap<GroupKey, Vec<Waiter>>>,
}

impl QueryGroups {
    /// Adds `waiter` to its group; true if the group was empty, so the caller
    /// must start its dispatcher.
    fn join(&self, key: &GroupKey, waiter: Waiter) -> bool {
        let mut groups = self.groups.lock().unwrap();
        let group = groups.entry(key.clone()).or_default();
        group.push(waiter);
        group.len() == 1
    }

    /// Takes the oldest waiters that fit one request; true if some are left.
    fn take(&self, key: &GroupKey, limits: BatchLimits) -> (Vec<Waiter>, bool) {
        let mut groups = self.groups.lock().unwrap();
        let Some(group) = groups.get_mut(key) else { return (Vec::new(), false) };
        group.retain(|w| !w.reply.is_closed());
        let (mut count, mut tokens) = (0, 0);
        while count < group.len()
            && count < limits.inputs
            && (count == 0 || tokens + group[count].tokens <= limits.tokens)
        {
            tokens += group[count].tokens;
            count += 1;
        }
        let taken: Vec<Waiter> = group.drain(..count).collect();
        let left = !group.is_empty();
        if !left {
            groups.remove(key);
        }
        (taken, left)
    }
}

/// Waits in the group for `(model, dims)` and returns this query's vector.
pub(super) async fn embed_in_group(
    gateway: &Arc<Gateway>,
    model: &str,
    dims: usize,
    ctx: &CallContext,
    text: &str,
    tokens: usize,
) -> Result<Vec<f32>, LlmError> {
    let key = (model.to_string(), dims);
    let (reply, vector) = oneshot::channel();
    let waiter = Waiter { ctx: ctx.clone(), text: text.to_string(), tokens, asked: tokio::time::Instant::now(), reply };
    if gateway.query_groups.join(&key, waiter) {
        tokio::spawn(dispatch(gateway.clone(), key));
    }
    vector.await.map_err(|_| LlmError::Unavailable("the query embedding was dropped".into()))?
}

/// Sends the group a request per slot until it is empty.
async fn dispatch(gateway: Arc<Gateway>, key: GroupKey) {
    loop {
        let slot = gateway.limiter.slot(Lane::Query).await;
        let (waiters, left) = gateway.query_groups.take(&key, gateway.batch_limits());
        if !waiters.is_empty() {
            tokio::spawn(send(gateway.clone(), key.clone(), waiters, slot));
        }
        if !left {
            return;
        }
    }
}

async fn send(gateway: Arc<Gateway>, (model, dims): GroupKey, waiters: Vec<Waiter>, slot: Slot) {
    let shares: Vec<(CallContext, usize)> = waiters.iter().map(|w| (w.ctx.clone(), w.tokens)).collect();
    let texts: Vec<String> = waiters.iter().map(|w| w.text.clone()).collect();
    let tokens = shares.iter().map(|(_, t)| t).sum();
    let asked = waiters.iter().map(|w| w.asked).min().unwrap_or_else(tokio::time::Instant::now);
    let result = gateway.embed_request(&shares, &model, dims, &texts, tokens, Paced::Query, asked).await;
    drop(slot);
    match result {
        Ok((vectors, _)) => {
            for (waiter, vector) in waiters.into_iter().zip(vectors) {
                let _ = waiter.reply.send(Ok(vector));
            }
        }
        Err(err) => {
            for waiter in waiters {
                let _ = waiter.reply.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(tokens: usize) -> (Waiter, oneshot::Receiver<Result<Vec<f32>, LlmError>>) {
        let (reply, rx) = oneshot::channel();
        (
            Waiter {
                ctx: CallContext::default(),
                text: String::new(),
                tokens,
                asked: tokio::time::Instant::now(),
                reply,
            },
            rx,
        )
    }

    #[test]
    fn a_group_is_taken_oldest_first_up_to_the_limits_and_skips_abandoned_queries() {
        let groups = QueryGroups::default();
        let key = ("m".to_string(), 3);
        let mut receivers = Vec::new();
        let mut first = Vec::new();
        for tokens in [10, 10, 10, 50, 10] {
            let (w, rx) = waiter(tokens);
            first.push(groups.join(&key, w));
            receivers.push(rx);
        }
        assert_eq!(first, [true, false, false, false, false], "only the first starts a dispatcher");
        drop(receivers.remove(1)); // its caller went away
        let (taken, left) = groups.take(&key, BatchLimits { inputs: 8, tokens: 60 });
        assert_eq!(taken.iter().map(|w| w.tokens).collect::<Vec<_>>(), [10, 10]);
        assert!(left);
        let (taken, left) = groups.take(&key, BatchLimits { inputs: 8, tokens: 60 });
        assert_eq!(taken.iter().map(|w| w.tokens).collect::<Vec<_>>(), [50, 10]);
        assert!(!left);
        let (w, _rx) = waiter(1);
        assert!(groups.join(&key, w), "an emptied group starts afresh");
    }
}
