-- Server schema version 6: responsible persons of villages and units, and the fraud
-- cases the police enter for the monthly bulletin (issue 6).

-- One row per village and town unit, from the responsible-persons list (places.rs).
-- Re-importing the list replaces a place's row; places not in the new list stay.
CREATE TABLE places (
    name              TEXT PRIMARY KEY NOT NULL,   -- 东坡村, 镇派出所
    kind              TEXT NOT NULL CHECK (kind IN ('village', 'unit')),
    population        INTEGER NOT NULL CHECK (population >= 0),
    first_responsible TEXT NOT NULL,               -- 第一责任人
    responsible       TEXT NOT NULL,               -- 具体责任人
    liaison           TEXT NOT NULL,               -- 联络员
    lecturers         TEXT NOT NULL,               -- 宣讲员: JSON array of names
    imported_at_ms    INTEGER NOT NULL
) STRICT;

-- Fraud cases (发案数) and losses (损失数) of a village or unit in a month, as the
-- police enter them; entering again replaces the figures (the audit log keeps both).
CREATE TABLE fraud_cases (
    month         TEXT NOT NULL,                   -- YYYY-MM, China Standard Time
    place         TEXT NOT NULL,                   -- places.name
    cases         INTEGER NOT NULL CHECK (cases >= 0),
    losses_fen    INTEGER NOT NULL CHECK (losses_fen >= 0),  -- 1/100 yuan
    entered_by    TEXT NOT NULL,
    entered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (month, place)
) STRICT;
