//! A demo business backend for Parley: a fictional shop (orders) and clinic (appointments) served as an MCP server.
//!
//! It is what Parley's MCP bridge talks to in the demo and in tests: state in SQLite (so it survives restarts), a
//! journal of every tool call with the `_meta` it carried (so tests can check what reached the backend), and test
//! hooks ([`Hooks`]) to make calls slow or crash the process mid-call.
//!
//! The binary serves stdio (`demo-backend --stdio --db PATH`) or Streamable HTTP at `/mcp`
//! (`demo-backend --http 127.0.0.1:0 --db PATH`, first stdout line `demo-backend listening on ADDR`). Tests of
//! other crates can also serve HTTP in-process with [`serve_http`].

pub mod server;
pub mod store;
pub mod tools;

pub use server::{serve_http, serve_stdio, DemoBackend, Hooks, ServeError};
pub use store::{read_journal, JournalEntry, Store, StoreError};
