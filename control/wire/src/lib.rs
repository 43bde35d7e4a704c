//! dtls-wire
