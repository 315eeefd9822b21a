//! Connections at rest: no task and no read buffer, only a readiness poll posted to io_uring.
//!
//! tokio-uring 0.5 has neither multishot receive nor provided buffers, so a read posted on a
//! quiet connection holds a buffer, and the task awaiting it (a tokio task cell of a few
//! hundred bytes) lives as long as the connection. A quiet plain socket instead gets an
//! `IORING_OP_POLL_ADD`, submitted through tokio-uring's public [`UnsubmittedOneshot`], and
//! the worker keeps every such poll in one [`IdleSet`]: one node of a `FuturesUnordered` per
//! connection. When a poll completes, the worker starts the connection's reader again; the
//! bytes are read only then, into a buffer that exists only while they are handled. A poll
//! consumes nothing from the socket, so nothing is lost between the poll and the read.

use std::cell::RefCell;
use std::future::poll_fn;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use io_uring::{cqueue, opcode, types};
use tokio_uring::{InFlightOneshot, OneshotOutputTransform, UnsubmittedOneshot};

/// The completion of a readiness poll: gives back what was parked with it. Whether the
/// socket is readable, closed or in error, the reader's next read says.
struct Readable<T>(std::marker::PhantomData<T>);

impl<T> OneshotOutputTransform for Readable<T> {
    type Output = T;
    type StoredData = T;

    fn transform_oneshot_output(self, data: T, _cqe: cqueue::Entry) -> T {
        data
    }
}

/// Sockets waiting to become readable, each with what its owner needs to resume it.
pub(crate) struct IdleSet<T: Unpin + 'static> {
    waits: RefCell<FuturesUnordered<InFlightOneshot<T, Readable<T>>>>,
    /// The task in [`next`](Self::next), woken when a poll is added: `FuturesUnordered`
    /// does not wake it for a new member.
    waker: RefCell<Option<Waker>>,
}

impl<T: Unpin + 'static> IdleSet<T> {
    /// An empty set.
    pub(crate) fn new() -> Self {
        IdleSet {
            waits: RefCell::new(FuturesUnordered::new()),
            waker: RefCell::new(None),
        }
    }

    /// Waits for `fd` to become readable (or closed, or in error), then gives `data` back
    /// from [`next`](Self::next). `data` must keep `fd` open until then. Must run inside
    /// the tokio-uring runtime.
    pub(crate) fn park(&self, fd: RawFd, data: T) {
        let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).build();
        let wait = UnsubmittedOneshot::new(data, Readable(std::marker::PhantomData), poll).submit();
        self.waits.borrow_mut().push(wait);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// The data of the next socket that became readable.
    pub(crate) async fn next(&self) -> T {
        poll_fn(|cx| match self.waits.borrow_mut().poll_next_unpin(cx) {
            Poll::Ready(Some(data)) => Poll::Ready(data),
            // Empty, or nothing ready: wait for a completion or a new member.
            Poll::Ready(None) | Poll::Pending => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// How many sockets are parked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waits.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn a_parked_socket_comes_back_when_bytes_arrive_and_keeps_them() {
        tokio_uring::start(async {
            let set = IdleSet::new();
            let (quiet, _quiet_peer) = UnixStream::pair().unwrap();
            let (busy, mut busy_peer) = UnixStream::pair().unwrap();
            set.park(quiet.as_raw_fd(), "quiet");
            set.park(busy.as_raw_fd(), "busy");
            assert_eq!(set.len(), 2);
            busy_peer.write_all(b"hello").unwrap();
            let woke = tokio::time::timeout(Duration::from_secs(5), set.next()).await;
            assert_eq!(woke, Ok("busy"));
            assert_eq!(set.len(), 1);
            // The poll consumed nothing: the bytes are all still there for the reader.
            let busy = tokio_uring::net::UnixStream::from_std(busy);
            let (read, buf) = busy.read(Vec::with_capacity(16)).await;
            assert_eq!(read.unwrap(), 5);
            assert_eq!(&buf[..5], b"hello");
            // The quiet one stays parked.
            let nothing = tokio::time::timeout(Duration::from_millis(100), set.next()).await;
            assert!(nothing.is_err());
        });
    }

    #[test]
    fn shutting_a_parked_socket_down_on_this_side_brings_it_back() {
        // How a connection the broker closes leaves the set: its writer shuts the socket
        // down, and the poll must complete, or the set would keep the socket open.
        tokio_uring::start(async {
            let set = IdleSet::new();
            let (socket, _peer) = UnixStream::pair().unwrap();
            set.park(socket.as_raw_fd(), "closed");
            socket.shutdown(std::net::Shutdown::Both).unwrap();
            let woke = tokio::time::timeout(Duration::from_secs(5), set.next()).await;
            assert_eq!(woke, Ok("closed"));
        });
    }

    #[test]
    fn a_socket_parked_while_the_set_waits_wakes_it() {
        tokio_uring::start(async {
            let set = std::rc::Rc::new(IdleSet::new());
            let waiter = tokio_uring::spawn({
                let set = set.clone();
                async move { set.next().await }
            });
            // Let the waiter find the set empty and sleep.
            tokio::task::yield_now().await;
            let (socket, peer) = UnixStream::pair().unwrap();
            set.park(socket.as_raw_fd(), 7u32);
            // A closed peer makes the socket readable (end of stream).
            drop(peer);
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert_eq!(woke.unwrap().unwrap(), 7);
        });
    }
}
