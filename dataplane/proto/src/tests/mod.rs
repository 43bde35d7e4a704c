//! Unit and property tests spanning several modules.

mod extensions;
mod interop_flight;
mod interop_vectors;
mod messages;
mod props;
mod reassembly;
mod samples;
