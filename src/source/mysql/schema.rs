//! Column layout of the hub's table as the binlog describes it (TABLE_MAP), with
//! information_schema as the fallback for what the TABLE_MAP lacks.
//!
//! With `binlog_row_metadata=FULL` every TABLE_MAP carries names, signedness and ENUM/SET members,
//! so the binlog is self-describing and schema changes are picked up from the next TABLE_MAP.
//! Without names, columns are matched to information_schema by ordinal position; that copy is read
//! when the stream starts and again after a DDL statement that names the table, so it reflects the
//! *current* schema, which is only exact when the stream is close to the end of the binlog.

use std::collections::HashMap;

use mysql_async::binlog::events::{OptionalMetadataField, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::consts::{ColumnFlags, ColumnType};

use super::text::{BinlogFacts, ColumnInfo, ColumnKind, TextError, parse_member_list, render};
use crate::source::{ColumnValue, Row};

/// One column as information_schema.COLUMNS describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InfoColumn {
    /// COLUMN_NAME.
    pub name: String,
    /// COLUMN_TYPE, e.g. `bigint(20) unsigned`, `enum('a','b')`, `double(10,3)`.
    pub column_type: String,
    /// NUMERIC_SCALE (fixed decimals of FLOAT(M,D)/DOUBLE(M,D) and DECIMAL).
    pub scale: Option<u32>,
}

impl InfoColumn {
    fn is_unsigned(&self) -> bool {
        self.column_type.to_ascii_lowercase().contains("unsigned")
    }

    /// The fixed decimals of a FLOAT/DOUBLE declared with `(M,D)`; plain FLOAT/DOUBLE have none.
    fn float_scale(&self) -> Option<u32> {
        let lower = self.column_type.to_ascii_lowercase();
        let is_float = lower.starts_with("float") || lower.starts_with("double") || lower.starts_with("real");
        (is_float && lower.contains(',')).then_some(self.scale).flatten()
    }
}

/// The SQL that lists the table's columns in ordinal order.
pub(crate) const INFO_SCHEMA_SQL: &str = "SELECT COLUMN_NAME, COLUMN_TYPE, NUMERIC_SCALE \
     FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION";

/// The decoded layout of one TABLE_MAP of the hub's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TableColumns {
    /// Every column of the table, by ordinal position.
    pub columns: Vec<ColumnInfo>,
}

/// What the optional TABLE_MAP metadata says (each list is in column order).
#[derive(Default)]
struct OptionalMeta {
    names: Option<Vec<String>>,
    has_signedness: bool,
    enums: Vec<Vec<String>>,
    sets: Vec<Vec<String>>,
}

fn read_optional_meta(tme: &TableMapEvent<'_>) -> Result<OptionalMeta, String> {
    let mut meta = OptionalMeta::default();
    for field in tme.iter_optional_meta() {
        match field.map_err(|e| format!("bad TABLE_MAP metadata: {e}"))? {
            OptionalMetadataField::Signedness(_) => meta.has_signedness = true,
            OptionalMetadataField::ColumnName(names) => {
                let names: Result<Vec<String>, _> =
                    names.iter_names().map(|n| n.map(|n| n.name().into_owned())).collect();
                meta.names = Some(names.map_err(|e| format!("bad column names: {e}"))?);
            }
            OptionalMetadataField::EnumStrValue(enums) => {
                for members in enums.iter_values() {
                    let members = members.map_err(|e| format!("bad ENUM members: {e}"))?;
                    meta.enums.push(members.values().iter().map(|v| v.value().into_owned()).collect());
                }
            }
            OptionalMetadataField::SetStrValue(sets) => {
                for members in sets.iter_values() {
                    let members = members.map_err(|e| format!("bad SET members: {e}"))?;
                    meta.sets.push(members.values().iter().map(|v| v.value().into_owned()).collect());
                }
            }
            _ => {}
        }
    }
    Ok(meta)
}

impl TableColumns {
    /// Builds the layout from a TABLE_MAP, using `info` (information_schema, ordinal order) for
    /// what the TABLE_MAP lacks. Errors name what is missing.
    pub fn from_table_map(tme: &TableMapEvent<'_>, info: &[InfoColumn]) -> Result<Self, String> {
        let meta = read_optional_meta(tme)?;
        let count = usize::try_from(tme.columns_count()).map_err(|_| "column count overflow".to_owned())?;
        // information_schema only helps when it describes the same column list.
        let info = (info.len() == count).then_some(info);
        if meta.names.is_none() && info.is_none() {
            return Err(format!(
                "the TABLE_MAP has no column names (binlog_row_metadata is not FULL) and information_schema lists \
                 a different number of columns than the binlog's {count}"
            ));
        }
        let (mut enums, mut sets) = (meta.enums.into_iter(), meta.sets.into_iter());
        let mut columns = Vec::with_capacity(count);
        for i in 0..count {
            let column_type = tme
                .get_column_type(i)
                .map_err(|e| format!("column {i}: {e}"))?
                .ok_or_else(|| format!("column {i}: no type"))?;
            let fsp = tme.get_column_metadata(i).and_then(|m| m.first().copied()).unwrap_or(0);
            let info_col = info.and_then(|cols| cols.get(i));
            let name = meta
                .names
                .as_ref()
                .and_then(|n| n.get(i).cloned())
                .or_else(|| info_col.map(|c| c.name.clone()))
                .ok_or_else(|| format!("column {i}: no name"))?;
            let info_members = || info_col.map(|c| parse_member_list(&c.column_type)).unwrap_or_default();
            let kind = match column_type {
                ColumnType::MYSQL_TYPE_ENUM => ColumnKind::Enum { values: enums.next().unwrap_or_else(info_members) },
                ColumnType::MYSQL_TYPE_SET => ColumnKind::Set { values: sets.next().unwrap_or_else(info_members) },
                other => kind_of(other, fsp, info_col.and_then(InfoColumn::float_scale)),
            };
            let reinterpret_unsigned = !meta.has_signedness && info_col.is_some_and(InfoColumn::is_unsigned);
            columns.push(ColumnInfo { name, kind, reinterpret_unsigned });
        }
        Ok(Self { columns })
    }

    /// Converts a binlog row image into a [`Row`] of the selected columns.
    pub fn to_row(&self, row: &BinlogRow, selector: &ColumnSelector) -> Result<Row, TextError> {
        let mut out = Row::new();
        for (j, column) in row.columns_ref().iter().enumerate() {
            let Some(info) = self.column_for(&column.name_str()) else {
                continue;
            };
            let Some(key) = selector.key_for(&info.name) else {
                continue;
            };
            let facts = BinlogFacts {
                unsigned: column.flags().contains(ColumnFlags::UNSIGNED_FLAG),
                collation: column.character_set(),
            };
            let value = match row.as_ref(j) {
                Some(v) => render(v, info, facts)?,
                None => ColumnValue::Null,
            };
            out.insert(key.to_owned(), value);
        }
        Ok(out)
    }

    /// The column a binlog row column refers to: by name, or by `@<ordinal>` when unnamed.
    fn column_for(&self, name: &str) -> Option<&ColumnInfo> {
        if let Some(ordinal) = name.strip_prefix('@').and_then(|n| n.parse::<usize>().ok()) {
            return self.columns.get(ordinal);
        }
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The rendering rule for a binlog column type.
fn kind_of(column_type: ColumnType, fsp: u8, float_scale: Option<u32>) -> ColumnKind {
    use ColumnType::*;
    match column_type {
        MYSQL_TYPE_TINY => ColumnKind::Integer { width: 1 },
        MYSQL_TYPE_SHORT => ColumnKind::Integer { width: 2 },
        MYSQL_TYPE_INT24 => ColumnKind::Integer { width: 3 },
        MYSQL_TYPE_LONG => ColumnKind::Integer { width: 4 },
        MYSQL_TYPE_LONGLONG => ColumnKind::Integer { width: 8 },
        MYSQL_TYPE_FLOAT => ColumnKind::Float { scale: float_scale },
        MYSQL_TYPE_DOUBLE => ColumnKind::Double { scale: float_scale },
        MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
        MYSQL_TYPE_DATETIME => ColumnKind::DateTime { fsp: 0 },
        MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime { fsp },
        MYSQL_TYPE_TIME => ColumnKind::Time { fsp: 0 },
        MYSQL_TYPE_TIME2 => ColumnKind::Time { fsp },
        MYSQL_TYPE_TIMESTAMP => ColumnKind::Timestamp { fsp: 0 },
        MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp { fsp },
        MYSQL_TYPE_YEAR => ColumnKind::Year,
        MYSQL_TYPE_JSON => ColumnKind::Json,
        _ => ColumnKind::Bytes,
    }
}

/// The hub's mapped columns; matching is case-insensitive like MySQL column names, and rows are
/// keyed by the configured spelling.
#[derive(Clone, Debug)]
pub(crate) struct ColumnSelector {
    by_lower: HashMap<String, String>,
}

impl ColumnSelector {
    /// Selects `columns` (configured spelling).
    pub fn new(columns: &[String]) -> Self {
        Self { by_lower: columns.iter().map(|c| (c.to_lowercase(), c.clone())).collect() }
    }

    /// The configured key for a server column name, if it is mapped.
    pub fn key_for(&self, server_name: &str) -> Option<&str> {
        self.by_lower.get(&server_name.to_lowercase()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_is_case_insensitive_and_keeps_configured_spelling() {
        let s = ColumnSelector::new(&["UID".to_owned(), "active".to_owned()]);
        assert_eq!(s.key_for("uid"), Some("UID"));
        assert_eq!(s.key_for("Active"), Some("active"));
        assert_eq!(s.key_for("other"), None);
    }

    #[test]
    fn info_schema_float_scale_and_signedness() {
        let c = |t: &str, scale| InfoColumn { name: "x".into(), column_type: t.into(), scale };
        assert_eq!(c("double(10,3)", Some(3)).float_scale(), Some(3));
        assert_eq!(c("double", None).float_scale(), None);
        assert_eq!(c("decimal(10,2)", Some(2)).float_scale(), None);
        assert!(c("bigint(20) unsigned", Some(0)).is_unsigned());
        assert!(!c("bigint(20)", Some(0)).is_unsigned());
    }

    #[test]
    fn column_kinds_carry_fractional_precision() {
        assert_eq!(kind_of(ColumnType::MYSQL_TYPE_DATETIME2, 3, None), ColumnKind::DateTime { fsp: 3 });
        assert_eq!(kind_of(ColumnType::MYSQL_TYPE_TIMESTAMP2, 6, None), ColumnKind::Timestamp { fsp: 6 });
        assert_eq!(kind_of(ColumnType::MYSQL_TYPE_TIME2, 2, None), ColumnKind::Time { fsp: 2 });
        assert_eq!(kind_of(ColumnType::MYSQL_TYPE_VARCHAR, 7, None), ColumnKind::Bytes);
        assert_eq!(kind_of(ColumnType::MYSQL_TYPE_LONGLONG, 0, None), ColumnKind::Integer { width: 8 });
    }
}
