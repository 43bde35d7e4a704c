//! DTLS 1.2 handshake engine (sans-IO). Work in progress.
