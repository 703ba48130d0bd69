//! The binlog row decode path without a server, for the decode micro-benchmark (`benches/micro.rs`):
//! a TABLE_MAP turned into the column layout and row images rendered into [`RowChange`]s exactly as
//! the stream does. Not part of lynq's API.

use mysql_async::binlog::events::{RowsEventData, TableMapEvent};

use super::schema::{ColumnSelector, TableColumns};
use crate::source::RowChange;

/// The stream's row decoder for one TABLE_MAP.
pub struct RowsDecoder {
    columns: TableColumns,
    selector: ColumnSelector,
}

impl RowsDecoder {
    /// The layout of `tme` (with `binlog_row_metadata=FULL`), selecting `columns`.
    pub fn new(tme: &TableMapEvent<'_>, columns: &[String]) -> Result<Self, String> {
        Ok(Self { columns: TableColumns::from_table_map(tme, &[])?, selector: ColumnSelector::new(columns) })
    }

    /// Decodes every row of a rows event of that table.
    pub fn decode(&self, tme: &TableMapEvent<'_>, rows: &RowsEventData<'_>) -> Result<Vec<RowChange>, String> {
        let mut changes = Vec::new();
        for pair in rows.rows(tme) {
            let (before, after) = pair.map_err(|e| e.to_string())?;
            let image = |r: Option<mysql_async::binlog::row::BinlogRow>| {
                r.map(|r| self.columns.to_row(&r, &self.selector)).transpose().map_err(|e| e.to_string())
            };
            match (image(before)?, image(after)?) {
                (None, Some(after)) => changes.push(RowChange::Insert { after }),
                (Some(before), Some(after)) => changes.push(RowChange::Update { before: Some(before), after }),
                (Some(before), None) => changes.push(RowChange::Delete { before }),
                (None, None) => {}
            }
        }
        Ok(changes)
    }
}
