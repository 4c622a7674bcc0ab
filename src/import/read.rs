//! A file's rows as text cells: CSV through the `csv` crate, spreadsheets (XLSX, XLS, ODS)
//! through `calamine`. The first row is the header.

use std::io::{BufRead as _, BufReader, Cursor, Read};

use calamine::{Data, Reader as _};
use rust_decimal::Decimal;
use rust_decimal::prelude::FromPrimitive as _;

/// The kind of file a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// XLSX, XLS, XLSB or ODS: which one is read from the bytes.
    Spreadsheet,
}

impl Format {
    /// The media types accepted, and what each is.
    pub const MEDIA_TYPES: [(&'static str, Format); 7] = [
        ("text/csv", Format::Csv),
        ("application/csv", Format::Csv),
        ("text/plain", Format::Csv),
        (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Spreadsheet,
        ),
        ("application/vnd.ms-excel", Format::Spreadsheet),
        (
            "application/vnd.oasis.opendocument.spreadsheet",
            Format::Spreadsheet,
        ),
        ("application/octet-stream", Format::Spreadsheet),
    ];

    /// The format of a `Content-Type` (parameters such as `charset` ignored).
    pub fn from_media_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        Self::MEDIA_TYPES
            .iter()
            .find(|(m, _)| m.eq_ignore_ascii_case(essence))
            .map(|(_, f)| *f)
    }

    /// The format of a file name's extension.
    pub fn from_path(path: &std::path::Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" | "tsv" => Some(Self::Csv),
            "xlsx" | "xlsm" | "xls" | "xlsb" | "ods" => Some(Self::Spreadsheet),
            _ => None,
        }
    }
}

/// One data row: its line (CSV) or row number (spreadsheet), counted from 1 with the
/// header on line 1, and its cells.
pub struct Record {
    pub line: u64,
    pub cells: Vec<String>,
}

/// A file opened: its header and its rows.
pub struct Sheet {
    pub headers: Vec<String>,
    pub rows: Box<dyn Iterator<Item = Result<Record, String>> + Send>,
    /// What the file was read as (`csv`, `xlsx` …), for the history.
    pub kind: &'static str,
}

/// A file being read, from memory or a stream (a request body, a file on disk).
pub type Input = Box<dyn Read + Send>;

/// Opens `input` as `format`; `sheet` picks a spreadsheet's sheet by name (default the
/// first). A CSV is read as a stream, row by row; a spreadsheet is read whole first (its
/// formats need random access). The error says why the file cannot be read.
pub fn open(mut input: Input, format: Format, sheet: Option<&str>) -> Result<Sheet, String> {
    match format {
        Format::Csv => {
            if sheet.is_some() {
                return Err("sheet applies to spreadsheets, not CSV".into());
            }
            open_csv(input)
        }
        Format::Spreadsheet => {
            let mut bytes = Vec::new();
            input
                .read_to_end(&mut bytes)
                .map_err(|e| format!("the file could not be read: {e}"))?;
            open_spreadsheet(bytes::Bytes::from(bytes), sheet)
        }
    }
}

/// The delimiter of a CSV header line: the most frequent of `,`, `;` and tab outside quotes.
fn delimiter(bytes: &[u8]) -> u8 {
    let mut counts = [0usize; 3];
    let mut quoted = false;
    for &b in bytes.iter().take_while(|b| **b != b'\n') {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => counts[0] += 1,
            b';' if !quoted => counts[1] += 1,
            b'\t' if !quoted => counts[2] += 1,
            _ => {}
        }
    }
    let best = (0..3).max_by_key(|i| (counts[*i], 3 - i)).unwrap_or(0);
    [b',', b';', b'\t'][best]
}

fn open_csv(input: Input) -> Result<Sheet, String> {
    // The header line decides the delimiter: peek at the first 64 KiB.
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let peek = input
        .fill_buf()
        .map_err(|e| format!("the file could not be read: {e}"))?;
    let bom = peek.starts_with(b"\xEF\xBB\xBF");
    let delimiter = delimiter(if bom { &peek[3..] } else { peek });
    if bom {
        input.consume(3);
    }
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(false)
        .from_reader(input);
    let mut header = csv::StringRecord::new();
    let has_header = reader
        .read_record(&mut header)
        .map_err(|e| format!("the file is not CSV text: {e}"))?;
    if !has_header {
        return Err("the file is empty: it needs a header row".into());
    }
    let headers = header.iter().map(|h| h.trim().to_owned()).collect();
    let rows = reader.into_records().filter_map(|r| match r {
        Ok(record) => {
            if record.iter().all(|c| c.trim().is_empty()) {
                return None;
            }
            let line = record.position().map_or(0, |p| p.line());
            Some(Ok(Record {
                line,
                cells: record.iter().map(str::to_owned).collect(),
            }))
        }
        Err(e) => Some(Err(format!("the file is not valid CSV: {e}"))),
    });
    Ok(Sheet {
        headers,
        rows: Box::new(rows),
        kind: "csv",
    })
}

fn open_spreadsheet(bytes: bytes::Bytes, sheet: Option<&str>) -> Result<Sheet, String> {
    let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| {
        format!("the file is not a spreadsheet calamine can read (XLSX, XLS, XLSB, ODS): {e}")
    })?;
    let kind = match &workbook {
        calamine::Sheets::Xlsx(_) => "xlsx",
        calamine::Sheets::Xls(_) => "xls",
        calamine::Sheets::Xlsb(_) => "xlsb",
        calamine::Sheets::Ods(_) => "ods",
    };
    let names = workbook.sheet_names();
    let name = match sheet {
        Some(wanted) => names
            .iter()
            .find(|n| n.as_str() == wanted)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "the workbook has no sheet {wanted:?}; its sheets: {}",
                    names.join(", ")
                )
            })?,
        None => names.first().cloned().ok_or("the workbook has no sheet")?,
    };
    let range = workbook
        .worksheet_range(&name)
        .map_err(|e| format!("sheet {name:?} cannot be read: {e}"))?;
    let first_row = u64::from(range.start().map_or(0, |(r, _)| r));
    let mut rows = range.rows();
    let headers: Vec<String> = rows
        .next()
        .ok_or_else(|| format!("sheet {name:?} is empty: it needs a header row"))?
        .iter()
        .map(|c| cell_text(c).trim().to_owned())
        .collect();
    let records: Vec<Record> = rows
        .enumerate()
        .filter(|(_, r)| r.iter().any(|c| !matches!(c, Data::Empty)))
        .map(|(i, r)| Record {
            line: first_row + i as u64 + 2,
            cells: r.iter().map(cell_text).collect(),
        })
        .collect();
    Ok(Sheet {
        headers,
        rows: Box::new(records.into_iter().map(Ok)),
        kind,
    })
}

/// A cell as the text a CSV would hold: dates as ISO dates (or times), numbers without
/// binary noise (`0.1 + 0.2` is `0.3`).
fn cell_text(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => Decimal::from_f64(*f)
            .map(|d| d.round_dp(9).normalize().to_string())
            .unwrap_or_else(|| f.to_string()),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => t.date().to_string(),
            Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            None => dt.as_f64().to_string(),
        },
        Data::Error(e) => format!("#{e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_a_bom_semicolons_and_quotes() {
        let file =
            "\u{feff}SKU;Name;Price\n\"A-1\";\"Widget; large\";\"1.234,50\"\n\n;;\nB-2;Gadget;3\n";
        let sheet = open(Box::new(Cursor::new(file)), Format::Csv, None).unwrap();
        assert_eq!(sheet.headers, ["SKU", "Name", "Price"]);
        let rows: Vec<_> = sheet.rows.map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].cells, ["A-1", "Widget; large", "1.234,50"]);
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn media_types() {
        assert_eq!(
            Format::from_media_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_media_type(
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
            ),
            Some(Format::Spreadsheet)
        );
        assert_eq!(Format::from_media_type("application/json"), None);
        assert!(open(Box::new(Cursor::new(b"")), Format::Csv, None).is_err());
        assert!(open(Box::new(Cursor::new(b"x,y")), Format::Spreadsheet, None).is_err());
    }
}
