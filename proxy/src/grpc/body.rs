//! The request body of a gRPC call on its way to the backend: what the
//! client sent so far (replayed when the call moves to another backend),
//! then whatever the call's pump reads from the client next.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pingora::proxy::Session;
use tokio::sync::mpsc;

/// What the pump hands the body.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Bytes),
    /// The call is given up: the backend's stream is reset, not ended.
    Abort,
}

/// Ends the backend's stream with `RST_STREAM` (hyper resets a stream
/// whose request body fails) instead of a clean end.
#[derive(Debug, thiserror::Error)]
#[error("the call was ended by the proxy")]
pub struct Aborted;

/// The request body hyper sends: replayed chunks first, then live ones.
#[derive(Debug)]
pub(crate) struct RequestBody {
    replay: VecDeque<Bytes>,
    live: mpsc::Receiver<Chunk>,
}

impl RequestBody {
    /// A body that first sends `replay`, then what arrives on `live`; it
    /// ends when every sender of `live` is gone.
    pub(crate) fn new(replay: VecDeque<Bytes>, live: mpsc::Receiver<Chunk>) -> Self {
        Self { replay, live }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        if let Some(chunk) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match self.live.poll_recv(cx) {
            Poll::Ready(Some(Chunk::Data(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Poll::Ready(Some(Chunk::Abort)) => Poll::Ready(Some(Err(Aborted))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The request bytes a call keeps for a replay on another backend: at
/// most [`REPLAY_LIMIT`]; past it the call can no longer move.
#[derive(Debug, Default)]
pub(crate) struct ReplayBuffer {
    chunks: VecDeque<Bytes>,
    len: usize,
    truncated: bool,
}

/// pingora keeps the same amount for its own retries.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

impl ReplayBuffer {
    /// Keeps `chunk` (cheap: `Bytes` is shared) while under the limit.
    pub(crate) fn keep(&mut self, chunk: &Bytes) {
        if self.truncated {
            return;
        }
        self.len += chunk.len();
        if self.len > REPLAY_LIMIT {
            self.truncated = true;
            self.chunks.clear();
        } else {
            self.chunks.push_back(chunk.clone());
        }
    }

    /// Everything sent so far, if all of it was kept.
    pub(crate) fn replay(&self) -> Option<VecDeque<Bytes>> {
        (!self.truncated).then(|| self.chunks.clone())
    }

    /// Forgets what was kept (the call reached its backend for good).
    pub(crate) fn release(&mut self) {
        self.truncated = true;
        self.chunks = VecDeque::new();
    }
}

/// Request messages in flight between the client and the backend.
#[derive(Debug)]
pub(crate) struct Upload {
    tx: Option<mpsc::Sender<Chunk>>,
    /// Room for the next chunk in `tx`'s queue, taken before reading it.
    permit: Option<mpsc::OwnedPermit<Chunk>>,
    replay: ReplayBuffer,
    /// The client may still send.
    open: bool,
}

/// Chunks queued towards hyper; a small window keeps backpressure.
const QUEUE: usize = 8;

impl Upload {
    /// An upload for a request whose body is still to come (`open`), or
    /// already complete.
    pub(crate) fn new(open: bool) -> Self {
        Self {
            tx: None,
            permit: None,
            replay: ReplayBuffer::default(),
            open,
        }
    }

    /// True while the client may still send request messages.
    pub(crate) fn open(&self) -> bool {
        self.open
    }

    /// A body for a new attempt: what was sent so far, then what comes.
    /// `None` when what was sent can no longer be replayed.
    pub(crate) fn attempt(&mut self) -> Option<RequestBody> {
        let replay = self.replay.replay()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        // A finished request: the body ends after the replay.
        self.tx = self.open.then_some(tx);
        self.permit = None;
        Some(RequestBody::new(replay, rx))
    }

    /// Can what was sent so far go to another backend?
    pub(crate) fn replayable(&self) -> bool {
        !self.replay.truncated
    }

    /// The call reached its backend for good: nothing more to replay.
    pub(crate) fn committed(&mut self) {
        self.replay.release();
    }

    /// Reads the client's next chunk once the backend can take it. The wait
    /// for room happens here, in a `select!` arm, never in `forward`: a
    /// backend that grants no flow-control window must not keep the call's
    /// loop from its response, its notice and the client. The queue stays
    /// bounded: one chunk is read per permit. Cancel-safe (a permit taken
    /// is kept for the next read).
    pub(crate) async fn read(&mut self, session: &mut Session) -> pingora::Result<Option<Bytes>> {
        if self.permit.is_none() {
            if let Some(tx) = &self.tx {
                match tx.clone().reserve_owned().await {
                    Ok(permit) => self.permit = Some(permit),
                    // hyper dropped the body: the stream failed, and its
                    // response says how. What the client sends is dropped.
                    Err(_) => self.tx = None,
                }
            }
        }
        session.read_request_body().await
    }

    /// Passes what `read` got on, without waiting. `Err` when the client
    /// broke off.
    pub(crate) fn forward(&mut self, read: pingora::Result<Option<Bytes>>) -> Result<(), ()> {
        match read {
            // An empty read carries nothing, and an empty DATA frame
            // without END_STREAM counts against the backend's budget of
            // them (h2 answers too many with GOAWAY ENHANCE_YOUR_CALM).
            Ok(Some(chunk)) if chunk.is_empty() => Ok(()),
            Ok(Some(chunk)) => {
                self.replay.keep(&chunk);
                // No permit: no body to feed (see `read`). A body dropped
                // since drops the chunk: its response says why.
                if let Some(permit) = self.permit.take() {
                    permit.send(Chunk::Data(chunk));
                }
                Ok(())
            }
            Ok(None) => {
                // Dropping the sender ends the body: END_STREAM upstream.
                self.open = false;
                self.tx = None;
                self.permit = None;
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// Gives the backend's stream up: a reset, not a clean end. (When the
    /// queue is full or the body already ended, dropping the response
    /// resets it: h2 cancels a stream nobody holds any more.)
    pub(crate) fn abort(&mut self) {
        let tx = self.tx.take();
        match (self.permit.take(), tx) {
            (Some(permit), _) => {
                permit.send(Chunk::Abort);
            }
            (None, Some(tx)) => {
                let _ = tx.try_send(Chunk::Abort);
            }
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn replayed_chunks_come_first_then_live_ones_then_the_end() {
        let (tx, rx) = mpsc::channel(4);
        let mut body = RequestBody::new(VecDeque::from([Bytes::from_static(b"a")]), rx);
        tx.send(Chunk::Data(Bytes::from_static(b"b"))).await.unwrap();
        drop(tx);
        let collected = (&mut body).collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"ab");
    }

    #[tokio::test]
    async fn an_abort_fails_the_body() {
        let (tx, rx) = mpsc::channel(4);
        let body = RequestBody::new(VecDeque::new(), rx);
        tx.send(Chunk::Abort).await.unwrap();
        assert!(body.collect().await.is_err());
    }

    #[test]
    fn the_replay_buffer_gives_up_past_its_limit() {
        let mut buffer = ReplayBuffer::default();
        buffer.keep(&Bytes::from(vec![0; REPLAY_LIMIT]));
        assert_eq!(buffer.replay().map(|c| c.len()), Some(1));
        buffer.keep(&Bytes::from_static(b"x"));
        assert!(buffer.replay().is_none());
    }
}
