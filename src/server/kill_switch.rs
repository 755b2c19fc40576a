//! Connections that can be cut.
//!
//! tonic's graceful shutdown asks every connection to finish and then waits
//! for it, with no deadline, and each connection runs in a task of its own,
//! so an open stream would outlive the server. Every accepted socket is
//! wrapped here: once the kill switch is thrown, its reads and writes fail,
//! which ends the connection and its streams.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// An accepted TCP connection that fails once `killed` is cancelled.
pub struct KillableConnection {
    /// The socket.
    inner: TcpStream,
    /// Resolves when the kill switch is thrown.
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl KillableConnection {
    /// Wraps `inner`, to be cut when `switch` is cancelled.
    pub fn new(inner: TcpStream, switch: &CancellationToken) -> Self {
        KillableConnection {
            inner,
            killed: Box::pin(switch.clone().cancelled_owned()),
        }
    }

    /// The address of the other end, when the socket still knows it.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.peer_addr().ok()
    }

    /// Fails once the switch is thrown; otherwise registers for it and
    /// returns `Ok`.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed at the end of the shutdown grace",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for KillableConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
