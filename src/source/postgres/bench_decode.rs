//! The pgoutput decode path without a server, for the decode micro-benchmark (`benches/micro.rs`):
//! each message goes through the stream's own state machine (relation cache, table filter, row
//! rendering, transaction grouping). Not part of lynq's API.

use chrono::Utc;
use pgwire_replication::{Lsn, ReplicationEvent};

use super::{
    PostgresConfig, PostgresError,
    stream::{Step, StreamState},
};
use crate::source::SourceEvent;

/// The stream's decoder for one table.
pub struct Decoder(StreamState);

impl Decoder {
    /// A decoder for the table and columns of `config`.
    pub fn new(config: &PostgresConfig) -> Self {
        Self(StreamState::new(config))
    }

    /// Feeds one pgoutput message; returns a transaction once its Commit arrives.
    pub fn feed(&mut self, message: &[u8]) -> Result<Option<SourceEvent>, PostgresError> {
        let event = ReplicationEvent::XLogData {
            wal_start: Lsn(0),
            wal_end: Lsn(0),
            server_time_micros: 0,
            data: message.to_vec().into(),
        };
        Ok(match self.0.on_event(event, Utc::now())? {
            Step::Emit(event) => Some(event),
            Step::Idle(_) | Step::Skipped(_) | Step::Nothing => None,
        })
    }
}
