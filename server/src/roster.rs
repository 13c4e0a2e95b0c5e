//! Village roster import: reads the household roster (户籍人员花名册) a village
//! committee keeps as an Excel workbook or a CSV file, and turns it into
//! [`Household`]s with their [`Resident`]s.
//!
//! A workbook's sheets are searched in order and the first one with a header row is
//! read, so a roster behind a sheet of notes (说明) is found.
//!
//! A roster has one row per resident, grouped by household, under a header row that
//! names the columns (序号, 村民小组, 网格, 门牌号, 户主姓名, 姓名, 与户主关系, 性别,
//! 公民身份号码, 出生日期, 联系电话, 重点人群, 备注). Above the header sit a title row
//! ("东坡村户籍人员花名册") and other merged cells; below the residents a totals row
//! (合计). Columns are found by name, not by position. Blank rows, totals rows
//! (合计, 总计, 小计), repeated header rows and rows with neither name, ID number, door
//! number nor head of household (notes, signature lines) are skipped silently.
//!
//! What is only messy is normalised without an error: phone numbers with spaces,
//! dashes or full-width digits; names with stray spaces (U+3000 included); a
//! lower-case `x` closing an ID number; an old 15-digit ID number (upgraded to 18
//! characters per GB 11643-1999); dates written as Excel serial numbers, Excel date
//! cells, `1992.10.2`, `19521023`, `1951/7/31` or `1979-09-10`; household cells
//! (网格, 门牌号, 户主姓名) left empty under a vertically merged cell.
//!
//! A row that is genuinely wrong (bad ID checksum, a person listed twice, a phone
//! number that is not 11 digits, an empty name, an unreadable date, a birth date in
//! the future or before 1890, a row cut short before the header's last required
//! column...) is reported in [`Roster::row_errors`] and not imported; every other row
//! is imported. Row errors carry the row's name only, never its ID number, phone or
//! birth date.
//!
//! A resident whose ID number cell is empty is imported, without an ID number
//! ([`Resident::id_number`] is `None`): some residents have no ID at hand. A row that
//! stops before it reaches the ID column (or another required column) is refused as
//! cut short.
//!
//! IDs are deterministic (UUID version 5 under [`ROSTER_NAMESPACE`]), so importing the
//! same roster twice yields the same household and resident IDs.

use std::collections::{HashMap, HashSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};

use calamine::{Data, ExcelDateTime, ExcelDateTimeType, Reader, Xlsx};
use doorstep_core::model::{Household, HouseholdId, Resident, ResidentId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of the version 5 UUIDs given to imported households and residents.
///
/// A household's ID is `Uuid::new_v5(&ROSTER_NAMESPACE, "village|door|head")` (door
/// number and head of household name as normalised by the import); a resident's is
/// `Uuid::new_v5(&ROSTER_NAMESPACE, "household-id|id_number")` with the household ID
/// in hyphenated form and the 18-character ID number. Never change this value: it
/// would give every re-imported household a new ID.
pub const ROSTER_NAMESPACE: Uuid = Uuid::from_u128(0x56aa_7b0b_4bc7_4b6a_8b5b_3378_7bc0_74ab);

/// How many rows from the top are searched for the header row.
pub(crate) const HEADER_SEARCH_ROWS: usize = 30;

/// The result of reading one roster file.
#[derive(Debug, Clone, PartialEq)]
pub struct Roster {
    /// One household per (village, door number, head of household name), in the order
    /// the roster first lists them. Each holds its imported residents keyed by
    /// [`ResidentId`]; `phone` is the head's phone, else the first resident phone,
    /// else empty.
    pub households: Vec<Household>,
    /// Number of resident rows imported (the sum of the households' residents).
    pub residents_imported: usize,
    /// Rows reported and not imported, in file order.
    pub row_errors: Vec<RowError>,
}

/// A roster row that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Row number as the user sees it: for a workbook, Excel's 1-based row number; for
    /// a CSV file, the line of the file on which the row starts (first line 1).
    pub line: u64,
    /// The row's name (姓名) with all whitespace removed; empty when the row has none.
    pub name: String,
    /// Why the row was refused, in English, e.g. `ID number checksum does not match`,
    /// `the same ID number appears twice`, `phone number has 10 digits, not 11`.
    pub reason: String,
}

/// The file formats a roster can come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RosterKind {
    /// Office Open XML workbook (`.xlsx`); the first sheet, in workbook order, that
    /// has a header row is read.
    Xlsx,
    /// Comma-separated values (`.csv`): UTF-8 with or without a byte order mark, UTF-16
    /// with a byte order mark, or else GBK/GB18030 as Excel on a Chinese Windows
    /// saves it.
    Csv,
}

impl RosterKind {
    /// The kind named by the file's extension (`.xlsx` or `.csv`, any case); `None`
    /// for any other extension.
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "xlsx" => Some(Self::Xlsx),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Why a roster file could not be read at all. Errors name what was wrong and where,
/// never a person's data.
#[derive(Debug, thiserror::Error)]
pub enum RosterError {
    /// The file could not be read from disk.
    #[error("could not read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's extension is neither `.xlsx` nor `.csv`.
    #[error("{} is not a roster file: expected a .xlsx or .csv file", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// A CSV file is neither valid UTF-8 nor valid GBK/GB18030 (or, with a UTF-16
    /// byte order mark, not valid UTF-16).
    #[error("line {line} of the CSV file is neither UTF-8 nor GBK/GB18030 text")]
    Encoding {
        /// 1-based line of the first undecodable byte.
        line: u64,
    },
    /// The file is empty: no bytes, or only whitespace and byte order marks.
    #[error("the file is empty")]
    Empty,
    /// The CSV reader refused the file.
    #[error("the CSV file could not be read at line {line}: {message}")]
    Csv {
        /// 1-based line where reading failed.
        line: u64,
        /// What the CSV reader reported.
        message: String,
    },
    /// The file is not a `.xlsx` workbook at all: not a zip archive (random or
    /// truncated bytes, a CSV or an old `.xls` renamed to `.xlsx`) or an archive
    /// without a workbook in it. Holds the spreadsheet reader's detail.
    #[error(
        "not a valid .xlsx workbook (it may be damaged, or another format renamed to \
         .xlsx): {0}"
    )]
    NotAWorkbook(String),
    /// The workbook opened but one of its sheets could not be read (malformed XML,
    /// damaged sheet...).
    #[error("the workbook could not be read: {0}")]
    Spreadsheet(String),
    /// The workbook has no sheet.
    #[error("the workbook has no sheet")]
    NoSheet,
    /// No row among the first rows names the roster's columns (in a workbook: of any
    /// sheet).
    #[error(
        "no header row found in the first {rows_searched} rows{}: expected a row naming \
         the columns 网格, 门牌号, 户主姓名, 姓名, 公民身份号码",
        sheets_searched(sheets)
    )]
    NoHeader {
        /// How many rows were searched (in a workbook: of the longest sheet).
        rows_searched: u64,
        /// The names of the workbook's sheets searched, in order; empty for a CSV
        /// file.
        sheets: Vec<String>,
    },
    /// The header row lacks a required column (网格, 门牌号, 户主姓名, 姓名 or
    /// 公民身份号码).
    #[error("the header row at line {line} has no column {column}")]
    MissingColumn {
        /// The missing column's name as rosters write it, e.g. `公民身份号码`.
        column: &'static str,
        /// Line (row number) of the header row.
        line: u64,
    },
}

/// ` of the sheet "A"` / ` of the sheets "A", "B"` for [`RosterError::NoHeader`].
fn sheets_searched(sheets: &[String]) -> String {
    let quoted: Vec<String> = sheets.iter().map(|name| format!("\"{name}\"")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => format!(" of the sheet {one}"),
        all => format!(" of the sheets {}", all.join(", ")),
    }
}

/// Reads the roster at `path`, choosing the format by extension (see [`RosterKind`]).
///
/// Errors: [`RosterError::UnknownFormat`] for another extension, [`RosterError::Io`]
/// when the file cannot be read, and whatever [`read_roster_bytes`] returns.
pub fn read_roster(path: &Path) -> Result<Roster, RosterError> {
    let kind = RosterKind::from_path(path).ok_or_else(|| RosterError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| RosterError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_roster_bytes(&bytes, kind)
}

/// Reads a roster from the bytes of a file of the given kind.
///
/// Row-level problems are reported in [`Roster::row_errors`]; an `Err` means the file
/// as a whole is unusable: empty ([`RosterError::Empty`]), undecodable
/// ([`RosterError::Encoding`], [`RosterError::Csv`], [`RosterError::NotAWorkbook`],
/// [`RosterError::Spreadsheet`], [`RosterError::NoSheet`]), without a header row
/// ([`RosterError::NoHeader`]) or without a required column
/// ([`RosterError::MissingColumn`]). Never panics, whatever the bytes.
pub fn read_roster_bytes(bytes: &[u8], kind: RosterKind) -> Result<Roster, RosterError> {
    let (rows, header) = match kind {
        RosterKind::Xlsx => xlsx_roster_sheet(bytes)?,
        RosterKind::Csv => {
            let text = decode_text(bytes)?;
            if is_blank_text(&text) {
                return Err(RosterError::Empty);
            }
            let rows = csv_rows(&text)?;
            let header = find_header(&rows).ok_or(RosterError::NoHeader {
                rows_searched: header_rows_searched(&rows),
                sheets: Vec::new(),
            })?;
            (rows, header)
        }
    };
    let today = chrono::Local::now().date_naive();
    let roster = import(&rows, header, today)?;
    tracing::info!(
        households = roster.households.len(),
        residents = roster.residents_imported,
        row_errors = roster.row_errors.len(),
        "roster read"
    );
    Ok(roster)
}

// ---------------------------------------------------------------------------------
// Cells and rows, whatever the file format.

/// One cell as read from either format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Empty,
    Text(String),
    Number(f64),
    /// A cell Excel formats as a date or duration.
    DateTime(ExcelDateTime),
}

static EMPTY_CELL: Cell = Cell::Empty;

impl Cell {
    /// Empty, or text of whitespace only.
    pub(crate) fn is_blank(&self) -> bool {
        match self {
            Cell::Empty => true,
            Cell::Text(s) => s.trim().is_empty(),
            Cell::Number(_) | Cell::DateTime(_) => false,
        }
    }

    /// The cell as text: numbers without a spurious `.0`, dates as ISO dates.
    pub(crate) fn text(&self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Number(f) => number_text(*f),
            Cell::DateTime(dt) => {
                excel_datetime_date(dt).unwrap_or_else(|| number_text(dt.as_f64()))
            }
        }
    }
}

/// One row of a sheet or CSV file.
#[derive(Debug)]
pub(crate) struct RawRow {
    /// Row number as the user sees it (Excel row or CSV line, 1-based).
    pub(crate) line: u64,
    /// Its cells, from the first column of the sheet's used range.
    pub(crate) cells: Vec<Cell>,
}

fn number_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// A file with nothing but whitespace and byte order marks in it.
fn is_blank_text(text: &str) -> bool {
    text.chars().all(|c| c.is_whitespace() || c == '\u{FEFF}')
}

/// The rows of the workbook's first sheet (in workbook order) that has a header row,
/// and that header.
fn xlsx_roster_sheet(bytes: &[u8]) -> Result<(Vec<RawRow>, Header), RosterError> {
    xlsx_sheet_with(bytes, find_header)
}

/// The rows of a workbook's first sheet (in workbook order) in which `find` finds a
/// header, and what `find` returned: the roster's reader, shared with the other
/// workbook imports (`places`).
///
/// Errors: [`RosterError::Empty`], [`RosterError::NotAWorkbook`],
/// [`RosterError::NoSheet`], [`RosterError::Spreadsheet`], and
/// [`RosterError::NoHeader`] when no sheet has a header (its message names the
/// roster's columns: a caller reading another table names its own).
pub(crate) fn xlsx_sheet_with<H>(
    bytes: &[u8],
    find: impl Fn(&[RawRow]) -> Option<H>,
) -> Result<(Vec<RawRow>, H), RosterError> {
    // calamine parses untrusted archives and XML; should it ever panic on a malformed
    // file, the import reports a damaged workbook instead of taking the server down.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(
        || -> Result<(Vec<RawRow>, H), RosterError> {
            let mut workbook: Xlsx<_> = match Xlsx::new(Cursor::new(bytes)) {
                Ok(workbook) => workbook,
                // Not a zip archive at all: an empty file is worth saying so.
                Err(_) if decode_text(bytes).is_ok_and(|text| is_blank_text(&text)) => {
                    return Err(RosterError::Empty);
                }
                Err(e) => return Err(RosterError::NotAWorkbook(e.to_string())),
            };
            let names = workbook.sheet_names();
            if names.is_empty() {
                return Err(RosterError::NoSheet);
            }
            let mut rows_searched = 0;
            for name in &names {
                let range = workbook
                    .worksheet_range(name)
                    .map_err(|e| RosterError::Spreadsheet(format!("sheet \"{name}\": {e}")))?;
                let rows = range_rows(&range);
                if let Some(header) = find(&rows) {
                    tracing::debug!(sheet = %name, "sheet with a header found");
                    return Ok((rows, header));
                }
                rows_searched = rows_searched.max(header_rows_searched(&rows));
            }
            Err(RosterError::NoHeader {
                rows_searched,
                sheets: names,
            })
        },
    ));
    match read {
        Ok(result) => result,
        Err(_) => Err(RosterError::Spreadsheet(
            "the workbook is malformed (the spreadsheet reader failed)".into(),
        )),
    }
}

fn range_rows(range: &calamine::Range<Data>) -> Vec<RawRow> {
    // A range starts at its first used cell, not necessarily at A1.
    let first_row = u64::from(range.start().map_or(0, |(row, _)| row));
    range
        .rows()
        .enumerate()
        .map(|(i, row)| RawRow {
            line: first_row + i as u64 + 1,
            cells: row.iter().map(cell_from_data).collect(),
        })
        .collect()
}

fn cell_from_data(data: &Data) -> Cell {
    match data {
        Data::Empty => Cell::Empty,
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Float(f) => Cell::Number(*f),
        Data::Bool(b) => Cell::Text(if *b { "TRUE" } else { "FALSE" }.into()),
        Data::DateTime(dt) => Cell::DateTime(*dt),
        Data::Error(e) => Cell::Text(e.to_string()),
    }
}

/// Decodes a CSV file: by its byte order mark if it has one, else UTF-8 if valid, else
/// GB18030 (a superset of GBK).
fn decode_text(bytes: &[u8]) -> Result<String, RosterError> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        return decode_strict(encoding, bytes.get(bom_len..).unwrap_or_default());
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(_) => decode_strict(encoding_rs::GB18030, bytes),
    }
}

/// Decodes without replacement characters; on a malformed byte, names its line.
fn decode_strict(
    encoding: &'static encoding_rs::Encoding,
    bytes: &[u8],
) -> Result<String, RosterError> {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let capacity = decoder
        .max_utf8_buffer_length_without_replacement(bytes.len())
        .unwrap_or(bytes.len().saturating_mul(3));
    let mut out = String::with_capacity(capacity);
    let mut rest = bytes;
    loop {
        let (result, read) = decoder.decode_to_string_without_replacement(rest, &mut out, true);
        rest = rest.get(read..).unwrap_or_default();
        match result {
            encoding_rs::DecoderResult::InputEmpty => return Ok(out),
            encoding_rs::DecoderResult::OutputFull => out.reserve(rest.len().max(16) * 3),
            encoding_rs::DecoderResult::Malformed(_, _) => {
                let line = out.matches('\n').count() as u64 + 1;
                return Err(RosterError::Encoding { line });
            }
        }
    }
}

fn csv_rows(text: &str) -> Result<Vec<RawRow>, RosterError> {
    // Excel's "Unicode text" export separates with tabs; everything else with commas.
    let delimiter = if text.matches('\t').count() > text.matches(',').count() {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut rows = Vec::new();
    let bytes = text.as_bytes();
    // csv's record position is where the reader resumed after the previous record:
    // before a CRLF's LF and before skipped blank lines. The record's first line is
    // found from that byte offset by stepping over line breaks.
    let (mut counted_to, mut line) = (0usize, 1u64);
    for record in reader.records() {
        let record = record.map_err(|e| RosterError::Csv {
            line: e.position().map_or(0, |p| p.line()),
            message: match e.kind() {
                csv::ErrorKind::Utf8 { .. } => "text is not valid UTF-8".into(),
                _ => e.to_string(),
            },
        })?;
        let resumed_at = record
            .position()
            .and_then(|p| usize::try_from(p.byte()).ok())
            .unwrap_or(counted_to)
            .clamp(counted_to, bytes.len());
        let skipped = bytes[resumed_at..]
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        let start = resumed_at + skipped;
        line += line_breaks(bytes, counted_to, start);
        counted_to = start;
        let cells = record
            .iter()
            .map(|field| {
                if field.is_empty() {
                    Cell::Empty
                } else {
                    Cell::Text(field.to_owned())
                }
            })
            .collect();
        rows.push(RawRow { line, cells });
    }
    Ok(rows)
}

/// Line breaks (LF, CRLF or a lone CR) that end in `bytes[from..to]`.
fn line_breaks(bytes: &[u8], from: usize, to: usize) -> u64 {
    (from..to)
        .filter(|&i| match bytes[i] {
            b'\n' => true,
            b'\r' => bytes.get(i + 1) != Some(&b'\n'),
            _ => false,
        })
        .count() as u64
}

// ---------------------------------------------------------------------------------
// Columns.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Seq,
    Group,
    Grid,
    Door,
    Head,
    Name,
    Relation,
    Sex,
    IdNumber,
    BirthDate,
    Phone,
    TargetGroups,
    Remarks,
}

const COLUMN_COUNT: usize = 13;

struct ColumnSpec {
    col: Col,
    /// The name rosters use, reported in [`RosterError::MissingColumn`].
    name: &'static str,
    /// Other spellings seen in rosters.
    aliases: &'static [&'static str],
    required: bool,
}

const COLUMNS: [ColumnSpec; COLUMN_COUNT] = [
    ColumnSpec {
        col: Col::Seq,
        name: "序号",
        aliases: &["编号"],
        required: false,
    },
    ColumnSpec {
        col: Col::Group,
        name: "村民小组",
        aliases: &["小组", "村组", "组别"],
        required: false,
    },
    ColumnSpec {
        col: Col::Grid,
        name: "网格",
        aliases: &["所属网格", "网格名称"],
        required: true,
    },
    ColumnSpec {
        col: Col::Door,
        name: "门牌号",
        aliases: &["门牌号码", "门牌"],
        required: true,
    },
    ColumnSpec {
        col: Col::Head,
        name: "户主姓名",
        aliases: &["户主"],
        required: true,
    },
    ColumnSpec {
        col: Col::Name,
        name: "姓名",
        aliases: &["居民姓名", "成员姓名"],
        required: true,
    },
    ColumnSpec {
        col: Col::Relation,
        name: "与户主关系",
        aliases: &["关系"],
        required: false,
    },
    ColumnSpec {
        col: Col::Sex,
        name: "性别",
        aliases: &[],
        required: false,
    },
    ColumnSpec {
        col: Col::IdNumber,
        name: "公民身份号码",
        aliases: &["身份证号码", "身份证号", "公民身份证号码", "身份号码"],
        required: true,
    },
    ColumnSpec {
        col: Col::BirthDate,
        name: "出生日期",
        aliases: &["出生年月日"],
        required: false,
    },
    ColumnSpec {
        col: Col::Phone,
        name: "联系电话",
        aliases: &["电话", "电话号码", "手机号", "手机号码", "联系方式"],
        required: false,
    },
    ColumnSpec {
        col: Col::TargetGroups,
        name: "重点人群",
        aliases: &["人群类别"],
        required: false,
    },
    ColumnSpec {
        col: Col::Remarks,
        name: "备注",
        aliases: &[],
        required: false,
    },
];

/// Where each column sits in the rows, by [`Col`] order.
#[derive(Debug, Default)]
struct Columns([Option<usize>; COLUMN_COUNT]);

impl Columns {
    /// Recognises the column names in a row; the first cell naming a column wins.
    fn recognise(row: &[Cell]) -> Self {
        let mut found = Columns::default();
        for (index, cell) in row.iter().enumerate() {
            let Cell::Text(text) = cell else { continue };
            let label: String = remove_whitespace(text)
                .trim_start_matches(['*', '＊'])
                .to_owned();
            if let Some(spec) = COLUMNS
                .iter()
                .find(|s| s.name == label || s.aliases.contains(&label.as_str()))
            {
                found.0[spec.col as usize].get_or_insert(index);
            }
        }
        found
    }

    fn count(&self) -> usize {
        self.0.iter().filter(|c| c.is_some()).count()
    }

    fn is_header(&self) -> bool {
        self.count() >= 3
    }

    fn cell<'a>(&self, row: &'a [Cell], col: Col) -> &'a Cell {
        self.0[col as usize]
            .and_then(|i| row.get(i))
            .unwrap_or(&EMPTY_CELL)
    }

    fn text(&self, row: &[Cell], col: Col) -> String {
        self.cell(row, col).text()
    }
}

// ---------------------------------------------------------------------------------
// The import proper.

/// Household cells carried down from the previous row, for cells left empty under a
/// vertically merged cell.
#[derive(Debug, Default)]
struct Carry {
    grid: String,
    door: String,
    head: String,
}

#[derive(Debug)]
struct PendingHousehold {
    household: Household,
    head_phone: Option<String>,
    first_phone: Option<String>,
    /// Residents without an ID number so far, by name, for their deterministic IDs.
    unnumbered: HashMap<String, u32>,
}

/// The header row found among the first rows: its index in the rows and its columns.
#[derive(Debug)]
struct Header {
    index: usize,
    columns: Columns,
}

/// The first row among the first [`HEADER_SEARCH_ROWS`] that names enough columns.
fn find_header(rows: &[RawRow]) -> Option<Header> {
    rows.iter()
        .take(HEADER_SEARCH_ROWS)
        .enumerate()
        .find_map(|(index, row)| {
            let columns = Columns::recognise(&row.cells);
            columns.is_header().then_some(Header { index, columns })
        })
}

/// How many rows [`find_header`] looks at.
fn header_rows_searched(rows: &[RawRow]) -> u64 {
    rows.len().min(HEADER_SEARCH_ROWS) as u64
}

/// Imports the rows under the header; `today` bounds birth dates.
fn import(
    rows: &[RawRow],
    header: Header,
    today: chrono::NaiveDate,
) -> Result<Roster, RosterError> {
    let Header {
        index: header_index,
        columns,
    } = header;
    let header_row = &rows[header_index];
    if let Some(missing) = COLUMNS
        .iter()
        .find(|spec| spec.required && columns.0[spec.col as usize].is_none())
    {
        return Err(RosterError::MissingColumn {
            column: missing.name,
            line: header_row.line,
        });
    }
    // A row must reach the last required column; the header's own width (without
    // trailing empty cells) is what the report compares it with.
    let required_cells = COLUMNS
        .iter()
        .filter(|spec| spec.required)
        .filter_map(|spec| columns.0[spec.col as usize])
        .max()
        .map_or(0, |last| last + 1);
    let header_cells = header_row
        .cells
        .iter()
        .rposition(|cell| !cell.is_blank())
        .map_or(0, |last| last + 1);

    let title_village = rows[..header_index]
        .iter()
        .flat_map(|row| row.cells.iter())
        .filter_map(|cell| match cell {
            Cell::Text(text) => village_from_title(text),
            _ => None,
        })
        .next();

    let mut importer = Importer {
        columns,
        required_cells,
        header_cells,
        today,
        title_village,
        carry: None,
        seen_ids: HashSet::new(),
        households: Vec::new(),
        index: HashMap::new(),
        row_errors: Vec::new(),
        residents_imported: 0,
    };
    for row in &rows[header_index + 1..] {
        importer.row(row);
    }
    Ok(importer.finish())
}

struct Importer {
    columns: Columns,
    /// Cells a row needs to reach the header's last required column.
    required_cells: usize,
    /// Cells of the header row, up to its last non-empty one.
    header_cells: usize,
    /// Birth dates after this day are refused.
    today: chrono::NaiveDate,
    title_village: Option<String>,
    carry: Option<Carry>,
    seen_ids: HashSet<String>,
    households: Vec<PendingHousehold>,
    index: HashMap<(String, String, String), usize>,
    row_errors: Vec<RowError>,
    residents_imported: usize,
}

impl Importer {
    fn row(&mut self, row: &RawRow) {
        let cells = row.cells.as_slice();
        let cols = &self.columns;
        // Blank rows, totals rows, repeated header rows, notes under the table.
        let Some(first) = cells.iter().find(|c| !c.is_blank()) else {
            return;
        };
        let first = remove_whitespace(&first.text());
        if ["合计", "总计", "小计", "共计"]
            .iter()
            .any(|w| first.starts_with(w))
        {
            return;
        }
        if Columns::recognise(cells).is_header() {
            return;
        }
        if [Col::Name, Col::IdNumber, Col::Door, Col::Head]
            .iter()
            .all(|&c| cols.cell(cells, c).is_blank())
        {
            return;
        }

        let name = remove_whitespace(&cols.text(cells, Col::Name));
        let relation = remove_whitespace(&cols.text(cells, Col::Relation));
        let grid_cell = remove_whitespace(&cols.text(cells, Col::Grid));
        let door_cell = normalise_door(&cols.text(cells, Col::Door));
        let head_cell = remove_whitespace(&cols.text(cells, Col::Head));

        // Fill down cells left empty under a merged cell.
        let carry = self.carry.take().unwrap_or_default();
        let door = if door_cell.is_empty() {
            carry.door.clone()
        } else {
            door_cell
        };
        let head = if !head_cell.is_empty() {
            head_cell
        } else if relation == "户主" {
            name.clone()
        } else if !door.is_empty() && door == carry.door {
            carry.head.clone()
        } else {
            String::new()
        };
        let grid = if grid_cell.is_empty() {
            carry.grid.clone()
        } else {
            grid_cell
        };
        self.carry = Some(Carry {
            grid: grid.clone(),
            door: door.clone(),
            head: head.clone(),
        });

        let resident = if cells.len() < self.required_cells {
            Err(format!(
                "the row is cut short: it has {} cells, the header has {}",
                cells.len(),
                self.header_cells
            ))
        } else {
            self.resident(cells, &name, &relation)
        };
        match resident {
            Err(reason) => self.row_errors.push(RowError {
                line: row.line,
                name,
                reason,
            }),
            Ok(resident) => {
                let missing = if door.is_empty() {
                    Some("door number is empty")
                } else if head.is_empty() {
                    Some("head of household name is empty")
                } else if grid.is_empty() {
                    Some("grid is empty")
                } else {
                    None
                };
                if let Some(reason) = missing {
                    self.row_errors.push(RowError {
                        line: row.line,
                        name,
                        reason: reason.into(),
                    });
                    return;
                }
                self.add(resident, grid, door, head);
            }
        }
    }

    /// Validates and normalises the resident's own cells, in the order: name, ID
    /// number, duplicate, birth date (a date, not in the future, not before 1890),
    /// phone.
    fn resident(&mut self, cells: &[Cell], name: &str, relation: &str) -> Result<Resident, String> {
        let cols = &self.columns;
        if name.is_empty() {
            return Err("name is empty".into());
        }
        let id_number = normalise_id(cols.cell(cells, Col::IdNumber))?;
        if let Some(id) = &id_number
            && !self.seen_ids.insert(id.clone())
        {
            return Err("the same ID number appears twice".into());
        }
        let birth_date = parse_date(cols.cell(cells, Col::BirthDate))
            .map_err(|()| "birth date is not a date (expected e.g. 1992-10-02)".to_string())?;
        if let Some(date) = &birth_date {
            check_birth_date(date, self.today)?;
        }
        let phone = normalise_phone(&cols.text(cells, Col::Phone))?;
        let sex = match remove_whitespace(&cols.text(cells, Col::Sex)).as_str() {
            "男" | "男性" => "男",
            "女" | "女性" => "女",
            _ => "",
        };
        Ok(Resident {
            name: name.to_owned(),
            relation: relation.to_owned(),
            sex: sex.into(),
            birth_date,
            id_number,
            phone,
            target_groups: split_list(&cols.text(cells, Col::TargetGroups)),
        })
    }

    fn add(&mut self, resident: Resident, grid: String, door: String, head: String) {
        let village = self
            .title_village
            .clone()
            .or_else(|| village_from_text(&grid))
            .or_else(|| village_from_text(&door))
            .unwrap_or_default();
        let key = (village, door, head);
        let index = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let (village, door, head) = &key;
                let id = HouseholdId(Uuid::new_v5(
                    &ROSTER_NAMESPACE,
                    format!("{village}|{door}|{head}").as_bytes(),
                ));
                let mut household = Household::new(id, village, &grid, door);
                household.head_name = head.clone();
                self.households.push(PendingHousehold {
                    household,
                    head_phone: None,
                    first_phone: None,
                    unnumbered: HashMap::new(),
                });
                self.index.insert(key.clone(), self.households.len() - 1);
                self.households.len() - 1
            }
        };
        let pending = &mut self.households[index];
        let household_id = pending.household.id.clone();
        let id_key = match &resident.id_number {
            Some(id) => format!("{household_id}|{id}"),
            None => {
                // No ID number: key on the name and its occurrence in the household.
                let n = pending.unnumbered.entry(resident.name.clone()).or_insert(0);
                *n += 1;
                format!("{household_id}|name:{}#{n}", resident.name)
            }
        };
        let resident_id = ResidentId(Uuid::new_v5(&ROSTER_NAMESPACE, id_key.as_bytes()));
        if let Some(phone) = &resident.phone {
            let is_head =
                resident.relation == "户主" || resident.name == pending.household.head_name;
            if is_head && pending.head_phone.is_none() {
                pending.head_phone = Some(phone.clone());
            }
            if pending.first_phone.is_none() {
                pending.first_phone = Some(phone.clone());
            }
        }
        pending
            .household
            .residents
            .insert(resident_id.to_string(), resident);
        self.residents_imported += 1;
    }

    fn finish(self) -> Roster {
        let households = self
            .households
            .into_iter()
            .map(|p| {
                let mut household = p.household;
                household.phone = p.head_phone.or(p.first_phone).unwrap_or_default();
                household
            })
            .collect();
        Roster {
            households,
            residents_imported: self.residents_imported,
            row_errors: self.row_errors,
        }
    }
}

// ---------------------------------------------------------------------------------
// Normalisation.

/// Maps full-width ASCII forms (U+FF01..U+FF5E, e.g. `１`, `－`, `ｘ`) to ASCII and
/// the ideographic space U+3000 to a space.
pub(crate) fn to_halfwidth(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\u{3000}' => ' ',
            '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

/// Removes all whitespace (U+3000 included) and zero-width characters.
pub(crate) fn remove_whitespace(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '\u{200B}'..='\u{200D}' | '\u{FEFF}'))
        .collect()
}

/// A door number: whitespace removed, full-width digits made ASCII.
fn normalise_door(s: &str) -> String {
    remove_whitespace(&to_halfwidth(s))
}

/// Normalises a mobile number to 11 ASCII digits: full-width digits, spaces, dashes and
/// a leading `+86` are dropped. `Ok(None)` when empty; `Err(reason)` otherwise.
fn normalise_phone(raw: &str) -> Result<Option<String>, String> {
    let cleaned: String = to_halfwidth(raw)
        .chars()
        .filter(|c| {
            !c.is_whitespace()
                && !matches!(
                    c,
                    '-' | '‐' | '‑' | '‒' | '–' | '—' | '\u{200B}' | '\u{FEFF}'
                )
        })
        .collect();
    let digits = cleaned.strip_prefix("+86").unwrap_or(&cleaned);
    if digits.is_empty() {
        return Ok(None);
    }
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err("phone number contains characters other than digits".into());
    }
    if digits.len() != 11 {
        return Err(format!("phone number has {} digits, not 11", digits.len()));
    }
    Ok(Some(digits.to_owned()))
}

/// Weights of the first 17 characters of an ID number, GB 11643-1999: 2^(17-i) mod 11.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character by weighted sum mod 11, GB 11643-1999 (ISO 7064 MOD 11-2).
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// The check character of an 18-character ID number (GB 11643-1999) from its first 17
/// digits; `None` when `first17` is not 17 ASCII digits.
fn id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 || !first17.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first17
        .bytes()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(ID_CHECK[(sum % 11) as usize])
}

/// Upgrades a 15-digit ID number (before 1999, no century, no check character) to 18:
/// "19" after the 6-digit area code, then the GB 11643-1999 check character.
fn upgrade_id15(id15: &str) -> Option<String> {
    if id15.len() != 15 || !id15.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let first17 = format!("{}19{}", &id15[..6], &id15[6..]);
    let check = id_check_char(&first17)?;
    Some(format!("{first17}{check}"))
}

/// Normalises a national ID number to 18 characters with an upper-case check
/// character, and checks it per GB 11643-1999. `Ok(None)` when the cell is empty.
fn normalise_id(cell: &Cell) -> Result<Option<String>, String> {
    let raw = match cell {
        Cell::Number(f) if *f >= 1e15 => {
            return Err(
                "ID number was stored as a number and lost its last digits; store the column as text"
                    .into(),
            );
        }
        other => other.text(),
    };
    let id = remove_whitespace(&to_halfwidth(&raw)).to_ascii_uppercase();
    if id.is_empty() {
        return Ok(None);
    }
    let (body, last) = id.split_at(id.len() - id.chars().last().map_or(0, char::len_utf8));
    let well_formed = body.bytes().all(|b| b.is_ascii_digit())
        && last.bytes().all(|b| b.is_ascii_digit() || b == b'X');
    if !well_formed {
        return Err("ID number contains characters other than digits and a final X".into());
    }
    match id.len() {
        18 => {
            if id_check_char(body).map(String::from).as_deref() == Some(last) {
                Ok(Some(id))
            } else {
                Err("ID number checksum does not match".into())
            }
        }
        15 => upgrade_id15(&id)
            .map(Some)
            .ok_or_else(|| "a 15-digit ID number must be all digits".into()),
        n => Err(format!("ID number has {n} characters, not 18")),
    }
}

/// The earliest birth date accepted: no one alive was born before.
const EARLIEST_BIRTH_YEAR: i32 = 1890;

/// Refuses an ISO birth date after `today` or before [`EARLIEST_BIRTH_YEAR`]. The
/// reason does not repeat the date: row errors never carry a person's data.
fn check_birth_date(iso: &str, today: chrono::NaiveDate) -> Result<(), String> {
    let date = chrono::NaiveDate::parse_from_str(iso, "%Y-%m-%d")
        .map_err(|_| "birth date is not a date (expected e.g. 1992-10-02)".to_string())?;
    if date > today {
        return Err("birth date is in the future".into());
    }
    if chrono::Datelike::year(&date) < EARLIEST_BIRTH_YEAR {
        return Err(format!("birth date is before {EARLIEST_BIRTH_YEAR}"));
    }
    Ok(())
}

/// The largest Excel serial date, 9999-12-31.
const EXCEL_MAX_SERIAL: f64 = 2_958_466.0;

/// A calendar date as `YYYY-MM-DD`, for a four-digit year; whether it is a plausible
/// birth date is [`check_birth_date`]'s business.
fn iso_date(year: i64, month: i64, day: i64) -> Option<String> {
    if !(1000..=9999).contains(&year) {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        u32::try_from(month).ok()?,
        u32::try_from(day).ok()?,
    )?;
    Some(date.format("%Y-%m-%d").to_string())
}

/// The date part of an Excel date cell as `YYYY-MM-DD`; `None` for a duration or a
/// value outside Excel's date range.
fn excel_datetime_date(dt: &ExcelDateTime) -> Option<String> {
    let value = dt.as_f64();
    if !dt.is_datetime() || !(1.0..EXCEL_MAX_SERIAL).contains(&value) {
        return None;
    }
    let (y, m, d, ..) = dt.to_ymd_hms_milli();
    iso_date(i64::from(y), i64::from(m), i64::from(d))
}

/// An Excel serial day number (1900 date system) as `YYYY-MM-DD`.
fn excel_serial_date(serial: f64) -> Option<String> {
    excel_datetime_date(&ExcelDateTime::new(
        serial,
        ExcelDateTimeType::DateTime,
        false,
    ))
}

/// A date written as text: `1992.10.2`, `19521023`, `1951/7/31`, `1979-09-10`,
/// `1992年10月2日`, an ISO date-time, or an Excel serial number as text.
fn parse_date_text(raw: &str) -> Option<String> {
    let halfwidth = to_halfwidth(raw);
    let trimmed = halfwidth.trim();
    // Drop a time of day: "1979-09-10 00:00:00", "1979-09-10T00:00:00".
    let date = trimmed.split([' ', 'T']).next().unwrap_or_default();
    if date.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = date.parse().ok()?;
        return match date.len() {
            8 => iso_date(n / 10_000, n / 100 % 100, n % 100),
            1..=5 => excel_serial_date(n as f64),
            _ => None,
        };
    }
    let parts: Vec<&str> = date
        .split(['.', '/', '-', '年', '月', '日', '。'])
        .filter(|p| !p.is_empty())
        .collect();
    let [y, m, d] = parts.as_slice() else {
        return None;
    };
    if y.len() != 4 || m.len() > 2 || d.len() > 2 {
        return None;
    }
    iso_date(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// A birth date cell as ISO `YYYY-MM-DD`: an Excel date cell, an Excel serial number,
/// an 8-digit `YYYYMMDD` number, or text (see [`parse_date_text`]). `Ok(None)` when
/// empty, `Err(())` when not a date.
fn parse_date(cell: &Cell) -> Result<Option<String>, ()> {
    let parsed = match cell {
        Cell::Empty => return Ok(None),
        Cell::Text(s) if s.trim().is_empty() => return Ok(None),
        Cell::Text(s) => parse_date_text(s),
        Cell::DateTime(dt) => excel_datetime_date(dt),
        Cell::Number(f) if f.fract() == 0.0 && (10_000_000.0..100_000_000.0).contains(f) => {
            let n = *f as i64;
            iso_date(n / 10_000, n / 100 % 100, n % 100)
        }
        Cell::Number(f) => excel_serial_date(*f),
    };
    parsed.map(Some).ok_or(())
}

/// Splits a list cell (重点人群, 宣讲员) on 、，, ; ； / and whitespace, dropping empty
/// and repeated entries.
pub(crate) fn split_list(raw: &str) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for part in raw.split(|c: char| {
        c.is_whitespace() || matches!(c, '、' | '，' | ',' | ';' | '；' | '/' | '／')
    }) {
        if !part.is_empty() && !groups.iter().any(|g| g == part) {
            groups.push(part.to_owned());
        }
    }
    groups
}

/// The village named by a piece of text: everything up to and including the first
/// `村` (or `社区`), e.g. `东坡村第1网格` → `东坡村`; `None` when there is none.
/// Town or county names before it (`某某镇西河村`) are dropped.
fn village_from_text(text: &str) -> Option<String> {
    let text = remove_whitespace(text);
    let end = match (text.find('村'), text.find("社区")) {
        (Some(a), Some(b)) if b < a => b + "社区".len(),
        (Some(a), _) => a + '村'.len_utf8(),
        (None, Some(b)) => b + "社区".len(),
        (None, None) => return None,
    };
    let mut village = &text[..end];
    for admin in ["镇", "乡", "街道", "县", "区", "市"] {
        if let Some(pos) = village.rfind(admin) {
            let rest = &village[pos + admin.len()..];
            if rest.chars().count() >= 2 {
                village = rest;
            }
        }
    }
    (village.chars().count() >= 2).then(|| village.to_owned())
}

/// The village named by a title cell such as `西河村户籍人员花名册` or
/// `填报单位：东坡村委会`.
fn village_from_title(text: &str) -> Option<String> {
    let after_label = text.rsplit([':', '：']).next().unwrap_or(text);
    village_from_text(after_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures_dir() -> PathBuf {
        let dir = std::env::var_os("DOORSTEP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/fixtures"
                ))
            });
        assert!(
            dir.join("roster").is_dir(),
            "roster fixtures missing: {} does not exist (set DOORSTEP_FIXTURES to the \
             fixtures directory)",
            dir.join("roster").display()
        );
        dir
    }

    fn fixture(name: &str) -> PathBuf {
        let path = fixtures_dir().join("roster").join(name);
        assert!(path.is_file(), "fixture missing: {}", path.display());
        path
    }

    fn expected(file: &str) -> serde_json::Value {
        let path = fixture("EXPECTED.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let all: serde_json::Value = serde_json::from_str(&text).expect("EXPECTED.json is JSON");
        all.get(file)
            .unwrap_or_else(|| panic!("EXPECTED.json has no entry {file}"))
            .clone()
    }

    fn check_against_expected(file: &str) -> Roster {
        let roster = read_roster(&fixture(file)).expect("fixture reads");
        let want = expected(file);
        assert_eq!(
            roster.households.len() as u64,
            want["households"].as_u64().unwrap(),
            "{file}: households"
        );
        assert_eq!(
            roster.residents_imported as u64,
            want["residents_imported"].as_u64().unwrap(),
            "{file}: residents_imported"
        );
        let want_errors: Vec<RowError> =
            serde_json::from_value(want["row_errors"].clone()).unwrap();
        assert_eq!(roster.row_errors, want_errors, "{file}: row errors");
        let counted: usize = roster.households.iter().map(|h| h.residents.len()).sum();
        assert_eq!(counted, roster.residents_imported);
        roster
    }

    fn find<'a>(roster: &'a Roster, name: &str) -> (&'a Household, &'a Resident) {
        roster
            .households
            .iter()
            .flat_map(|h| h.residents.values().map(move |r| (h, r)))
            .find(|(_, r)| r.name == name)
            .unwrap_or_else(|| panic!("no resident {name}"))
    }

    fn assert_valid_id(id: &str) {
        assert_eq!(id.len(), 18, "{id}");
        assert_eq!(
            id_check_char(&id[..17]).map(String::from).as_deref(),
            Some(&id[17..])
        );
    }

    #[test]
    fn village_a_xlsx_matches_expected() {
        let roster = check_against_expected("village_a.xlsx");
        assert!(roster.households.iter().all(|h| h.village == "东坡村"));

        let first = &roster.households[0];
        assert_eq!(first.door_number, "东坡村1号");
        assert_eq!(first.head_name, "龙凤荣");
        assert_eq!(first.grid, "东坡村第1网格");
        assert_eq!(first.phone, "17079257105");
        assert_eq!(
            first.id,
            Uuid::new_v5(&ROSTER_NAMESPACE, "东坡村|东坡村1号|龙凤荣".as_bytes()).to_string()
        );
        // Excel date cell (serial 21461).
        let (_, head) = find(&roster, "龙凤荣");
        assert_eq!(head.birth_date.as_deref(), Some("1958-10-03"));
        // Text date 1991.10.12.
        let (_, r) = find(&roster, "钟志");
        assert_eq!(r.birth_date.as_deref(), Some("1991-10-12"));
        // Dashes in the phone, row 262.
        let (_, r) = find(&roster, "姜明兰");
        assert_eq!(r.phone.as_deref(), Some("13503414991"));
        assert_eq!(r.birth_date.as_deref(), Some("1978-11-28"));
        // Spaces in the phone, row 1141.
        let (_, r) = find(&roster, "范桂艳");
        assert_eq!(r.phone.as_deref(), Some("13727939564"));
        // Full-width phone, row 1223.
        let (_, r) = find(&roster, "叶秀");
        assert_eq!(r.phone.as_deref(), Some("17971633480"));
        // Lower-case x, row 470.
        let (_, r) = find(&roster, "于俊");
        assert_eq!(r.id_number.as_deref(), Some("11010119860503577X"));
        // 15-digit ID, row 903.
        let (_, r) = find(&roster, "陈玉建");
        assert_eq!(r.id_number.as_deref(), Some("110101197311105205"));
        // Stray spaces around a name, row 704.
        let (h, r) = find(&roster, "袁强梅");
        assert_eq!(h.door_number, "东坡村205号");
        assert_eq!(r.relation, "配偶");
        // Two target groups, row 1174.
        let (_, r) = find(&roster, "赖秀燕");
        assert_eq!(r.target_groups, ["老年人", "企业职工"]);

        for h in &roster.households {
            for r in h.residents.values() {
                assert_valid_id(r.id_number.as_deref().unwrap());
                if let Some(p) = &r.phone {
                    assert!(p.len() == 11 && p.bytes().all(|b| b.is_ascii_digit()));
                }
                let date = r.birth_date.as_deref().unwrap();
                assert_eq!(
                    date.replace('-', ""),
                    r.id_number.as_deref().unwrap()[6..14],
                    "{}",
                    r.name
                );
            }
        }
    }

    #[test]
    fn village_b_gbk_csv_matches_expected() {
        let roster = check_against_expected("village_b_gbk.csv");
        assert!(roster.households.iter().all(|h| h.village == "西河村"));
        let (h, r) = find(&roster, "林鹏军");
        assert_eq!(h.grid, "西河村第1网格");
        assert_eq!(h.phone, "13727362520");
        assert_eq!(r.birth_date.as_deref(), Some("1952-10-23"));
        assert_eq!(r.target_groups, ["老年人"]);
        assert_eq!(r.sex, "男");
        assert_eq!(
            find(&roster, "邹燕琳").1.birth_date.as_deref(),
            Some("1951-07-31")
        );
        assert_eq!(
            find(&roster, "林艳婷").1.birth_date.as_deref(),
            Some("1979-09-10")
        );
        assert_eq!(
            find(&roster, "马玉").1.phone.as_deref(),
            Some("19471591587")
        );
        assert_eq!(
            find(&roster, "陆晨").1.phone.as_deref(),
            Some("15256416929")
        );
        assert_eq!(
            find(&roster, "贺凤娟").1.phone.as_deref(),
            Some("19835674881")
        );
        assert_eq!(
            find(&roster, "叶国杰").1.id_number.as_deref(),
            Some("11010219971215824X")
        );
        assert_eq!(
            find(&roster, "蒋秀静").1.id_number.as_deref(),
            Some("110102198507166334")
        );
        assert_eq!(find(&roster, "梁斌").0.door_number, "西河村143号");
        // The first of the duplicated rows is imported.
        assert_eq!(find(&roster, "金伟伟").0.door_number, "西河村111号");
        for h in &roster.households {
            for r in h.residents.values() {
                let id = r.id_number.as_deref().unwrap();
                assert_valid_id(id);
                assert_eq!(r.birth_date.as_deref().unwrap().replace('-', ""), id[6..14]);
            }
        }
    }

    #[test]
    fn reimport_gives_the_same_ids() {
        let path = fixture("village_b_gbk.csv");
        let a = read_roster(&path).unwrap();
        let b = read_roster(&path).unwrap();
        assert_eq!(a, b);
        let (h, r) = find(&a, "林鹏军");
        let resident_id = h
            .residents
            .iter()
            .find(|(_, v)| v.name == r.name)
            .map(|(k, _)| k.clone())
            .unwrap();
        let want = Uuid::new_v5(
            &ROSTER_NAMESPACE,
            format!("{}|110102195210235550", h.id).as_bytes(),
        );
        assert_eq!(resident_id, want.to_string());
    }

    #[test]
    fn phones_are_normalised() {
        assert_eq!(
            normalise_phone("１９８３５６７４８８１"),
            Ok(Some("19835674881".into()))
        );
        assert_eq!(
            normalise_phone("194 7159 1587"),
            Ok(Some("19471591587".into()))
        );
        assert_eq!(
            normalise_phone("152-5641-6929"),
            Ok(Some("15256416929".into()))
        );
        assert_eq!(
            normalise_phone("+86 138 0000 0000"),
            Ok(Some("13800000000".into()))
        );
        assert_eq!(normalise_phone(" \u{3000}"), Ok(None));
        assert_eq!(
            normalise_phone("1353422774"),
            Err("phone number has 10 digits, not 11".into())
        );
        assert_eq!(
            normalise_phone("138abc"),
            Err("phone number contains characters other than digits".into())
        );
    }

    #[test]
    fn names_lose_all_whitespace() {
        assert_eq!(remove_whitespace(" 梁\u{3000}斌  \t"), "梁斌");
    }

    #[test]
    fn fifteen_digit_id_is_upgraded() {
        // The GB 11643-1999 example: 110105491231002 → 11010519491231002X.
        assert_eq!(
            upgrade_id15("110105491231002").as_deref(),
            Some("11010519491231002X")
        );
        assert_eq!(
            normalise_id(&Cell::Text("110105491231002".into())),
            Ok(Some("11010519491231002X".into()))
        );
        // Stored as a number in a workbook.
        assert_eq!(
            normalise_id(&Cell::Number(110105491231002.0)),
            Ok(Some("11010519491231002X".into()))
        );
    }

    #[test]
    fn lowercase_x_is_upper_cased_and_ids_are_checked() {
        assert_eq!(
            normalise_id(&Cell::Text("11010519491231002x".into())),
            Ok(Some("11010519491231002X".into()))
        );
        assert_eq!(
            normalise_id(&Cell::Text(" 11010519491231002Ｘ ".into())),
            Ok(Some("11010519491231002X".into()))
        );
        assert_eq!(
            normalise_id(&Cell::Text("110101198512121480".into())),
            Err("ID number checksum does not match".into())
        );
        assert_eq!(
            normalise_id(&Cell::Text("1101011985121214".into())),
            Err("ID number has 16 characters, not 18".into())
        );
        assert!(normalise_id(&Cell::Text("11010X198512121480".into())).is_err());
        assert!(normalise_id(&Cell::Number(110101198512121484.0)).is_err());
        assert!(normalise_id(&Cell::Text("身份证".into())).is_err());
        assert_eq!(normalise_id(&Cell::Empty), Ok(None));
    }

    #[test]
    fn each_date_spelling_is_read() {
        let text = |s: &str| parse_date(&Cell::Text(s.into()));
        assert_eq!(text("1992.10.2"), Ok(Some("1992-10-02".into())));
        assert_eq!(text("19521023"), Ok(Some("1952-10-23".into())));
        assert_eq!(text("1951/7/31"), Ok(Some("1951-07-31".into())));
        assert_eq!(text("1979-09-10"), Ok(Some("1979-09-10".into())));
        assert_eq!(text("1992年10月2日"), Ok(Some("1992-10-02".into())));
        assert_eq!(text("1979-09-10 00:00:00"), Ok(Some("1979-09-10".into())));
        assert_eq!(text(""), Ok(None));
        assert_eq!(text("1992.13.2"), Err(()));
        assert_eq!(text("1900.2.29"), Err(()));
        assert_eq!(text("去年"), Err(()));
        assert_eq!(text("10/2/1992"), Err(()));
        assert_eq!(
            parse_date(&Cell::Number(19521023.0)),
            Ok(Some("1952-10-23".into()))
        );
    }

    #[test]
    fn excel_serial_dates_are_read() {
        assert_eq!(
            parse_date(&Cell::Number(28822.0)),
            Ok(Some("1978-11-28".into()))
        );
        assert_eq!(
            parse_date(&Cell::Text("28822".into())),
            Ok(Some("1978-11-28".into()))
        );
        let cell = Cell::DateTime(ExcelDateTime::new(
            21461.0,
            ExcelDateTimeType::DateTime,
            false,
        ));
        assert_eq!(parse_date(&cell), Ok(Some("1958-10-03".into())));
        let with_time = Cell::DateTime(ExcelDateTime::new(
            45943.541,
            ExcelDateTimeType::DateTime,
            false,
        ));
        assert_eq!(parse_date(&with_time), Ok(Some("2025-10-13".into())));
        assert_eq!(
            parse_date(&Cell::Number(61.0)),
            Ok(Some("1900-03-01".into()))
        );
        assert_eq!(parse_date(&Cell::Number(-5.0)), Err(()));
        assert_eq!(parse_date(&Cell::Number(1e300)), Err(()));
        assert_eq!(parse_date(&Cell::Number(f64::NAN)), Err(()));
    }

    #[test]
    fn target_groups_are_split() {
        assert_eq!(
            split_list("老年人、企业职工，在校学生,会计; 陪读妈妈/老年人  待业妇女"),
            [
                "老年人",
                "企业职工",
                "在校学生",
                "会计",
                "陪读妈妈",
                "待业妇女"
            ]
        );
        assert!(split_list(" ").is_empty());
    }

    #[test]
    fn village_comes_from_title_or_cells() {
        assert_eq!(
            village_from_title("东坡村户籍人员花名册（2021年5月）").as_deref(),
            Some("东坡村")
        );
        assert_eq!(
            village_from_title("填报单位：东坡村委会").as_deref(),
            Some("东坡村")
        );
        assert_eq!(
            village_from_title("某某镇西河村花名册").as_deref(),
            Some("西河村")
        );
        assert_eq!(
            village_from_text("西河村第1网格").as_deref(),
            Some("西河村")
        );
        assert_eq!(village_from_title("户籍人员花名册"), None);
    }

    const HEADER: &str = "序号,村民小组,网格,门牌号,户主姓名,姓名,与户主关系,性别,公民身份号码,出生日期,联系电话,重点人群,备注";

    #[test]
    fn csv_line_numbers_survive_quoted_multiline_fields() {
        let csv = format!(
            "西河村户籍人员花名册,,,,,,,,,,,,\r\n{HEADER}\r\n\
             1,第1组,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,110102195210235550,19521023,13727362520,老年人,\"第一行\r\n第二行\r\n第三行\"\r\n\
             \r\n\
             2,第1组,西河村第1网格,西河村1号,林鹏军,邹燕琳,配偶,女,110102195107316846,1951/7/31,1396434985,,\r\n\
             合计,,,,,2人,,,,,,,\r\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        assert_eq!(roster.residents_imported, 1);
        assert_eq!(
            roster.row_errors,
            [RowError {
                line: 7,
                name: "邹燕琳".into(),
                reason: "phone number has 10 digits, not 11".into()
            }]
        );
        assert_eq!(roster.households[0].village, "西河村");
        // The same with LF and with lone CR line endings.
        for ending in ["\n", "\r"] {
            let other = csv.replace("\r\n", ending);
            let roster = read_roster_bytes(other.as_bytes(), RosterKind::Csv).unwrap();
            assert_eq!(roster.row_errors[0].line, 7, "{ending:?}");
        }
    }

    #[test]
    fn utf8_bom_csv_is_read() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(
            format!(
                "{HEADER}\n1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,110102195210235550,1952-10-23,,,\n"
            )
            .as_bytes(),
        );
        let roster = read_roster_bytes(&bytes, RosterKind::Csv).unwrap();
        assert_eq!(roster.residents_imported, 1);
        assert!(roster.row_errors.is_empty());
        // No title row: the village comes from the grid.
        assert_eq!(roster.households[0].village, "西河村");
    }

    #[test]
    fn gbk_csv_is_read_and_bad_bytes_name_their_line() {
        let text = format!(
            "西河村花名册\r\n{HEADER}\r\n1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,110102195210235550,1952-10-23,,,\r\n"
        );
        let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
        assert!(!unmappable);
        let roster = read_roster_bytes(&gbk, RosterKind::Csv).unwrap();
        assert_eq!(roster.residents_imported, 1);
        assert_eq!(roster.households[0].head_name, "林鹏军");

        let mut broken = gbk.into_owned();
        broken.extend_from_slice(b"2,\xFF\xFF,x\r\n");
        assert!(matches!(
            read_roster_bytes(&broken, RosterKind::Csv),
            Err(RosterError::Encoding { line: 4 })
        ));
    }

    #[test]
    fn merged_household_cells_are_filled_down_and_phone_falls_back() {
        let csv = format!(
            "{HEADER}\n\
             1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,110102195210235550,,,,\n\
             2,,,,,邹燕琳,配偶,女,110102195107316846,,13964349857,,\n\
             3,,,,,林小宝,子,男,,,,,\n\
             4,,,西河村2号,,高珍敏,户主,男,110102196705040071,,19676148166,,\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        assert!(roster.row_errors.is_empty(), "{:?}", roster.row_errors);
        assert_eq!(roster.households.len(), 2);
        let first = &roster.households[0];
        assert_eq!(first.residents.len(), 3);
        assert_eq!(first.phone, "13964349857");
        let baby = first
            .residents
            .values()
            .find(|r| r.name == "林小宝")
            .unwrap();
        assert_eq!(baby.id_number, None);
        let second = &roster.households[1];
        assert_eq!(second.head_name, "高珍敏");
        assert_eq!(second.grid, "西河村第1网格");
        assert_eq!(second.phone, "19676148166");
    }

    #[test]
    fn bad_rows_are_reported_with_clear_reasons() {
        let csv = format!(
            "{HEADER}\n\
             1,,西河村第1网格,西河村1号,林鹏军,,户主,男,110102195210235550,,,,\n\
             2,,西河村第1网格,西河村1号,林鹏军,邹燕琳,配偶,女,1101021951073168,,,,\n\
             3,,西河村第1网格,西河村1号,林鹏军,林秀杰,女,女,110102197407281904,1974.7.32,,,\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        let reasons: Vec<_> = roster
            .row_errors
            .iter()
            .map(|e| (e.line, e.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "name is empty"),
                (3, "ID number has 16 characters, not 18"),
                (4, "birth date is not a date (expected e.g. 1992-10-02)"),
            ]
        );
        assert_eq!(roster.residents_imported, 0);
    }

    #[test]
    fn missing_required_column_and_missing_header_are_errors() {
        let csv = "标题\n序号,网格,门牌号,户主姓名,姓名,联系电话\n1,a,b,c,d,\n";
        match read_roster_bytes(csv.as_bytes(), RosterKind::Csv) {
            Err(RosterError::MissingColumn { column, line }) => {
                assert_eq!((column, line), ("公民身份号码", 2));
            }
            other => panic!("expected MissingColumn, got {other:?}"),
        }
        assert!(matches!(
            read_roster_bytes(b"a,b,c\n1,2,3\n", RosterKind::Csv),
            Err(RosterError::NoHeader { rows_searched: 2, ref sheets }) if sheets.is_empty()
        ));
        assert!(matches!(
            read_roster(Path::new("roster.pdf")),
            Err(RosterError::UnknownFormat { .. })
        ));
        assert!(matches!(
            read_roster(Path::new("/nonexistent/roster.csv")),
            Err(RosterError::Io { .. })
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
        let mut samples: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"PK\x03\x04".to_vec(),
            b"\"unterminated".to_vec(),
            vec![0xFF; 64],
        ];
        for len in [1usize, 7, 100, 4096] {
            let bytes = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            samples.push(bytes);
        }
        let mut zip_like = b"PK\x03\x04".to_vec();
        zip_like.extend_from_slice(&samples[7]);
        samples.push(zip_like);
        for bytes in &samples {
            assert!(read_roster_bytes(bytes, RosterKind::Xlsx).is_err());
            assert!(read_roster_bytes(bytes, RosterKind::Csv).is_err());
        }
        // Real xlsx bytes read as CSV, and the CSV read as a workbook.
        let xlsx = std::fs::read(fixture("village_a.xlsx")).unwrap();
        assert!(read_roster_bytes(&xlsx, RosterKind::Csv).is_err());
        let csv = std::fs::read(fixture("village_b_gbk.csv")).unwrap();
        assert!(read_roster_bytes(&csv, RosterKind::Xlsx).is_err());
        // A truncated workbook.
        assert!(read_roster_bytes(&xlsx[..xlsx.len() / 2], RosterKind::Xlsx).is_err());
    }

    // A minimal .xlsx writer (stored, uncompressed zip) for workbook edge cases.

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &byte in data {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    fn stored_zip(files: &[(&str, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, content) in files {
            let data = content.as_bytes();
            let crc = crc32(data);
            let offset = out.len() as u32;
            let header = |sig: u32, central: bool| {
                let mut h = Vec::new();
                h.extend_from_slice(&sig.to_le_bytes());
                if central {
                    h.extend_from_slice(&20u16.to_le_bytes());
                }
                h.extend_from_slice(&20u16.to_le_bytes()); // version needed
                h.extend_from_slice(&0u16.to_le_bytes()); // flags
                h.extend_from_slice(&0u16.to_le_bytes()); // stored
                h.extend_from_slice(&0u32.to_le_bytes()); // time, date
                h.extend_from_slice(&crc.to_le_bytes());
                h.extend_from_slice(&(data.len() as u32).to_le_bytes());
                h.extend_from_slice(&(data.len() as u32).to_le_bytes());
                h.extend_from_slice(&(name.len() as u16).to_le_bytes());
                h.extend_from_slice(&0u16.to_le_bytes()); // extra
                if central {
                    h.extend_from_slice(&[0; 6]); // comment length, disk, internal attrs
                    h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                    h.extend_from_slice(&offset.to_le_bytes());
                }
                h.extend_from_slice(name.as_bytes());
                h
            };
            out.extend(header(0x0403_4b50, false));
            out.extend_from_slice(data);
            central.extend(header(0x0201_4b50, true));
        }
        let central_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(files.len() as u16).to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&central_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    fn xlsx(sheet_data: &str) -> Vec<u8> {
        xlsx_sheets(&[("花名册", sheet_data)])
    }

    /// A workbook with the given sheets (name, sheet data), in order.
    fn xlsx_sheets(sheets: &[(&str, &str)]) -> Vec<u8> {
        let ns = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
        let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
        let numbered = || sheets.iter().enumerate().map(|(i, sheet)| (i + 1, sheet));
        let overrides: String = numbered()
            .map(|(n, _)| {
                format!(
                    "<Override PartName=\"/xl/worksheets/sheet{n}.xml\" \
                     ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/>"
                )
            })
            .collect();
        let sheet_list: String = numbered()
            .map(|(n, (name, _))| {
                format!("<sheet name=\"{name}\" sheetId=\"{n}\" r:id=\"rId{n}\"/>")
            })
            .collect();
        let sheet_rels: String = numbered()
            .map(|(n, _)| {
                format!(
                    "<Relationship Id=\"rId{n}\" Type=\"{rel}/worksheet\" Target=\"worksheets/sheet{n}.xml\"/>"
                )
            })
            .collect();
        let mut files = vec![
            (
                "[Content_Types].xml".to_string(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                     <Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
                     <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
                     <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
                     <Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
                     {overrides}</Types>"
                ),
            ),
            (
                "_rels/.rels".to_string(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                     <Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
                     <Relationship Id=\"rId1\" Type=\"{rel}/officeDocument\" Target=\"xl/workbook.xml\"/>\
                     </Relationships>"
                ),
            ),
            (
                "xl/workbook.xml".to_string(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                     <workbook xmlns=\"{ns}\" xmlns:r=\"{rel}\"><sheets>{sheet_list}</sheets></workbook>"
                ),
            ),
            (
                "xl/_rels/workbook.xml.rels".to_string(),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                     <Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
                     {sheet_rels}</Relationships>"
                ),
            ),
        ];
        for (n, (_, sheet_data)) in numbered() {
            files.push((
                format!("xl/worksheets/sheet{n}.xml"),
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                     <worksheet xmlns=\"{ns}\"><sheetData>{sheet_data}</sheetData></worksheet>"
                ),
            ));
        }
        let files: Vec<(&str, String)> = files
            .iter()
            .map(|(name, content)| (name.as_str(), content.clone()))
            .collect();
        stored_zip(&files)
    }

    fn xlsx_row(row: u32, first_col: char, values: &[&str]) -> String {
        let mut out = format!("<row r=\"{row}\">");
        for (i, v) in values.iter().enumerate() {
            let col = char::from(first_col as u8 + i as u8);
            if v.is_empty() {
                continue;
            }
            if let Some(n) = v.strip_prefix('#') {
                out.push_str(&format!("<c r=\"{col}{row}\"><v>{n}</v></c>"));
            } else {
                out.push_str(&format!(
                    "<c r=\"{col}{row}\" t=\"inlineStr\"><is><t>{v}</t></is></c>"
                ));
            }
        }
        out.push_str("</row>");
        out
    }

    #[test]
    fn xlsx_line_numbers_count_from_the_sheet_not_the_range() {
        // The table starts at C5: the range does not start at A1.
        let header = [
            "网格",
            "门牌号",
            "户主姓名",
            "姓名",
            "公民身份号码",
            "联系电话",
            "出生日期",
        ];
        let sheet = [
            xlsx_row(5, 'C', &["西河村花名册"]),
            xlsx_row(6, 'C', &header),
            xlsx_row(
                7,
                'C',
                &[
                    "西河村第1网格",
                    "西河村1号",
                    "林鹏军",
                    "林鹏军",
                    "110102195210235550",
                    "#13727362520",
                    "#19290",
                ],
            ),
            xlsx_row(
                9,
                'C',
                &[
                    "西河村第1网格",
                    "西河村1号",
                    "林鹏军",
                    "邹燕琳",
                    "110102195107316847",
                    "",
                    "",
                ],
            ),
            xlsx_row(10, 'C', &["合计"]),
        ]
        .concat();
        let roster = read_roster_bytes(&xlsx(&sheet), RosterKind::Xlsx).unwrap();
        assert_eq!(roster.residents_imported, 1);
        let (h, r) = find(&roster, "林鹏军");
        assert_eq!(h.phone, "13727362520");
        assert_eq!(r.birth_date.as_deref(), Some("1952-10-23"));
        assert_eq!(
            roster.row_errors,
            [RowError {
                line: 9,
                name: "邹燕琳".into(),
                reason: "ID number checksum does not match".into()
            }]
        );
    }

    const ROSTER_HEADER: [&str; 5] = ["网格", "门牌号", "户主姓名", "姓名", "公民身份号码"];

    fn roster_sheet(name: &str) -> String {
        [
            xlsx_row(1, 'A', &["西河村花名册"]),
            xlsx_row(2, 'A', &ROSTER_HEADER),
            xlsx_row(
                3,
                'A',
                &[
                    "西河村第1网格",
                    "西河村1号",
                    "林鹏军",
                    name,
                    "110102195210235550",
                ],
            ),
        ]
        .concat()
    }

    #[test]
    fn roster_behind_a_notes_sheet_is_found() {
        let notes = xlsx_row(1, 'A', &["说明：本表由村委会填报，请勿修改表头。"]);
        let other_roster = roster_sheet("邹燕琳");
        let workbook = xlsx_sheets(&[
            ("说明", &notes),
            ("花名册", &roster_sheet("林鹏军")),
            ("旧表", &other_roster),
        ]);
        let roster = read_roster_bytes(&workbook, RosterKind::Xlsx).unwrap();
        assert!(roster.row_errors.is_empty(), "{:?}", roster.row_errors);
        // The first sheet with a header row is read, and only that one.
        assert_eq!(roster.residents_imported, 1);
        let (h, _) = find(&roster, "林鹏军");
        assert_eq!(h.village, "西河村");
    }

    #[test]
    fn no_header_in_any_sheet_names_the_sheets_searched() {
        let notes = xlsx_row(1, 'A', &["说明"]);
        let numbers = [
            xlsx_row(1, 'A', &["a", "b"]),
            xlsx_row(2, 'A', &["#1", "#2"]),
        ]
        .concat();
        let workbook = xlsx_sheets(&[("说明", &notes), ("Sheet2", &numbers)]);
        let err = read_roster_bytes(&workbook, RosterKind::Xlsx).unwrap_err();
        match &err {
            RosterError::NoHeader {
                rows_searched,
                sheets,
            } => {
                assert_eq!(*rows_searched, 2);
                assert_eq!(sheets, &["说明", "Sheet2"]);
            }
            other => panic!("expected NoHeader, got {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "no header row found in the first 2 rows of the sheets \"说明\", \"Sheet2\": \
             expected a row naming the columns 网格, 门牌号, 户主姓名, 姓名, 公民身份号码"
        );
        let one = xlsx_sheets(&[("说明", &notes)]);
        let err = read_roster_bytes(&one, RosterKind::Xlsx).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no header row found in the first 1 rows of the sheet \"说明\": "),
            "{err}"
        );
        // A CSV file has no sheets to name.
        let err = read_roster_bytes(b"a,b\n", RosterKind::Csv).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("no header row found in the first 1 rows: expected"),
            "{err}"
        );
    }

    #[test]
    fn empty_file_is_reported_as_empty() {
        let utf16_blank: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(" \r\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let samples: [&[u8]; 6] = [
            b"",
            b"   \r\n\t\n",
            b"\xEF\xBB\xBF",
            b"\xEF\xBB\xBF \r\n\xEF\xBB\xBF",
            "\u{3000}\n".as_bytes(),
            &utf16_blank,
        ];
        for bytes in samples {
            for kind in [RosterKind::Csv, RosterKind::Xlsx] {
                let err = read_roster_bytes(bytes, kind).unwrap_err();
                assert!(
                    matches!(err, RosterError::Empty),
                    "{bytes:?} as {kind:?}: {err:?}"
                );
                assert_eq!(err.to_string(), "the file is empty");
            }
        }
        // Blank lines of separators are not an empty file, only a headerless one.
        assert!(matches!(
            read_roster_bytes(b",,,\n,,,\n", RosterKind::Csv),
            Err(RosterError::NoHeader { .. })
        ));
    }

    #[test]
    fn bytes_that_are_no_workbook_say_so() {
        const PREFIX: &str =
            "not a valid .xlsx workbook (it may be damaged, or another format renamed to .xlsx): ";
        let xlsx = std::fs::read(fixture("village_a.xlsx")).unwrap();
        let csv = std::fs::read(fixture("village_b_gbk.csv")).unwrap();
        let samples: [&[u8]; 4] = [
            &csv,
            &xlsx[..xlsx.len() / 2],
            b"\x13\x8a\xff random bytes \x00\x01",
            b"PK\x03\x04 and then nothing",
        ];
        for bytes in samples {
            let err = read_roster_bytes(bytes, RosterKind::Xlsx).unwrap_err();
            assert!(matches!(err, RosterError::NotAWorkbook(_)), "{err:?}");
            let message = err.to_string();
            let detail = message
                .strip_prefix(PREFIX)
                .unwrap_or_else(|| panic!("{message}"));
            assert!(!detail.trim().is_empty(), "{message}");
        }
    }

    #[test]
    fn rows_cut_short_are_reported_not_imported() {
        // Lines: 1 header (with trailing empty cells), 2 cut before the ID column, 3
        // only four cells, 4 ending right after the ID column (imported), 5 a note.
        let csv = format!(
            "{HEADER},,\n\
             1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男\n\
             2,,西河村第1网格,西河村1号\n\
             3,,西河村第1网格,西河村1号,林鹏军,邹燕琳,配偶,女,110102195107316846\n\
             制表人：张三\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        assert_eq!(
            roster.row_errors,
            [
                RowError {
                    line: 2,
                    name: "林鹏军".into(),
                    reason: "the row is cut short: it has 8 cells, the header has 13".into(),
                },
                RowError {
                    line: 3,
                    name: String::new(),
                    reason: "the row is cut short: it has 4 cells, the header has 13".into(),
                },
            ]
        );
        assert_eq!(roster.residents_imported, 1);
        let (h, r) = find(&roster, "邹燕琳");
        assert_eq!(r.id_number.as_deref(), Some("110102195107316846"));
        assert_eq!(h.head_name, "林鹏军");
    }

    #[test]
    fn birth_dates_in_the_future_or_before_1890_are_refused() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        assert_eq!(check_birth_date("2026-11-29", today), Ok(()));
        assert_eq!(
            check_birth_date("2026-11-30", today),
            Err("birth date is in the future".into())
        );
        assert_eq!(check_birth_date("1890-01-01", today), Ok(()));
        assert_eq!(
            check_birth_date("1889-12-31", today),
            Err("birth date is before 1890".into())
        );

        // Through a whole import, against the real local date.
        let tomorrow = chrono::Local::now().date_naive() + chrono::Days::new(1);
        let csv = format!(
            "{HEADER}\n\
             1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,,{tomorrow},,,\n\
             2,,西河村第1网格,西河村1号,林鹏军,邹燕琳,配偶,女,,1889.12.31,,,\n\
             3,,西河村第1网格,西河村1号,林鹏军,林秀杰,女,女,,17991231,,,\n\
             4,,西河村第1网格,西河村1号,林鹏军,林老太,母亲,女,,1890-01-01,,,\n\
             5,,西河村第1网格,西河村1号,林鹏军,林小宝,子,男,,2999.1.1,,,\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        let reasons: Vec<_> = roster
            .row_errors
            .iter()
            .map(|e| (e.line, e.name.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                (2, "林鹏军", "birth date is in the future"),
                (3, "邹燕琳", "birth date is before 1890"),
                (4, "林秀杰", "birth date is before 1890"),
                (6, "林小宝", "birth date is in the future"),
            ]
        );
        assert_eq!(roster.residents_imported, 1);
        assert_eq!(
            find(&roster, "林老太").1.birth_date.as_deref(),
            Some("1890-01-01")
        );
    }

    #[test]
    fn empty_id_cell_is_imported_without_an_id_number() {
        // The ID cell is there but empty, and the row ends with it.
        let csv = format!(
            "{HEADER}\n\
             1,,西河村第1网格,西河村1号,林鹏军,林鹏军,户主,男,\n\
             2,,西河村第1网格,西河村1号,林鹏军,林小宝,子,男,  ,2020-01-01,,,\n"
        );
        let roster = read_roster_bytes(csv.as_bytes(), RosterKind::Csv).unwrap();
        assert!(roster.row_errors.is_empty(), "{:?}", roster.row_errors);
        assert_eq!(roster.residents_imported, 2);
        assert_eq!(find(&roster, "林鹏军").1.id_number, None);
        assert_eq!(find(&roster, "林小宝").1.id_number, None);
    }

    #[test]
    fn io_error_names_the_path_once() {
        let path = Path::new("/nonexistent/doorstep/roster.csv");
        let err = read_roster(path).unwrap_err();
        assert!(matches!(err, RosterError::Io { .. }), "{err:?}");
        let message = err.to_string();
        assert_eq!(
            message.matches("/nonexistent/doorstep/roster.csv").count(),
            1,
            "{message}"
        );
        assert!(message.starts_with("could not read /nonexistent/doorstep/roster.csv: "));
    }
}
