//! DTLS 1.3 wire formats (RFC 9147 on RFC 8446): the extension bodies TLS 1.3 adds and the
//! handshake messages it adds or reshapes. Codecs only: the DTLS 1.3 engine that uses them,
//! the record layer's unified header and the key schedule live elsewhere.

pub mod extensions;
pub mod messages;

pub use extensions::{KeyShareEntry, OfferedPsks, PskIdentity, PskKeyExchangeMode};
pub use messages::{
    Ack, Certificate13, CertificateEntry, CertificateRequest13, ConnectionIdUsage,
    EncryptedExtensions, Finished13, HELLO_RETRY_REQUEST_RANDOM, KeyUpdate, NewConnectionId,
    NewSessionTicket13, RecordNumber, RequestConnectionId,
};

#[cfg(test)]
mod tests;
