//! Responsible persons (责任人员名单) import: reads the workbook in which the town
//! office lists, for every village and town unit (镇直单位), its first responsible
//! person (第一责任人), responsible person (具体责任人), liaison (联络员), lecturers
//! (宣讲员) and population, and turns it into [`Place`]s.
//!
//! The layout is the office's: a title row merged across the table
//! ("防范电信网络诈骗犯罪工作责任人员名单"), then a header row naming the columns
//! (序号, 村（单位）, 人数, 第一责任人, 职务, 具体责任人, 职务, 联络员, 联系电话, 宣讲员,
//! 宣讲员联系电话), then one row per village or unit. Columns are found by name, not
//! position; the workbook's first sheet with such a header is read (the roster's
//! reader, [`crate::roster`]). Lecturers share one cell, separated by 、，, ; ； / or
//! whitespace. Phone numbers and job titles (职务) are not kept: the campaign needs the
//! names to chase a village or unit, and the office has the phone list itself.
//!
//! A row whose name ends in 村 or 社区 is a village, any other a unit; the villages'
//! names are those of the household rosters (`东坡村`), so the bulletin joins them.
//!
//! Blank rows, totals rows (合计, 总计, 小计, 共计), repeated header rows and notes below
//! the table (nothing in the name, population and person columns) are skipped
//! silently. A row that is wrong (see [`read_places_bytes`]) is reported in
//! [`PlacesImport::row_errors`] with its line as Excel shows it, and every other row is
//! kept. Row errors name the village or unit, never a person.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::roster::{
    Cell, HEADER_SEARCH_ROWS, RawRow, RosterError, RowError, remove_whitespace, split_list,
    to_halfwidth, xlsx_sheet_with,
};

/// Largest population accepted for one village or unit (a typo guard: the town's
/// villages have a few thousand people).
pub const MAX_POPULATION: u32 = 1_000_000;

/// Longest name accepted for a village, a unit or a person (characters).
pub const MAX_NAME_CHARS: usize = 40;

/// Most lecturers accepted for one village or unit.
pub const MAX_LECTURERS: usize = 200;

/// People per lecturer (DOMAIN.md, "The organisation": "at least one, and in
/// principle one per 1,000 people, one more for each further 1,000").
pub const PEOPLE_PER_LECTURER: u32 = 1_000;

/// The lecturers (宣讲员) a village or unit of `population` people needs:
/// `max(1, ceil(population / 1000))`. The town's action plan asks for at least one,
/// one per 1,000 people, and one more for each further (started) 1,000: 0 to 1,000
/// people need 1, 1,001 to 2,000 need 2, 2,300 need 3 (DOMAIN.md's example).
pub fn lecturers_required(population: u32) -> u32 {
    population.div_ceil(PEOPLE_PER_LECTURER).max(1)
}

/// Whether a place is a village (村, with households and grids) or a town unit (镇直单位:
/// police station, schools, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlaceKind {
    /// 村 (or 社区): households, grids, visits.
    Village,
    /// 镇直单位: no households; directives and the bulletin only.
    Unit,
}

impl PlaceKind {
    /// The stored name: `village` or `unit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Village => "village",
            Self::Unit => "unit",
        }
    }

    /// Parses [`PlaceKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "village" => Some(Self::Village),
            "unit" => Some(Self::Unit),
            _ => None,
        }
    }

    /// The Chinese name the pages show: `村` or `单位`.
    pub fn label_zh(self) -> &'static str {
        match self {
            Self::Village => "村",
            Self::Unit => "单位",
        }
    }

    /// The kind a name implies: a name ending in 村 or 社区 (or 村委会, 居委会) is a
    /// village, any other a unit.
    pub fn of_name(name: &str) -> Self {
        if ["村", "社区", "村委会", "居委会"]
            .iter()
            .any(|end| name.ends_with(end))
        {
            Self::Village
        } else {
            Self::Unit
        }
    }
}

/// A village or town unit with its responsible persons, as imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The village's or unit's name, whitespace removed (`东坡村`, `镇派出所`).
    pub name: String,
    /// Village or unit ([`PlaceKind::of_name`]).
    pub kind: PlaceKind,
    /// People in the village, or staff (and pupils) of the unit, as the list gives it.
    pub population: u32,
    /// 第一责任人: the head.
    pub first_responsible: String,
    /// 具体责任人: the leader in charge.
    pub responsible: String,
    /// 联络员: exactly one.
    pub liaison: String,
    /// 宣讲员, in the order listed; may be empty (then the place is short).
    pub lecturers: Vec<String>,
}

impl Place {
    /// Lecturers this place needs ([`lecturers_required`] of its population).
    pub fn lecturers_required(&self) -> u32 {
        lecturers_required(self.population)
    }

    /// Lecturers named.
    pub fn lecturers_named(&self) -> u32 {
        u32::try_from(self.lecturers.len()).unwrap_or(u32::MAX)
    }

    /// True when fewer lecturers are named than the population needs (标记: 宣讲员不足).
    pub fn is_short_of_lecturers(&self) -> bool {
        self.lecturers_named() < self.lecturers_required()
    }
}

/// The result of reading a responsible-persons workbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacesImport {
    /// The good rows, in file order.
    pub places: Vec<Place>,
    /// Rows reported and not imported, in file order; `name` is the village's or
    /// unit's name (empty when the row has none), `line` Excel's row number.
    pub row_errors: Vec<RowError>,
}

impl PlacesImport {
    /// The places short of lecturers, in file order.
    pub fn short_of_lecturers(&self) -> impl Iterator<Item = &Place> {
        self.places.iter().filter(|p| p.is_short_of_lecturers())
    }
}

/// Why a responsible-persons workbook could not be read at all. Errors name what was
/// wrong and where, never a person.
#[derive(Debug, thiserror::Error)]
pub enum PlacesError {
    /// The file could not be read from disk.
    #[error("could not read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable `.xlsx` workbook (empty, damaged, another format, no
    /// sheet).
    #[error("{0}")]
    Workbook(RosterError),
    /// No sheet has a header row naming the columns among its first rows.
    #[error(
        "no header row found in the first {rows_searched} rows of any sheet: expected a \
         row naming the columns 村（单位）, 人数, 第一责任人, 具体责任人, 联络员, 宣讲员"
    )]
    NoHeader {
        /// Rows searched (of the longest sheet).
        rows_searched: u64,
    },
    /// The header row lacks a required column.
    #[error("the header row at line {line} has no column {column}")]
    MissingColumn {
        /// The missing column's name, e.g. `人数`.
        column: &'static str,
        /// Line (Excel row number) of the header row.
        line: u64,
    },
}

/// Reads the responsible-persons workbook at `path` (`.xlsx`).
///
/// Errors: [`PlacesError::Io`] when the file cannot be read, and whatever
/// [`read_places_bytes`] returns.
pub fn read_places(path: &Path) -> Result<PlacesImport, PlacesError> {
    let bytes = std::fs::read(path).map_err(|source| PlacesError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_places_bytes(&bytes)
}

/// Reads a responsible-persons workbook from the bytes of a `.xlsx` file.
///
/// A row is reported (and not imported) when its village or unit name is empty or
/// listed before, its population (人数) is empty, not a whole number or over
/// [`MAX_POPULATION`], its first responsible person, responsible person or liaison is
/// empty, or it names more than one liaison. A row with no lecturer is imported (and
/// is short of lecturers).
///
/// Errors: [`PlacesError::Workbook`] for a file that is not a readable workbook,
/// [`PlacesError::NoHeader`], [`PlacesError::MissingColumn`]. Never panics, whatever
/// the bytes.
pub fn read_places_bytes(bytes: &[u8]) -> Result<PlacesImport, PlacesError> {
    let (rows, header) = xlsx_sheet_with(bytes, find_header).map_err(|e| match e {
        RosterError::NoHeader { rows_searched, .. } => PlacesError::NoHeader { rows_searched },
        other => PlacesError::Workbook(other),
    })?;
    let import = import(&rows, &header)?;
    tracing::info!(
        places = import.places.len(),
        row_errors = import.row_errors.len(),
        "responsible persons read"
    );
    Ok(import)
}

// ---------------------------------------------------------------------------------
// Columns.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Name,
    Population,
    FirstResponsible,
    Responsible,
    Liaison,
    Lecturers,
}

const COLUMN_COUNT: usize = 6;

struct ColumnSpec {
    col: Col,
    /// The name the list uses, reported in [`PlacesError::MissingColumn`].
    name: &'static str,
    /// Other spellings (after full-width brackets are made ASCII).
    aliases: &'static [&'static str],
}

const COLUMNS: [ColumnSpec; COLUMN_COUNT] = [
    ColumnSpec {
        col: Col::Name,
        name: "村（单位）",
        aliases: &[
            "村(单位)",
            "村/单位",
            "村、单位",
            "村(单位)名称",
            "单位",
            "单位名称",
            "村",
            "名称",
        ],
    },
    ColumnSpec {
        col: Col::Population,
        name: "人数",
        aliases: &["人口", "人口数", "总人数", "人数(人)", "人口(人)"],
    },
    ColumnSpec {
        col: Col::FirstResponsible,
        name: "第一责任人",
        aliases: &[],
    },
    ColumnSpec {
        col: Col::Responsible,
        name: "具体责任人",
        aliases: &["责任人"],
    },
    ColumnSpec {
        col: Col::Liaison,
        name: "联络员",
        aliases: &[],
    },
    ColumnSpec {
        col: Col::Lecturers,
        name: "宣讲员",
        aliases: &["宣讲员姓名"],
    },
];

/// Where each column sits, by [`Col`] order; the header's Excel line.
#[derive(Debug)]
struct Header {
    index: usize,
    line: u64,
    columns: [Option<usize>; COLUMN_COUNT],
}

fn recognise(row: &[Cell]) -> [Option<usize>; COLUMN_COUNT] {
    let mut found = [None; COLUMN_COUNT];
    for (index, cell) in row.iter().enumerate() {
        let Cell::Text(text) = cell else { continue };
        let label = to_halfwidth(&remove_whitespace(text));
        let label = label.trim_start_matches('*');
        if let Some(spec) = COLUMNS.iter().find(|s| {
            to_halfwidth(s.name) == label || s.aliases.iter().any(|a| to_halfwidth(a) == label)
        }) {
            found[spec.col as usize].get_or_insert(index);
        }
    }
    found
}

fn is_header(columns: &[Option<usize>; COLUMN_COUNT]) -> bool {
    columns[Col::Name as usize].is_some() && columns.iter().filter(|c| c.is_some()).count() >= 3
}

fn find_header(rows: &[RawRow]) -> Option<Header> {
    rows.iter()
        .take(HEADER_SEARCH_ROWS)
        .enumerate()
        .find_map(|(index, row)| {
            let columns = recognise(&row.cells);
            is_header(&columns).then_some(Header {
                index,
                line: row.line,
                columns,
            })
        })
}

impl Header {
    fn cell<'a>(&self, row: &'a [Cell], col: Col) -> Option<&'a Cell> {
        self.columns[col as usize].and_then(|i| row.get(i))
    }

    /// The cell's text with all whitespace removed.
    fn text(&self, row: &[Cell], col: Col) -> String {
        self.cell(row, col)
            .map(|c| remove_whitespace(&c.text()))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------
// The import proper.

fn import(rows: &[RawRow], header: &Header) -> Result<PlacesImport, PlacesError> {
    if let Some(missing) = COLUMNS
        .iter()
        .find(|spec| header.columns[spec.col as usize].is_none())
    {
        return Err(PlacesError::MissingColumn {
            column: missing.name,
            line: header.line,
        });
    }
    let mut seen = HashSet::new();
    let mut out = PlacesImport {
        places: Vec::new(),
        row_errors: Vec::new(),
    };
    for row in &rows[header.index + 1..] {
        let cells = row.cells.as_slice();
        let Some(first) = cells.iter().find(|c| !c.is_blank()) else {
            continue;
        };
        // A totals row says so in its first cell or in the name column.
        let first = remove_whitespace(&first.text());
        let name = header.text(cells, Col::Name);
        if ["合计", "总计", "小计", "共计"]
            .iter()
            .any(|w| first.starts_with(w) || name.starts_with(w))
            || is_header(&recognise(cells))
        {
            continue;
        }
        let content = [
            Col::Name,
            Col::Population,
            Col::FirstResponsible,
            Col::Responsible,
            Col::Liaison,
            Col::Lecturers,
        ];
        if content
            .iter()
            .all(|&c| header.cell(cells, c).is_none_or(Cell::is_blank))
        {
            continue; // a note under the table, a signature line
        }
        match place(header, cells, &name, &mut seen) {
            Ok(place) => out.places.push(place),
            Err(reason) => out.row_errors.push(RowError {
                line: row.line,
                name,
                reason,
            }),
        }
    }
    Ok(out)
}

/// Validates one row, in the order: name, duplicate, population, first responsible
/// person, responsible person, liaison.
fn place(
    header: &Header,
    cells: &[Cell],
    name: &str,
    seen: &mut HashSet<String>,
) -> Result<Place, String> {
    if name.is_empty() {
        return Err("the name of the village or unit is empty".into());
    }
    if !name_ok(name) {
        return Err(format!(
            "the name of the village or unit is over {MAX_NAME_CHARS} characters or holds control or invisible characters"
        ));
    }
    if !seen.insert(name.to_owned()) {
        return Err("the same village or unit appears twice".into());
    }
    let population = population(header.cell(cells, Col::Population))?;
    let person = |col: Col, what: &str| {
        let text = header.text(cells, col);
        if text.is_empty() {
            Err(format!("{what} is empty"))
        } else if !name_ok(&text) {
            Err(format!(
                "{what} is over {MAX_NAME_CHARS} characters or holds control or invisible characters"
            ))
        } else {
            Ok(text)
        }
    };
    let first_responsible = person(
        Col::FirstResponsible,
        "the first responsible person (第一责任人)",
    )?;
    let responsible = person(Col::Responsible, "the responsible person (具体责任人)")?;
    let liaison_cell = header
        .cell(cells, Col::Liaison)
        .map(Cell::text)
        .unwrap_or_default();
    let liaisons = split_list(&liaison_cell);
    let liaison = match liaisons.as_slice() {
        [] => return Err("the liaison (联络员) is empty".into()),
        [one] if name_ok(one) => one.clone(),
        [_] => {
            return Err(format!(
                "the liaison (联络员) is over {MAX_NAME_CHARS} characters or holds control or invisible characters"
            ));
        }
        many => {
            return Err(format!(
                "a village or unit names exactly one liaison (联络员); this row names {}",
                many.len()
            ));
        }
    };
    let lecturers = split_list(
        &header
            .cell(cells, Col::Lecturers)
            .map(Cell::text)
            .unwrap_or_default(),
    );
    if lecturers.len() > MAX_LECTURERS {
        return Err(format!("more than {MAX_LECTURERS} lecturers (宣讲员)"));
    }
    if !lecturers.iter().all(|l| name_ok(l)) {
        return Err(format!(
            "a lecturer's (宣讲员) name is over {MAX_NAME_CHARS} characters or holds control or invisible characters"
        ));
    }
    Ok(Place {
        name: name.to_owned(),
        kind: PlaceKind::of_name(name),
        population,
        first_responsible,
        responsible,
        liaison,
        lecturers,
    })
}

/// A name of at most [`MAX_NAME_CHARS`] characters without control or invisible
/// formatting characters (bidirectional overrides and the like).
fn name_ok(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_CHARS
        && !name
            .chars()
            .any(|c| c.is_control() || crate::db::accounts::is_invisible_format(c))
}

/// A population cell: a whole number (as a number, or as text with optional
/// thousands separators, full-width digits or a closing 人).
fn population(cell: Option<&Cell>) -> Result<u32, String> {
    const NOT_A_NUMBER: &str = "the population (人数) is not a whole number of people, e.g. 1287";
    let value = match cell {
        None | Some(Cell::Empty) => return Err("the population (人数) is empty".into()),
        Some(Cell::Number(f)) => {
            if !f.is_finite() || f.fract() != 0.0 {
                return Err(NOT_A_NUMBER.into());
            }
            *f
        }
        Some(Cell::Text(text)) => {
            let cleaned: String = remove_whitespace(&to_halfwidth(text))
                .trim_end_matches('人')
                .chars()
                .filter(|c| *c != ',')
                .collect();
            if cleaned.is_empty() {
                return Err("the population (人数) is empty".into());
            }
            if let Some(digits) = cleaned.strip_prefix('-')
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.is_empty()
            {
                return Err("the population (人数) is negative".into());
            }
            if !cleaned.bytes().all(|b| b.is_ascii_digit()) || cleaned.len() > 12 {
                return Err(NOT_A_NUMBER.into());
            }
            cleaned
                .parse::<f64>()
                .map_err(|_| NOT_A_NUMBER.to_string())?
        }
        Some(Cell::DateTime(_)) => return Err(NOT_A_NUMBER.into()),
    };
    if value < 0.0 {
        return Err("the population (人数) is negative".into());
    }
    if value > f64::from(MAX_POPULATION) {
        return Err(format!(
            "the population (人数) is over {MAX_POPULATION}: check the figure"
        ));
    }
    Ok(value as u32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture() -> PathBuf {
        let dir = std::env::var_os("DOORSTEP_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../shared/fixtures"
                ))
            });
        let file = dir.join("roster/responsible_persons.xlsx");
        assert!(
            file.is_file(),
            "fixture missing: {} (set DOORSTEP_FIXTURES to the fixtures directory)",
            file.display()
        );
        file
    }

    #[test]
    fn lecturer_rule_on_its_boundaries() {
        // DOMAIN.md: at least one; one per 1,000; one more per further 1,000 (2,300 → 3).
        for (population, required) in [
            (0, 1),
            (1, 1),
            (999, 1),
            (1000, 1),
            (1001, 2),
            (2000, 2),
            (2001, 3),
            (2300, 3),
            (MAX_POPULATION, 1000),
        ] {
            assert_eq!(
                lecturers_required(population),
                required,
                "population {population}"
            );
        }
    }

    #[test]
    fn fixture_matches_expected_json() {
        let file = fixture();
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(file.with_file_name("EXPECTED.json")).unwrap(),
        )
        .unwrap();
        let expected = &expected["responsible_persons.xlsx"];
        let import = read_places(&file).unwrap();
        assert!(import.row_errors.is_empty(), "{:?}", import.row_errors);
        assert_eq!(
            import.places.len() as u64,
            expected["units"].as_u64().unwrap()
        );
        let lecturers = expected["lecturers"].as_object().unwrap();
        assert_eq!(lecturers.len(), import.places.len());
        for place in &import.places {
            let want = &lecturers[&place.name];
            assert_eq!(
                u64::from(place.population),
                want["population"].as_u64().unwrap(),
                "{}",
                place.name
            );
            assert_eq!(
                u64::from(place.lecturers_required()),
                want["lecturers_required"].as_u64().unwrap(),
                "{}",
                place.name
            );
            assert_eq!(
                u64::from(place.lecturers_named()),
                want["lecturers_named"].as_u64().unwrap(),
                "{}",
                place.name
            );
            assert!(!place.first_responsible.is_empty() && !place.responsible.is_empty());
            assert!(!place.liaison.is_empty());
        }
        let short: Vec<&str> = import
            .short_of_lecturers()
            .map(|p| p.name.as_str())
            .collect();
        let want_short: Vec<&str> = expected["short_of_lecturers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(short, want_short);
        let villages: Vec<&str> = import
            .places
            .iter()
            .filter(|p| p.kind == PlaceKind::Village)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(villages, ["东坡村", "西河村"]);
        assert_eq!(import.places[0].lecturers.len(), 2);
    }

    /// A workbook laid out as the office's, with the given data rows under the title
    /// (row 1) and header (row 2).
    pub(crate) fn workbook(rows: &[[&str; 7]]) -> Vec<u8> {
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet
            .write_string(0, 0, "防范电信网络诈骗犯罪工作责任人员名单")
            .unwrap();
        for (c, h) in [
            "序号",
            "村（单位）",
            "人数",
            "第一责任人",
            "职务",
            "具体责任人",
            "联络员",
            "宣讲员",
        ]
        .iter()
        .enumerate()
        {
            sheet.write_string(1, c as u16, *h).unwrap();
        }
        for (r, row) in rows.iter().enumerate() {
            let r = r as u32 + 2;
            sheet.write_number(r, 0, f64::from(r - 1)).unwrap();
            let [
                name,
                population,
                first,
                title,
                responsible,
                liaison,
                lecturers,
            ] = row;
            sheet.write_string(r, 1, *name).unwrap();
            match population.parse::<f64>() {
                Ok(n) => sheet.write_number(r, 2, n).unwrap(),
                Err(_) => sheet.write_string(r, 2, *population).unwrap(),
            };
            for (c, v) in [
                (3, first),
                (4, title),
                (5, responsible),
                (6, liaison),
                (7, lecturers),
            ] {
                sheet.write_string(r, c, *v).unwrap();
            }
        }
        book.save_to_buffer().unwrap()
    }

    #[test]
    fn bad_rows_are_reported_with_their_line_and_the_rest_kept() {
        let bytes = workbook(&[
            [
                "甲村",
                "2300",
                "甲一",
                "书记",
                "甲二",
                "甲三",
                "讲一、讲二、讲三",
            ],
            ["乙村", "一千", "乙一", "书记", "乙二", "乙三", "讲四"],
            ["", "", "", "", "", "", ""],
            [
                "镇某所",
                "12",
                "丙一",
                "负责人",
                "丙二",
                "丙三、丙四",
                "讲五",
            ],
            ["镇某站", "-3", "丁一", "负责人", "丁二", "丁三", "讲六"],
            ["甲村", "10", "戊一", "书记", "戊二", "戊三", "讲七"],
            ["镇某办", "40", "", "负责人", "己二", "己三", "讲八"],
            ["镇某会", "1,001 人", "庚一", "负责人", "庚二", "庚三", ""],
            ["合计", "3353", "", "", "", "", ""],
        ]);
        let import = read_places_bytes(&bytes).unwrap();
        let names: Vec<&str> = import.places.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["甲村", "镇某会"]);
        let errors: Vec<(u64, &str, &str)> = import
            .row_errors
            .iter()
            .map(|e| (e.line, e.name.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(
            errors,
            [
                (
                    4,
                    "乙村",
                    "the population (人数) is not a whole number of people, e.g. 1287"
                ),
                (
                    6,
                    "镇某所",
                    "a village or unit names exactly one liaison (联络员); this row names 2"
                ),
                (7, "镇某站", "the population (人数) is negative"),
                (8, "甲村", "the same village or unit appears twice"),
                (
                    9,
                    "镇某办",
                    "the first responsible person (第一责任人) is empty"
                ),
            ]
        );
        let unit = &import.places[1];
        assert_eq!(unit.kind, PlaceKind::Unit);
        assert_eq!(unit.population, 1001);
        assert!(unit.lecturers.is_empty() && unit.is_short_of_lecturers());
        assert_eq!(unit.lecturers_required(), 2);
        let village = &import.places[0];
        assert_eq!(village.kind, PlaceKind::Village);
        assert_eq!(village.lecturers_required(), 3);
        assert!(!village.is_short_of_lecturers());
    }

    #[test]
    fn unreadable_files_are_refused_whole() {
        assert!(matches!(
            read_places_bytes(b""),
            Err(PlacesError::Workbook(RosterError::Empty))
        ));
        assert!(matches!(
            read_places_bytes(b"not a zip archive at all"),
            Err(PlacesError::Workbook(RosterError::NotAWorkbook(_)))
        ));
        let mut book = rust_xlsxwriter::Workbook::new();
        book.add_worksheet().write_string(0, 0, "说明").unwrap();
        let bytes = book.save_to_buffer().unwrap();
        let e = read_places_bytes(&bytes).unwrap_err();
        assert!(matches!(e, PlacesError::NoHeader { .. }), "{e}");
        assert!(e.to_string().contains("第一责任人"));
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        for (c, h) in ["村（单位）", "人数", "第一责任人", "具体责任人", "联络员"]
            .iter()
            .enumerate()
        {
            sheet.write_string(2, c as u16, *h).unwrap();
        }
        let bytes = book.save_to_buffer().unwrap();
        let e = read_places_bytes(&bytes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the header row at line 3 has no column 宣讲员"
        );
    }
}
