//! Counts of the asymmetric operations run on this thread: key-share generations and
//! encapsulations (ECDHE, X25519, ML-KEM) and signatures. They are what makes a handshake
//! expensive, so a server must run none of them for a client that has not yet proved it
//! can receive at its address (RFC 9147 §5.1, RFC 6347 §4.2.1: the cookie exchange comes
//! first). Tests read the counts around an acceptor's answer to show it runs none; one
//! thread-local increment next to each operation costs nothing beside it.

use std::cell::Cell;

/// How many asymmetric operations this thread has run since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsymmetricOps {
    /// Ephemeral key pairs generated (ECDHE, X25519, an ML-KEM decapsulation key) and ML-KEM
    /// encapsulations.
    pub key_exchanges: u64,
    /// Signatures made with a [`crate::SigningKey`].
    pub signatures: u64,
}

thread_local! {
    static OPS: Cell<AsymmetricOps> = const {
        Cell::new(AsymmetricOps { key_exchanges: 0, signatures: 0 })
    };
}

/// The asymmetric operations this thread has run so far.
pub fn asymmetric_ops() -> AsymmetricOps {
    OPS.with(Cell::get)
}

pub(crate) fn count_key_exchange() {
    OPS.with(|ops| {
        let mut o = ops.get();
        o.key_exchanges += 1;
        ops.set(o);
    });
}

pub(crate) fn count_signature() {
    OPS.with(|ops| {
        let mut o = ops.get();
        o.signatures += 1;
        ops.set(o);
    });
}
