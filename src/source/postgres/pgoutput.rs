//! Panic-free decoder for PostgreSQL's `pgoutput` logical decoding messages, proto_version 1.
//!
//! Reference: <https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>.
//! Every read is bounds-checked; malformed input yields a [`DecodeError`] naming the field and
//! the byte offset, never a panic.

use thiserror::Error;

/// Why a pgoutput payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The payload ended before the field was complete.
    #[error(
        "pgoutput message truncated while reading {what} at offset {offset}: needs {needed} bytes, {available} left"
    )]
    Truncated { what: &'static str, offset: usize, needed: usize, available: usize },
    /// The field was complete but its value is not allowed.
    #[error("invalid pgoutput {what} at offset {offset}: {detail}")]
    Invalid { what: &'static str, offset: usize, detail: String },
    /// The first byte is not a known message type.
    #[error("unknown pgoutput message type 0x{tag:02x}")]
    UnknownMessage { tag: u8 },
    /// Bytes were left over after a complete message.
    #[error("pgoutput {message} message has {extra} unexpected trailing bytes at offset {offset}")]
    TrailingBytes { message: &'static str, offset: usize, extra: usize },
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// Start of a committed transaction.
    Begin(Begin),
    /// End of a transaction.
    Commit(Commit),
    /// Replication origin of the transaction.
    Origin(Origin),
    /// Schema of a relation, sent before its first change and after schema changes.
    Relation(Relation),
    /// A data type referenced by a relation.
    Type(TypeInfo),
    /// A new row.
    Insert(Insert),
    /// A changed row.
    Update(Update),
    /// A removed row.
    Delete(Delete),
    /// One or more relations truncated.
    Truncate(Truncate),
    /// A `pg_logical_emit_message` message.
    Message(LogicalMessage),
}

/// `B`: transaction start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record.
    pub final_lsn: u64,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time_us: i64,
    /// Transaction id.
    pub xid: u32,
}

/// `C`: transaction commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Unused flags (0).
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: u64,
    /// LSN just after the commit record: the resume position.
    pub end_lsn: u64,
    /// Commit time, µs since 2000-01-01 UTC.
    pub commit_time_us: i64,
}

/// `O`: origin of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit LSN on the origin server.
    pub commit_lsn: u64,
    /// Origin name.
    pub name: String,
}

/// Replica identity setting of a relation (`pg_class.relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a chosen unique index.
    Index,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    /// Column name.
    pub name: String,
    /// Data type OID.
    pub type_oid: u32,
    /// Type modifier.
    pub type_modifier: i32,
}

/// `R`: relation schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Relation OID.
    pub id: u32,
    /// Schema name.
    pub namespace: String,
    /// Table name.
    pub name: String,
    /// Replica identity setting.
    pub replica_identity: ReplicaIdentity,
    /// Columns in tuple order.
    pub columns: Vec<RelationColumn>,
}

/// `Y`: data type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    /// Type OID.
    pub id: u32,
    /// Schema name.
    pub namespace: String,
    /// Type name.
    pub name: String,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: an unchanged TOASTed value that was not sent.
    UnchangedToast,
    /// `t`: text format.
    Text(String),
    /// `b`: binary format (only with the `binary` option).
    Binary(Vec<u8>),
}

/// A row image, one value per relation column.
pub type TupleData = Vec<TupleValue>;

/// The old row image sent with an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only the replica identity key columns are set; the others are NULL.
    Key(TupleData),
    /// `O`: the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

/// `I`: insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    /// Relation OID.
    pub relation_id: u32,
    /// The new row.
    pub new: TupleData,
}

/// `U`: update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Relation OID.
    pub relation_id: u32,
    /// Old key or row, when the replica identity provides it.
    pub old: Option<OldTuple>,
    /// The new row.
    pub new: TupleData,
}

/// `D`: delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// Relation OID.
    pub relation_id: u32,
    /// Old key or row.
    pub old: OldTuple,
}

/// `T`: truncate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    /// Option bits: 1 = CASCADE, 2 = RESTART IDENTITY.
    pub options: u8,
    /// Truncated relation OIDs.
    pub relation_ids: Vec<u32>,
}

/// `M`: logical decoding message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    /// Flags: 1 = transactional.
    pub flags: u8,
    /// LSN of the message.
    pub lsn: u64,
    /// Application prefix.
    pub prefix: String,
    /// Raw content.
    pub content: Vec<u8>,
}

/// Decode one pgoutput message (the `data` of an XLogData CopyData message).
pub fn decode(payload: &[u8]) -> Result<PgOutputMessage, DecodeError> {
    let mut r = Reader::new(payload);
    let tag = r.u8("message type")?;
    let (name, message) = match tag {
        b'B' => ("Begin", PgOutputMessage::Begin(read_begin(&mut r)?)),
        b'C' => ("Commit", PgOutputMessage::Commit(read_commit(&mut r)?)),
        b'O' => ("Origin", PgOutputMessage::Origin(read_origin(&mut r)?)),
        b'R' => ("Relation", PgOutputMessage::Relation(read_relation(&mut r)?)),
        b'Y' => ("Type", PgOutputMessage::Type(read_type(&mut r)?)),
        b'I' => ("Insert", PgOutputMessage::Insert(read_insert(&mut r)?)),
        b'U' => ("Update", PgOutputMessage::Update(read_update(&mut r)?)),
        b'D' => ("Delete", PgOutputMessage::Delete(read_delete(&mut r)?)),
        b'T' => ("Truncate", PgOutputMessage::Truncate(read_truncate(&mut r)?)),
        b'M' => ("Message", PgOutputMessage::Message(read_message(&mut r)?)),
        other => return Err(DecodeError::UnknownMessage { tag: other }),
    };
    r.finish(name)?;
    Ok(message)
}

fn read_begin(r: &mut Reader<'_>) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: r.u64("Begin final LSN")?,
        commit_time_us: r.i64("Begin commit timestamp")?,
        xid: r.u32("Begin xid")?,
    })
}

fn read_commit(r: &mut Reader<'_>) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: r.u8("Commit flags")?,
        commit_lsn: r.u64("Commit LSN")?,
        end_lsn: r.u64("Commit end LSN")?,
        commit_time_us: r.i64("Commit timestamp")?,
    })
}

fn read_origin(r: &mut Reader<'_>) -> Result<Origin, DecodeError> {
    Ok(Origin { commit_lsn: r.u64("Origin commit LSN")?, name: r.cstr("Origin name")? })
}

fn read_relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32("Relation id")?;
    let namespace = r.cstr("Relation namespace")?;
    let name = r.cstr("Relation name")?;
    let replica_identity = read_replica_identity(r)?;
    let count = r.count16("Relation column count")?;
    let mut columns = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        columns.push(read_relation_column(r)?);
    }
    Ok(Relation { id, namespace, name, replica_identity, columns })
}

fn read_replica_identity(r: &mut Reader<'_>) -> Result<ReplicaIdentity, DecodeError> {
    let offset = r.pos;
    match r.u8("Relation replica identity")? {
        b'd' => Ok(ReplicaIdentity::Default),
        b'n' => Ok(ReplicaIdentity::Nothing),
        b'f' => Ok(ReplicaIdentity::Full),
        b'i' => Ok(ReplicaIdentity::Index),
        other => Err(DecodeError::Invalid {
            what: "Relation replica identity",
            offset,
            detail: format!("unknown setting 0x{other:02x}"),
        }),
    }
}

fn read_relation_column(r: &mut Reader<'_>) -> Result<RelationColumn, DecodeError> {
    let flags = r.u8("Relation column flags")?;
    Ok(RelationColumn {
        key: flags & 1 == 1,
        name: r.cstr("Relation column name")?,
        type_oid: r.u32("Relation column type OID")?,
        type_modifier: r.i32("Relation column type modifier")?,
    })
}

fn read_type(r: &mut Reader<'_>) -> Result<TypeInfo, DecodeError> {
    Ok(TypeInfo { id: r.u32("Type id")?, namespace: r.cstr("Type namespace")?, name: r.cstr("Type name")? })
}

fn read_insert(r: &mut Reader<'_>) -> Result<Insert, DecodeError> {
    let relation_id = r.u32("Insert relation id")?;
    r.expect_byte(b'N', "Insert new-tuple marker")?;
    Ok(Insert { relation_id, new: read_tuple(r)? })
}

fn read_update(r: &mut Reader<'_>) -> Result<Update, DecodeError> {
    let relation_id = r.u32("Update relation id")?;
    let offset = r.pos;
    let old = match r.u8("Update tuple marker")? {
        b'K' => Some(OldTuple::Key(read_tuple(r)?)),
        b'O' => Some(OldTuple::Full(read_tuple(r)?)),
        b'N' => None,
        other => return Err(invalid_marker("Update tuple marker", offset, other)),
    };
    if old.is_some() {
        r.expect_byte(b'N', "Update new-tuple marker")?;
    }
    Ok(Update { relation_id, old, new: read_tuple(r)? })
}

fn read_delete(r: &mut Reader<'_>) -> Result<Delete, DecodeError> {
    let relation_id = r.u32("Delete relation id")?;
    let offset = r.pos;
    let old = match r.u8("Delete tuple marker")? {
        b'K' => OldTuple::Key(read_tuple(r)?),
        b'O' => OldTuple::Full(read_tuple(r)?),
        other => return Err(invalid_marker("Delete tuple marker", offset, other)),
    };
    Ok(Delete { relation_id, old })
}

fn read_truncate(r: &mut Reader<'_>) -> Result<Truncate, DecodeError> {
    let count = r.count32("Truncate relation count")?;
    let options = r.u8("Truncate options")?;
    let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        relation_ids.push(r.u32("Truncate relation id")?);
    }
    Ok(Truncate { options, relation_ids })
}

fn read_message(r: &mut Reader<'_>) -> Result<LogicalMessage, DecodeError> {
    let flags = r.u8("Message flags")?;
    let lsn = r.u64("Message LSN")?;
    let prefix = r.cstr("Message prefix")?;
    let len = r.count32("Message content length")?;
    let content = r.bytes(len, "Message content")?.to_vec();
    Ok(LogicalMessage { flags, lsn, prefix, content })
}

fn read_tuple(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    let count = r.count16("tuple column count")?;
    let mut values = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        values.push(read_tuple_value(r)?);
    }
    Ok(values)
}

fn read_tuple_value(r: &mut Reader<'_>) -> Result<TupleValue, DecodeError> {
    let offset = r.pos;
    match r.u8("tuple column kind")? {
        b'n' => Ok(TupleValue::Null),
        b'u' => Ok(TupleValue::UnchangedToast),
        b't' => {
            let len = r.count32("text value length")?;
            let start = r.pos;
            let bytes = r.bytes(len, "text value")?;
            let text = std::str::from_utf8(bytes).map_err(|e| DecodeError::Invalid {
                what: "text value",
                offset: start,
                detail: format!("not UTF-8: {e}"),
            })?;
            Ok(TupleValue::Text(text.to_owned()))
        }
        b'b' => {
            let len = r.count32("binary value length")?;
            Ok(TupleValue::Binary(r.bytes(len, "binary value")?.to_vec()))
        }
        other => Err(invalid_marker("tuple column kind", offset, other)),
    }
}

fn invalid_marker(what: &'static str, offset: usize, byte: u8) -> DecodeError {
    DecodeError::Invalid { what, offset, detail: format!("unexpected byte 0x{byte:02x}") }
}

/// Bounds-checked big-endian cursor over a payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let truncated = || DecodeError::Truncated { what, offset: self.pos, needed: n, available: self.remaining() };
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A non-negative Int16 count.
    fn count16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = i16::from_be_bytes(self.array(what)?);
        usize::try_from(n).map_err(|_| negative(what, offset, n.into()))
    }

    /// A non-negative Int32 count or length.
    fn count32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| negative(what, offset, n.into()))
    }

    fn expect_byte(&mut self, expected: u8, what: &'static str) -> Result<(), DecodeError> {
        let offset = self.pos;
        let got = self.u8(what)?;
        if got == expected { Ok(()) } else { Err(invalid_marker(what, offset, got)) }
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let len = rest.iter().position(|&b| b == 0).ok_or(DecodeError::Truncated {
            what,
            offset: start,
            needed: rest.len().saturating_add(1),
            available: rest.len(),
        })?;
        let bytes = self.bytes(len, what)?;
        self.pos = self.pos.saturating_add(1);
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| DecodeError::Invalid {
            what,
            offset: start,
            detail: format!("not UTF-8: {e}"),
        })
    }

    fn finish(&self, message: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { message, offset: self.pos, extra }),
        }
    }
}

fn negative(what: &'static str, offset: usize, n: i64) -> DecodeError {
    DecodeError::Invalid { what, offset, detail: format!("negative value {n}") }
}

#[cfg(test)]
pub(crate) mod test_bytes {
    //! Builders for hand-made pgoutput payloads, shared with the stream tests.

    /// A column of a Relation message: (is_key, name).
    pub fn relation(id: u32, ns: &str, name: &str, ident: u8, cols: &[(bool, &str)]) -> Vec<u8> {
        let mut v = vec![b'R'];
        v.extend(id.to_be_bytes());
        cstr(&mut v, ns);
        cstr(&mut v, name);
        v.push(ident);
        v.extend((cols.len() as i16).to_be_bytes());
        for (key, col) in cols {
            v.push(u8::from(*key));
            cstr(&mut v, col);
            v.extend(25u32.to_be_bytes());
            v.extend((-1i32).to_be_bytes());
        }
        v
    }

    /// Tuple values: None = null, Some("\u{0}u") = unchanged toast, Some(text) = text.
    pub fn tuple(v: &mut Vec<u8>, values: &[Option<&str>]) {
        v.extend((values.len() as i16).to_be_bytes());
        for value in values {
            match value {
                None => v.push(b'n'),
                Some("\u{0}u") => v.push(b'u'),
                Some(text) => {
                    v.push(b't');
                    v.extend((text.len() as i32).to_be_bytes());
                    v.extend(text.as_bytes());
                }
            }
        }
    }

    pub fn insert(rel: u32, values: &[Option<&str>]) -> Vec<u8> {
        let mut v = vec![b'I'];
        v.extend(rel.to_be_bytes());
        v.push(b'N');
        tuple(&mut v, values);
        v
    }

    pub fn update(rel: u32, old: Option<(u8, &[Option<&str>])>, new: &[Option<&str>]) -> Vec<u8> {
        let mut v = vec![b'U'];
        v.extend(rel.to_be_bytes());
        if let Some((marker, values)) = old {
            v.push(marker);
            tuple(&mut v, values);
        }
        v.push(b'N');
        tuple(&mut v, new);
        v
    }

    pub fn delete(rel: u32, marker: u8, old: &[Option<&str>]) -> Vec<u8> {
        let mut v = vec![b'D'];
        v.extend(rel.to_be_bytes());
        v.push(marker);
        tuple(&mut v, old);
        v
    }

    pub fn truncate(options: u8, rels: &[u32]) -> Vec<u8> {
        let mut v = vec![b'T'];
        v.extend((rels.len() as i32).to_be_bytes());
        v.push(options);
        for rel in rels {
            v.extend(rel.to_be_bytes());
        }
        v
    }

    pub fn cstr(v: &mut Vec<u8>, s: &str) {
        v.extend(s.as_bytes());
        v.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::test_bytes::*;
    use super::*;

    fn begin_bytes() -> Vec<u8> {
        let mut v = vec![b'B'];
        v.extend(0x0000_0001_0000_0010u64.to_be_bytes());
        v.extend(123_456_789i64.to_be_bytes());
        v.extend(742u32.to_be_bytes());
        v
    }

    fn commit_bytes() -> Vec<u8> {
        let mut v = vec![b'C', 0];
        v.extend(0x10u64.to_be_bytes());
        v.extend(0x38u64.to_be_bytes());
        v.extend(99i64.to_be_bytes());
        v
    }

    fn origin_bytes() -> Vec<u8> {
        let mut v = vec![b'O'];
        v.extend(7u64.to_be_bytes());
        cstr(&mut v, "upstream");
        v
    }

    fn type_bytes() -> Vec<u8> {
        let mut v = vec![b'Y'];
        v.extend(16_385u32.to_be_bytes());
        cstr(&mut v, "public");
        cstr(&mut v, "mood");
        v
    }

    fn message_bytes() -> Vec<u8> {
        let mut v = vec![b'M', 1];
        v.extend(42u64.to_be_bytes());
        cstr(&mut v, "lynq");
        v.extend(3i32.to_be_bytes());
        v.extend(b"abc");
        v
    }

    fn binary_insert_bytes() -> Vec<u8> {
        let mut v = vec![b'I'];
        v.extend(5u32.to_be_bytes());
        v.extend([b'N', 0, 2, b'b', 0, 0, 0, 2, 0xde, 0xad, b'u']);
        v
    }

    fn all_messages() -> Vec<Vec<u8>> {
        vec![
            begin_bytes(),
            commit_bytes(),
            origin_bytes(),
            type_bytes(),
            message_bytes(),
            relation(16_384, "app", "tenants", b'd', &[(true, "id"), (false, "uid")]),
            insert(16_384, &[Some("1"), None]),
            update(16_384, None, &[Some("1"), Some("\u{0}u")]),
            update(16_384, Some((b'K', &[Some("1"), None])), &[Some("2"), Some("x")]),
            update(16_384, Some((b'O', &[Some("1"), Some("a")])), &[Some("1"), Some("b")]),
            delete(16_384, b'K', &[Some("1"), None]),
            delete(16_384, b'O', &[Some("1"), Some("a")]),
            truncate(3, &[16_384, 16_390]),
            binary_insert_bytes(),
        ]
    }

    #[test]
    fn decodes_begin() {
        let expected = Begin { final_lsn: 0x0000_0001_0000_0010, commit_time_us: 123_456_789, xid: 742 };
        assert_eq!(decode(&begin_bytes()), Ok(PgOutputMessage::Begin(expected)));
    }

    #[test]
    fn decodes_commit() {
        let expected = Commit { flags: 0, commit_lsn: 0x10, end_lsn: 0x38, commit_time_us: 99 };
        assert_eq!(decode(&commit_bytes()), Ok(PgOutputMessage::Commit(expected)));
    }

    #[test]
    fn decodes_origin_type_and_message() {
        let origin = Origin { commit_lsn: 7, name: "upstream".into() };
        assert_eq!(decode(&origin_bytes()), Ok(PgOutputMessage::Origin(origin)));
        let ty = TypeInfo { id: 16_385, namespace: "public".into(), name: "mood".into() };
        assert_eq!(decode(&type_bytes()), Ok(PgOutputMessage::Type(ty)));
        let msg = LogicalMessage { flags: 1, lsn: 42, prefix: "lynq".into(), content: b"abc".to_vec() };
        assert_eq!(decode(&message_bytes()), Ok(PgOutputMessage::Message(msg)));
    }

    #[test]
    fn decodes_relation_with_key_flags_and_identity() {
        for (byte, identity) in [
            (b'd', ReplicaIdentity::Default),
            (b'n', ReplicaIdentity::Nothing),
            (b'f', ReplicaIdentity::Full),
            (b'i', ReplicaIdentity::Index),
        ] {
            let bytes = relation(9, "app", "tenants", byte, &[(true, "id"), (false, "uid")]);
            let Ok(PgOutputMessage::Relation(rel)) = decode(&bytes) else {
                panic!("not a relation: {:?}", decode(&bytes));
            };
            assert_eq!(rel.id, 9);
            assert_eq!((rel.namespace.as_str(), rel.name.as_str()), ("app", "tenants"));
            assert_eq!(rel.replica_identity, identity);
            let cols: Vec<_> = rel.columns.iter().map(|c| (c.key, c.name.as_str())).collect();
            assert_eq!(cols, vec![(true, "id"), (false, "uid")]);
            assert_eq!(rel.columns[0].type_oid, 25);
            assert_eq!(rel.columns[0].type_modifier, -1);
        }
    }

    #[test]
    fn decodes_insert_with_null_and_text() {
        let expected = Insert { relation_id: 16_384, new: vec![TupleValue::Text("1".into()), TupleValue::Null] };
        let bytes = insert(16_384, &[Some("1"), None]);
        assert_eq!(decode(&bytes), Ok(PgOutputMessage::Insert(expected)));
    }

    #[test]
    fn decodes_binary_and_unchanged_toast_values() {
        let expected =
            Insert { relation_id: 5, new: vec![TupleValue::Binary(vec![0xde, 0xad]), TupleValue::UnchangedToast] };
        assert_eq!(decode(&binary_insert_bytes()), Ok(PgOutputMessage::Insert(expected)));
    }

    #[test]
    fn decodes_update_variants() {
        let plain = update(1, None, &[Some("1"), Some("\u{0}u")]);
        let Ok(PgOutputMessage::Update(u)) = decode(&plain) else {
            panic!("not an update");
        };
        assert_eq!(u.old, None);
        assert_eq!(u.new, vec![TupleValue::Text("1".into()), TupleValue::UnchangedToast]);

        let keyed = update(1, Some((b'K', &[Some("1"), None])), &[Some("2"), Some("x")]);
        let Ok(PgOutputMessage::Update(u)) = decode(&keyed) else {
            panic!("not an update");
        };
        assert_eq!(u.old, Some(OldTuple::Key(vec![TupleValue::Text("1".into()), TupleValue::Null])));
        assert_eq!(u.new, vec![TupleValue::Text("2".into()), TupleValue::Text("x".into())]);

        let full = update(1, Some((b'O', &[Some("1"), Some("a")])), &[Some("1"), Some("b")]);
        let Ok(PgOutputMessage::Update(u)) = decode(&full) else {
            panic!("not an update");
        };
        assert!(matches!(u.old, Some(OldTuple::Full(ref t)) if t.len() == 2));
    }

    #[test]
    fn decodes_delete_variants() {
        let keyed = decode(&delete(3, b'K', &[Some("1"), None]));
        let expected =
            Delete { relation_id: 3, old: OldTuple::Key(vec![TupleValue::Text("1".into()), TupleValue::Null]) };
        assert_eq!(keyed, Ok(PgOutputMessage::Delete(expected)));
        let full = decode(&delete(3, b'O', &[Some("1"), Some("a")]));
        assert!(matches!(full, Ok(PgOutputMessage::Delete(Delete { old: OldTuple::Full(_), .. }))));
    }

    #[test]
    fn decodes_truncate() {
        let expected = Truncate { options: 3, relation_ids: vec![16_384, 16_390] };
        assert_eq!(decode(&truncate(3, &[16_384, 16_390])), Ok(PgOutputMessage::Truncate(expected)));
    }

    #[test]
    fn every_truncated_prefix_is_an_error_not_a_panic() {
        for message in all_messages() {
            assert!(decode(&message).is_ok(), "full message must decode: {message:?}");
            for len in 0..message.len() {
                let result = decode(message.get(..len).unwrap_or_default());
                assert!(result.is_err(), "prefix of {len} bytes decoded: {result:?}");
            }
        }
    }

    #[test]
    fn truncation_error_names_field_and_offset() {
        let bytes = insert(16_384, &[Some("hello")]);
        let cut = bytes.get(..bytes.len() - 2).unwrap_or_default();
        let err = decode(cut).unwrap_err();
        assert_eq!(err, DecodeError::Truncated { what: "text value", offset: 13, needed: 5, available: 3 });
        assert!(err.to_string().contains("text value at offset 13"), "{err}");
    }

    #[test]
    fn rejects_malformed_fields() {
        assert_eq!(decode(b"Z"), Err(DecodeError::UnknownMessage { tag: b'Z' }));
        let bad_identity = relation(1, "a", "b", b'x', &[]);
        assert!(matches!(decode(&bad_identity), Err(DecodeError::Invalid { what: "Relation replica identity", .. })));
        let mut negative_len = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't'];
        negative_len.extend((-5i32).to_be_bytes());
        assert!(matches!(
            decode(&negative_len),
            Err(DecodeError::Invalid { what: "text value length", offset: 9, .. })
        ));
        let mut trailing = commit_bytes();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(DecodeError::TrailingBytes { extra: 1, .. })));
        let bad_utf8 = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0, 0, 0, 1, 0xff];
        assert!(matches!(decode(&bad_utf8), Err(DecodeError::Invalid { what: "text value", .. })));
        let bad_kind = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b'q'];
        assert!(matches!(decode(&bad_kind), Err(DecodeError::Invalid { what: "tuple column kind", offset: 8, .. })));
    }

    #[test]
    fn huge_counts_do_not_allocate_or_panic() {
        let mut v = vec![b'T'];
        v.extend(i32::MAX.to_be_bytes());
        v.push(0);
        assert!(matches!(decode(&v), Err(DecodeError::Truncated { .. })));
        let mut m = vec![b'M', 0];
        m.extend(0u64.to_be_bytes());
        m.push(0);
        m.extend(i32::MAX.to_be_bytes());
        assert!(matches!(decode(&m), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift64: deterministic pseudo-random input without an extra dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tags = b"BCORYIUDTMKNnutbxZ\0";
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = buf.first_mut() {
                *first = tags[round % tags.len()];
            }
            let _ = decode(&buf);
        }
        for message in all_messages() {
            for _ in 0..200 {
                let mut mutated = message.clone();
                let at = (next() as usize) % mutated.len();
                if let Some(byte) = mutated.get_mut(at) {
                    *byte = next() as u8;
                }
                let _ = decode(&mutated);
            }
        }
    }
}
