//! Errors of the MySQL/MariaDB source, classified so the hub knows whether to retry, re-snapshot or
//! report a configuration problem.

use std::time::Duration;

/// MySQL/MariaDB server error: the requested binlog position is gone (purged, or not an event
/// boundary). The hub answers with a fresh snapshot.
pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// MariaDB/MySQL server error: another replica registered with the same server_id.
pub const ER_SLAVE_SAME_ID: u16 = 4052;
/// Access denied (MariaDB answers COM_REGISTER_SLAVE with it when REPLICATION SLAVE is missing).
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// "Access denied; you need (at least one of) the X privilege(s)".
pub const ER_SPECIFIC_ACCESS_DENIED_ERROR: u16 = 1227;

/// Everything that can go wrong while reading or streaming a MySQL/MariaDB table.
#[derive(Debug, thiserror::Error)]
pub enum MysqlSourceError {
    /// The connection failed or broke (network, TLS, server gone); retry with backoff.
    #[error("connection to MySQL {target} failed while {during}: {source}")]
    Connection {
        /// `host:port`.
        target: String,
        /// What lynq was doing.
        during: &'static str,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// No event or heartbeat arrived within the read deadline: the TCP connection is presumed dead.
    #[error("binlog stream from {target} was silent for {after:?} (heartbeats expected); reconnecting")]
    ReadTimeout {
        /// `host:port`.
        target: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// The server closed the binlog stream (e.g. it is shutting down); reconnect.
    #[error("MySQL {target} ended the binlog stream at {file}:{pos}")]
    StreamEnded {
        /// `host:port`.
        target: String,
        /// Binlog file at the end.
        file: String,
        /// Last committed offset.
        pos: u64,
    },
    /// The table was renamed away or replaced by a RENAME; only a new snapshot is exact.
    #[error("table {table} was renamed at {file}:{pos}; a new snapshot is needed")]
    TableReplaced {
        /// `db.table`.
        table: String,
        /// Binlog file of the RENAME.
        file: String,
        /// Offset after it.
        pos: u64,
    },
    /// The binlog position is no longer on the server (error 1236); take a new snapshot.
    #[error("binlog position {file}:{pos} is not available on {target}: {message}")]
    PositionUnavailable {
        /// `host:port`.
        target: String,
        /// Requested binlog file.
        file: String,
        /// Requested offset.
        pos: u64,
        /// The server's message.
        message: String,
    },
    /// Another replica uses this server_id (error 4052); two hubs must never share one.
    #[error("server_id {server_id} is already used by another replica of {target}: {message}")]
    DuplicateServerId {
        /// `host:port`.
        target: String,
        /// The id lynq registered with.
        server_id: u32,
        /// The server's message.
        message: String,
    },
    /// The user lacks a privilege the operation needs (errors 1045/1227 or SHOW GRANTS).
    #[error("user {user} on {target} lacks the {privilege} privilege: {message}")]
    MissingPrivilege {
        /// `host:port`.
        target: String,
        /// The configured user.
        user: String,
        /// The privilege to grant, e.g. `REPLICATION SLAVE`.
        privilege: String,
        /// The server's message.
        message: String,
    },
    /// A query failed on the server (unknown column, missing table, syntax, ...).
    #[error("query on {object} failed while {during}: {source}")]
    Query {
        /// `db.table` or another object name.
        object: String,
        /// What lynq was doing.
        during: &'static str,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The server answered, but not with what lynq needs (missing status variable, bad value).
    #[error("unexpected answer from {target} while {during}: {detail}")]
    Protocol {
        /// `host:port`.
        target: String,
        /// What lynq was doing.
        during: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A binlog event for the hub's table could not be decoded or is of a kind lynq cannot read.
    #[error("cannot decode binlog event at {file}:{pos} for {table}: {detail}")]
    Decode {
        /// Binlog file of the event.
        file: String,
        /// Offset of the event's end.
        pos: u64,
        /// `db.table`.
        table: String,
        /// What went wrong.
        detail: String,
    },
}

impl MysqlSourceError {
    /// True when reconnecting (with backoff) from the last applied position may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Connection { .. } | Self::ReadTimeout { .. } | Self::StreamEnded { .. })
    }

    /// True when the hub must take a new snapshot before streaming again.
    pub fn needs_snapshot(&self) -> bool {
        matches!(self, Self::PositionUnavailable { .. } | Self::TableReplaced { .. })
    }
}

/// The parts of an error message that identify the server and the user.
#[derive(Clone, Debug)]
pub(crate) struct ErrorContext {
    /// `host:port`.
    pub target: String,
    /// Configured user name.
    pub user: String,
}

impl ErrorContext {
    /// Classifies an error of an ordinary query on `object`.
    pub fn query(&self, object: &str, during: &'static str, err: mysql_async::Error) -> MysqlSourceError {
        match server_error(&err) {
            Some((code, message)) if is_privilege_error(code) => self.missing_privilege(code, message),
            Some(_) => MysqlSourceError::Query { object: object.to_owned(), during, source: err },
            None => self.connection(during, err),
        }
    }

    /// Classifies an error of the binlog dump connection, which has its own distinct codes.
    pub fn stream(&self, file: &str, pos: u64, server_id: u32, err: mysql_async::Error) -> MysqlSourceError {
        let Some((code, message)) = server_error(&err) else {
            return self.connection("streaming the binlog", err);
        };
        match code {
            ER_MASTER_FATAL_ERROR_READING_BINLOG => MysqlSourceError::PositionUnavailable {
                target: self.target.clone(),
                file: file.to_owned(),
                pos,
                message: message.to_owned(),
            },
            ER_SLAVE_SAME_ID => MysqlSourceError::DuplicateServerId {
                target: self.target.clone(),
                server_id,
                message: message.to_owned(),
            },
            // 1045 at COM_REGISTER_SLAVE means the replication privilege is missing.
            ER_ACCESS_DENIED_ERROR => MysqlSourceError::MissingPrivilege {
                target: self.target.clone(),
                user: self.user.clone(),
                privilege: "REPLICATION SLAVE".to_owned(),
                message: message.to_owned(),
            },
            ER_SPECIFIC_ACCESS_DENIED_ERROR => self.missing_privilege(code, message),
            _ => MysqlSourceError::Query {
                object: format!("binlog {file}"),
                during: "streaming the binlog",
                source: err,
            },
        }
    }

    /// A broken or refused connection.
    pub fn connection(&self, during: &'static str, err: mysql_async::Error) -> MysqlSourceError {
        MysqlSourceError::Connection { target: self.target.clone(), during, source: err }
    }

    /// The server answered with something lynq cannot use.
    pub fn protocol(&self, during: &'static str, detail: impl Into<String>) -> MysqlSourceError {
        MysqlSourceError::Protocol { target: self.target.clone(), during, detail: detail.into() }
    }

    fn missing_privilege(&self, code: u16, message: &str) -> MysqlSourceError {
        let privilege = privilege_from_message(message).unwrap_or(if code == ER_ACCESS_DENIED_ERROR {
            "REPLICATION SLAVE"
        } else {
            "(see message)"
        });
        MysqlSourceError::MissingPrivilege {
            target: self.target.clone(),
            user: self.user.clone(),
            privilege: privilege.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// The server error code and message, if the error came from the server.
pub(crate) fn server_error(err: &mysql_async::Error) -> Option<(u16, &str)> {
    match err {
        mysql_async::Error::Server(e) => Some((e.code, e.message.as_str())),
        _ => None,
    }
}

fn is_privilege_error(code: u16) -> bool {
    code == ER_SPECIFIC_ACCESS_DENIED_ERROR
}

/// Extracts `X` from "... you need (at least one of) the X privilege(s) for this operation".
pub(crate) fn privilege_from_message(message: &str) -> Option<&str> {
    let start = message.find(" the ")? + " the ".len();
    let rest = message.get(start..)?;
    let end = rest.find(" privilege")?;
    rest.get(..end).map(str::trim).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.to_owned(),
            state: "HY000".to_owned(),
        })
    }

    fn ctx() -> ErrorContext {
        ErrorContext { target: "db:3306".into(), user: "lynq".into() }
    }

    #[test]
    fn stream_errors_are_classified_by_code() {
        let purged = ctx().stream("binlog.000001", 4, 7, server(1236, "Could not find first log file"));
        assert!(
            matches!(purged, MysqlSourceError::PositionUnavailable { ref file, pos: 4, .. } if file == "binlog.000001")
        );
        assert!(purged.needs_snapshot());
        let dup = ctx().stream("f", 4, 7, server(4052, "A slave with the same server_uuid/server_id"));
        assert!(matches!(dup, MysqlSourceError::DuplicateServerId { server_id: 7, .. }));
        let denied = ctx().stream("f", 4, 7, server(1045, "Access denied for user"));
        assert!(
            matches!(denied, MysqlSourceError::MissingPrivilege { ref privilege, .. } if privilege == "REPLICATION SLAVE")
        );
        let io = ctx().stream("f", 4, 7, mysql_async::Error::Io(std::io::Error::other("reset").into()));
        assert!(io.is_retryable());
    }

    #[test]
    fn privilege_is_taken_from_the_server_message() {
        let msg = "Access denied; you need (at least one of) the BINLOG MONITOR privilege(s) for this operation";
        assert_eq!(privilege_from_message(msg), Some("BINLOG MONITOR"));
        assert_eq!(privilege_from_message("Access denied for user 'x'"), None);
        let e = ctx().query("t", "reading", server(1227, msg));
        assert!(matches!(e, MysqlSourceError::MissingPrivilege { ref privilege, .. } if privilege == "BINLOG MONITOR"));
    }

    #[test]
    fn other_server_errors_are_query_errors() {
        let e = ctx().query("app.t", "reading the table", server(1054, "Unknown column 'x'"));
        assert!(matches!(e, MysqlSourceError::Query { ref object, .. } if object == "app.t"));
        assert!(!e.is_retryable());
    }
}
