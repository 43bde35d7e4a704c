//! OpenSSL's DTLS 1.2 through the `openssl` crate, over an in-memory datagram pipe.
//!
//! The pipe is a pair of datagram queues behind `Read`/`Write`: one `write` from OpenSSL is
//! one datagram, one `read` returns one whole datagram (or `WouldBlock`), which is what
//! OpenSSL's DTLS code expects of a datagram BIO. Buffers are recycled, so after warm-up the
//! pipe allocates nothing; its cost is one copy in and one copy out per datagram.
//! Retransmission timers never fire (the pipe loses nothing and reports no timeouts).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use openssl::error::ErrorStack;
use openssl::pkey::PKey;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslMethod, SslOptions, SslSessionCacheMode, SslStream,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;

use super::{PeersError, Pki, SUITE_OPENSSL};

#[derive(Debug, Default)]
struct Pipe {
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    /// HelloVerifyRequests the server sent (handshake record, msg_type 3).
    hello_verify_requests: u64,
}

/// One end of the in-memory pipe.
#[derive(Debug)]
struct End {
    pipe: Rc<RefCell<Pipe>>,
    is_client: bool,
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.pipe.borrow_mut();
        let inbound = if self.is_client {
            &mut p.to_client
        } else {
            &mut p.to_server
        };
        let Some(dg) = inbound.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // Like UDP: a datagram longer than the buffer is truncated.
        let n = dg.len().min(buf.len());
        buf[..n].copy_from_slice(&dg[..n]);
        p.free.push(dg);
        Ok(n)
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut p = self.pipe.borrow_mut();
        let mut dg = p.free.pop().unwrap_or_default();
        dg.clear();
        dg.extend_from_slice(buf);
        if self.is_client {
            p.to_server.push_back(dg);
        } else {
            // Record content type 22 (handshake), then msg_type at offset 13.
            if buf.first() == Some(&22) && buf.get(13) == Some(&3) {
                p.hello_verify_requests += 1;
            }
            p.to_client.push_back(dg);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A DTLS 1.2-only context builder with the suite and groups both sides use.
fn dtls12_builder() -> Result<openssl::ssl::SslContextBuilder, ErrorStack> {
    let mut b = SslContext::builder(SslMethod::dtls())?;
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_max_proto_version(Some(SslVersion::DTLS1_2))?;
    b.set_cipher_list(SUITE_OPENSSL)?;
    // P-256 must be offered too: a TLS 1.2 server only uses an ECDSA certificate whose curve
    // the client lists (RFC 4492 §5.1). X25519 is preferred for ECDHE.
    b.set_groups_list("X25519:P-256")?;
    // The pipe answers no BIO_CTRL_DGRAM_QUERY_MTU; the MTU is set per SSL.
    b.set_options(SslOptions::NO_QUERY_MTU);
    Ok(b)
}

/// The server context of B8: DTLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256, X25519 then
/// P-256, the certificate chain and key from PEM, cookie exchange on (HMAC-SHA256 cookies
/// under `cookie_secret`), tickets on, session cache off. The cookie is not bound to the
/// client's address (the callbacks do not see it): a benchmark server, not a DoS defence.
pub(super) fn server_context(
    cert_pem: &[u8],
    key_pem: &[u8],
    cookie_secret: &[u8; 32],
) -> Result<SslContext, ErrorStack> {
    let mut b = dtls12_builder()?;
    let mut chain = X509::stack_from_pem(cert_pem)?.into_iter();
    if let Some(cert) = chain.next() {
        b.set_certificate(&cert)?;
    }
    for extra in chain {
        b.add_extra_chain_cert(extra)?;
    }
    let key = PKey::private_key_from_pem(key_pem)?;
    b.set_private_key(&key)?;
    b.check_private_key()?;
    b.set_options(SslOptions::COOKIE_EXCHANGE);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    let key = hmac::Key::new(hmac::HMAC_SHA256, cookie_secret);
    let k2 = key.clone();
    b.set_cookie_generate_cb(move |_ssl, buf| {
        let tag = hmac::sign(&key, b"in-memory peer");
        let n = tag.as_ref().len().min(buf.len());
        buf[..n].copy_from_slice(&tag.as_ref()[..n]);
        Ok(n)
    });
    b.set_cookie_verify_cb(move |_ssl, cookie| {
        hmac::verify(&k2, b"in-memory peer", cookie).is_ok()
    });
    Ok(b.build())
}

/// OpenSSL client and server contexts.
pub(super) struct OpenSsl {
    client: SslContext,
    server: SslContext,
    mtu: u32,
}

impl std::fmt::Debug for OpenSsl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSsl").field("mtu", &self.mtu).finish()
    }
}

pub(super) fn ssl_err(what: &str, e: impl std::fmt::Display) -> PeersError {
    PeersError::OpenSsl(format!("{what}: {e}"))
}

impl OpenSsl {
    /// DTLS 1.2 only, ECDHE-ECDSA-AES128-GCM-SHA256, X25519, cookie exchange on (HMAC-SHA256
    /// cookies), the client verifying the chain and the name `localhost`, tickets on,
    /// server session cache off.
    pub(super) fn new(pki: &Pki, mtu: u32) -> Result<Self, PeersError> {
        let client = || -> Result<SslContext, ErrorStack> {
            let mut b = dtls12_builder()?;
            b.set_verify(SslVerifyMode::PEER);
            b.cert_store_mut()
                .add_cert(X509::from_pem(pki.ca_cert_pem.as_bytes())?)?;
            Ok(b.build())
        };
        Ok(Self {
            client: client().map_err(|e| ssl_err("client context", e))?,
            server: server_context(
                pki.server_cert_pem.as_bytes(),
                pki.server_key_pem.as_bytes(),
                &pki.cookie_secret,
            )
            .map_err(|e| ssl_err("server context", e))?,
            mtu,
        })
    }

    /// A fresh client `Ssl` (connect state, verifying `localhost`) and server `Ssl` (accept
    /// state), both with the configured MTU, not yet bound to any transport.
    pub(super) fn ssl_pair(&self) -> Result<(Ssl, Ssl), PeersError> {
        let mut c = Ssl::new(&self.client).map_err(|e| ssl_err("client", e))?;
        c.param_mut()
            .set_host("localhost")
            .map_err(|e| ssl_err("verify host", e))?;
        c.set_connect_state();
        c.set_mtu(self.mtu).map_err(|e| ssl_err("client MTU", e))?;
        let mut s = Ssl::new(&self.server).map_err(|e| ssl_err("server", e))?;
        s.set_accept_state();
        s.set_mtu(self.mtu).map_err(|e| ssl_err("server MTU", e))?;
        Ok((c, s))
    }

    /// A connected client/server pair after one full handshake.
    fn pair(&self) -> Result<(SslStream<End>, SslStream<End>), PeersError> {
        let pipe = Rc::new(RefCell::new(Pipe::default()));
        let hvr = Rc::clone(&pipe);
        let (c, s) = self.ssl_pair()?;
        let mut c = SslStream::new(
            c,
            End {
                pipe: Rc::clone(&pipe),
                is_client: true,
            },
        )
        .map_err(|e| ssl_err("client stream", e))?;
        let mut s = SslStream::new(
            s,
            End {
                pipe,
                is_client: false,
            },
        )
        .map_err(|e| ssl_err("server stream", e))?;
        let (mut c_done, mut s_done) = (false, false);
        for _ in 0..64 {
            for (done, stream, who) in [
                (&mut c_done, &mut c, "client"),
                (&mut s_done, &mut s, "server"),
            ] {
                if !*done {
                    match stream.do_handshake() {
                        Ok(()) => *done = true,
                        Err(e) if e.code() == ErrorCode::WANT_READ => {}
                        Err(e) => return Err(ssl_err(&format!("{who} handshake"), e)),
                    }
                }
            }
            if c_done && s_done {
                if hvr.borrow().hello_verify_requests == 0 {
                    return Err(PeersError::OpenSsl(
                        "the server sent no HelloVerifyRequest (cookie exchange off?)".into(),
                    ));
                }
                return Ok((c, s));
            }
        }
        Err(PeersError::OpenSsl(
            "handshake did not complete in memory".into(),
        ))
    }

    /// Full handshakes for at least `min` (at least one): (count, elapsed).
    pub(super) fn handshakes(&self, min: Duration) -> Result<(u64, Duration), PeersError> {
        let t0 = Instant::now();
        let mut n = 0u64;
        while n == 0 || t0.elapsed() < min {
            let pair = self.pair()?;
            std::hint::black_box(&pair);
            n += 1;
        }
        Ok((n, t0.elapsed()))
    }

    /// A session for record measurements.
    pub(super) fn session(&self) -> Result<OpenSslSession, PeersError> {
        let (client, server) = self.pair()?;
        Ok(OpenSslSession { client, server })
    }
}

/// An established OpenSSL pair.
pub(super) struct OpenSslSession {
    client: SslStream<End>,
    server: SslStream<End>,
}

impl std::fmt::Debug for OpenSslSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSslSession").finish_non_exhaustive()
    }
}

impl OpenSslSession {
    /// `SSL_write` of `payload` by the client and `SSL_read` by the server, one record each,
    /// for at least `min` (at least 64 records): (records, elapsed).
    pub(super) fn records(
        &mut self,
        payload: &[u8],
        min: Duration,
    ) -> Result<(u64, Duration), PeersError> {
        let mut rbuf = vec![0u8; payload.len() + 2048];
        let t0 = Instant::now();
        let mut n = 0u64;
        while n == 0 || t0.elapsed() < min {
            for _ in 0..64 {
                let w = self
                    .client
                    .ssl_write(std::hint::black_box(payload))
                    .map_err(|e| ssl_err("SSL_write", e))?;
                let r = self
                    .server
                    .ssl_read(&mut rbuf)
                    .map_err(|e| ssl_err("SSL_read", e))?;
                if w != payload.len() || r != payload.len() {
                    return Err(PeersError::OpenSsl(format!(
                        "record of {} bytes: wrote {w}, read {r}",
                        payload.len()
                    )));
                }
                std::hint::black_box(&rbuf);
            }
            n += 64;
        }
        Ok((n, t0.elapsed()))
    }
}
