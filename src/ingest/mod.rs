//! Turning uploaded bytes into searchable chunks: pure functions, no I/O, so
//! they are unit-tested directly and run on a blocking thread by the worker.

pub mod chunk;
pub mod extract;
mod html;
pub mod shingles;
