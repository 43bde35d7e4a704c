//! dtls-crypto
