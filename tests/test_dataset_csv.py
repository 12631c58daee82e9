"""CSV datasets read faithfully, or refused naming every broken line at once.

Every input is written byte for byte as the program named in the test writes it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch.dataset import DatasetProblems, load_dataset, read_dataset
from batch.dataset.csv import parse_csv
from batch.dataset.decode import Decoded
from batch.errors import DatasetError
from batch.jobfile import DatasetSpec, Job, load_job


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    (tmp_path / "body.html").write_text("<p>{{ name }}</p>")
    return tmp_path


def csv_job(job_dir: Path, content: bytes, extra: str = "", name: str = "d.csv") -> Job:
    (job_dir / name).write_bytes(content)
    text = (
        f"campaign: c\ndataset: {{path: {name}, key: id{extra}}}\n"
        "message: {subject: hi, html: body.html}\n"
    )
    (job_dir / "job.yaml").write_text(text)
    return load_job(job_dir / "job.yaml")


# Excel on Windows, Spanish locale, "CSV (delimitado por comas)": cp1252, `;`, CRLF, decimal
# comma, dd/mm/yyyy, and the `;;;;` rows Excel writes for formatted empty rows at the end.
SPANISH_EXCEL = (
    "id;nombre;email;importe;vence\r\n"
    "C-1;José Muñoz;jose@example.es;1.234,56;02/11/2026\r\n"
    "C-2;Ana O’Neill;ana@example.es;99,90;15/12/2026\r\n"
    "C-3;Luis Peña;luis@example.es;250;01/12/2026\r\n"
    ";;;;\r\n"
    ";;;;\r\n"
).encode("cp1252")
SPANISH = ", delimiter: ';', encoding: cp1252, decimal: ',', date_format: '%d/%m/%Y'"


def test_spanish_excel_csv_reads_as_written(job_dir: Path) -> None:
    frame = read_dataset(csv_job(job_dir, SPANISH_EXCEL, SPANISH))
    assert frame["nombre"].to_list() == ["José Muñoz", "Ana O’Neill", "Luis Peña"]
    assert frame["importe"].to_list() == ["1.234,56", "99,90", "250"]  # the notice says this
    assert frame["vence"].to_list() == ["02/11/2026", "15/12/2026", "01/12/2026"]
    assert frame["__row__"].to_list() == [2, 3, 4]  # the ;;;; rows are blank lines


def test_where_compares_numbers_and_dates_by_the_dataset_convention(job_dir: Path) -> None:
    where = ", where: \"CAST(importe AS DOUBLE) > 100 AND vence >= '2026-11-15'\""
    frame = read_dataset(csv_job(job_dir, SPANISH_EXCEL, SPANISH + where))
    assert frame["id"].to_list() == ["C-3"]
    assert frame["importe"].to_list() == ["250"]


def test_spanish_excel_csv_as_utf8_suggests_cp1252_naming_the_line(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"d.csv:2: not valid utf-8") as info:
        read_dataset(csv_job(job_dir, SPANISH_EXCEL, ", delimiter: ';'"))
    assert "cp1252" in (info.value.hint or "")
    assert "latin" not in (info.value.hint or "")


def test_spanish_excel_csv_as_latin1_is_implausible(job_dir: Path) -> None:
    # latin-1 decodes every byte: ’ (0x92) would become the invisible control U+0092.
    with pytest.raises(
        DatasetError,
        match=r"d.csv:3: decoding as latin-1 gives the invisible "
        r"control character U\+0092",
    ) as info:
        read_dataset(csv_job(job_dir, SPANISH_EXCEL, ", delimiter: ';', encoding: latin-1"))
    assert "cp1252" in (info.value.hint or "")


def test_utf8_file_read_as_cp1252_is_mojibake(job_dir: Path) -> None:
    content = "id,name\nC-1,Ann\nC-2,José\n".encode()
    with pytest.raises(
        DatasetError,
        match=r"d.csv:3: the file is UTF-8 but dataset.encoding "
        r"is 'cp1252': it would read 'C-2,JosÃ©'",
    ):
        read_dataset(csv_job(job_dir, content, ", encoding: cp1252"))


def test_double_encoded_utf8_is_mojibake(job_dir: Path) -> None:
    content = "id,name\nC-1,JosÃ©\n".encode()
    with pytest.raises(DatasetError, match=r"d.csv:2: 'C-1,JosÃ©' looks like UTF-8 text decoded"):
        read_dataset(csv_job(job_dir, content))


def test_delimiter_auto_picks_and_says_which(job_dir: Path) -> None:
    extra = ", delimiter: auto, encoding: cp1252, decimal: ','"
    dataset = load_dataset(csv_job(job_dir, SPANISH_EXCEL, extra))
    assert dataset.notes == ["delimiter: auto picked ';'"]
    assert dataset.frame["importe"].to_list() == ["1.234,56", "99,90", "250"]


def test_one_column_header_names_the_likely_delimiter(job_dir: Path) -> None:
    with pytest.raises(
        DatasetProblems,
        match=r"d.csv:1: the header is one column "
        r"'id;nombre;email;importe;vence' that contains ';'",
    ) as info:
        read_dataset(csv_job(job_dir, SPANISH_EXCEL, ", encoding: cp1252"))
    assert info.value.hint == "set dataset.delimiter: ';' (or auto)"


def test_mac_cr_only_line_ends(job_dir: Path) -> None:
    content = b'id,name\rC-1,Ann\rC-2,"two\rlines"\r\rC-3,x\r'
    frame = read_dataset(csv_job(job_dir, content))
    assert frame["name"].to_list() == ["Ann", "two\rlines", "x"]
    assert frame["__row__"].to_list() == [2, 3, 6]


def test_libreoffice_utf8_without_bom(job_dir: Path) -> None:
    content = 'id,name,city,note\nC-1,Zoë,"Madrid, ES","say ""hi"""\nC-2,Łukasz,Kraków,\n'
    frame = read_dataset(csv_job(job_dir, content.encode()))
    assert frame["name"].to_list() == ["Zoë", "Łukasz"]
    assert frame["city"].to_list() == ["Madrid, ES", "Kraków"]
    assert frame["note"].to_list() == ['say "hi"', ""]


def test_utf16_unicode_text_from_excel(job_dir: Path) -> None:
    # Excel's "Unicode Text (*.txt)": UTF-16 LE with a BOM, tab-separated, CRLF.
    content = b"\xff\xfe" + "id\tnombre\r\nC-1\tJosé\r\nC-2\tO’Neill\r\n".encode("utf-16-le")
    dataset = load_dataset(csv_job(job_dir, content, name="d.txt"))
    assert dataset.frame["nombre"].to_list() == ["José", "O’Neill"]
    assert dataset.frame["__row__"].to_list() == [2, 3]
    assert dataset.notes == [
        "encoding UTF-16 LE (from the file's byte-order mark)",
        "delimiter tab (a UTF-16 'Unicode Text' file from Excel)",
    ]


def test_utf16_without_bom_is_named(job_dir: Path) -> None:
    content = "id\tname\r\nC-1\tAnn\r\n".encode("utf-16-le")
    with pytest.raises(DatasetError, match="looks like UTF-16 without a byte-order mark"):
        read_dataset(csv_job(job_dir, content))


def test_tsv_defaults_to_tab(job_dir: Path) -> None:
    frame = read_dataset(csv_job(job_dir, b"id\tname\nC-1\tAnn, Jr.\n", name="d.tsv"))
    assert frame["name"].to_list() == ["Ann, Jr."]


def test_sep_line_blank_lines_and_spaces_after_header_commas(job_dir: Path) -> None:
    content = b"sep=;\r\n\r\n\r\nid; name\r\nC-1;Ann\r\n;\r\nC-2; Bob \r\n"
    dataset = load_dataset(csv_job(job_dir, content))
    assert dataset.frame["name"].to_list() == ["Ann", " Bob "]  # cells keep their spaces
    assert dataset.frame["__row__"].to_list() == [5, 7]
    assert dataset.notes == ["delimiter ';' (from the file's 'sep=' first line)"]


def test_header_row_skips_title_lines(job_dir: Path) -> None:
    content = b"Clientes noviembre\r\nExportado 29/11/2026;;\r\nid;name;email\r\nC-1;Ann;a@x.es\r\n"
    frame = read_dataset(csv_job(job_dir, content, ", delimiter: ';', header_row: 3"))
    assert frame["email"].to_list() == ["a@x.es"]
    assert frame["__row__"].to_list() == [4]


def test_title_line_without_header_row_hints_at_it(job_dir: Path) -> None:
    content = b"Clientes noviembre\nid,name\nC-1,Ann\n"
    with pytest.raises(DatasetProblems, match=r"d.csv:2: expected 1 fields, found 2") as info:
        read_dataset(csv_job(job_dir, content))
    assert "header_row" in (info.value.hint or "")


def test_unclosed_quote_in_header_is_refused(job_dir: Path) -> None:
    with pytest.raises(
        DatasetProblems,
        match=r"d.csv:1: the header line is broken: a quote "
        r"opened on this line is never closed",
    ):
        read_dataset(csv_job(job_dir, b'id,"name,email\nC-1,Ann,a@x.es\nC-2,Bob,b@x.es\n'))


def test_every_broken_line_is_named_at_once(job_dir: Path) -> None:
    content = (
        b"id,name,email\n"
        b'C-1,"Ann" ,a@x.es\n'  # 2: a space after the closing quote
        b"C-2,Bob\n"  # 3: ragged
        b'C-3,"say \\"hi\\"",c@x.es\n'  # 4: backslash-escaped quotes
        b'C-4,24" monitor,d@x.es\n'  # 5: a quote inside a plain field is text
        b"C-5,Eve,e@x.es,extra\n"  # 6: ragged
        b'C-6,"never closed,f@x.es\n'  # 7: unclosed quote
    )
    with pytest.raises(DatasetProblems) as info:
        read_dataset(csv_job(job_dir, content))
    found = [(p.row, p.message.split(":")[0].split(" (")[0]) for p in info.value.problems]
    assert found == [
        (2, "text after a closing quote"),
        (3, "expected 3 fields, found 2"),
        (4, "a backslash-escaped quote"),
        (6, "expected 3 fields, found 4"),
        (7, "a quote opened on this line is never closed"),
    ]
    assert "polars" not in str(info.value)


def test_quote_inside_a_plain_field_is_text(job_dir: Path) -> None:
    frame = read_dataset(csv_job(job_dir, b'id,item\nC-1,24" monitor\nC-2,27" screen\n'))
    assert frame["item"].to_list() == ['24" monitor', '27" screen']
    assert frame["__row__"].to_list() == [2, 3]


def test_duplicate_and_reserved_headers_are_named_with_positions(job_dir: Path) -> None:
    with pytest.raises(DatasetProblems) as info:
        read_dataset(csv_job(job_dir, b"id,email,__row__,email\n1,a,b,c\n"))
    text = str(info.value)
    assert "d.csv:1: column 3 '__row__': names starting with '__' are reserved" in text
    assert "d.csv:1: column 'email' appears 2 times (columns 2, 4)" in text


def test_header_only_file_has_no_rows(job_dir: Path) -> None:
    assert read_dataset(csv_job(job_dir, b"id,email\r\n")).height == 0


def test_unnamed_column_holding_data_is_refused(job_dir: Path) -> None:
    with pytest.raises(DatasetProblems, match=r"d.csv:3: column 3 has no header but holds data"):
        read_dataset(csv_job(job_dir, b"id,name,\nC-1,Ann,\nC-2,Bob,x\n"))
    frame = read_dataset(csv_job(job_dir, b"id;name;\r\nC-1;Ann;\r\n", ", delimiter: ';'"))
    assert frame.columns == ["id", "name", "__row__", "__key__"]


# --- held to Python's csv module ------------------------------------------------------------

_CELL = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8
) | st.sampled_from(['"', '""', "a,b", "x\ny", "x\r\ny", "x\ry", " ", "é€", ";", "\t"])


def _quote(cell: str, always: bool) -> str:
    if always or any(c in cell for c in ',"\r\n') or cell.startswith(" ") or cell == "":
        return '"' + cell.replace('"', '""') + '"'
    return cell


@st.composite
def csv_files(draw: st.DrawFn) -> str:
    """A CSV as some program writes it, sometimes damaged the way real files are."""
    width = draw(st.integers(1, 4))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    lines = [",".join(f"c{i}" for i in range(width))]
    for _ in range(draw(st.integers(0, 6))):
        if draw(st.integers(0, 9)) == 0:
            lines.append("")  # a blank line
            continue
        cells = draw(st.lists(_CELL, min_size=width, max_size=width))
        always = draw(st.booleans())
        lines.append(",".join(_quote(c, always) for c in cells))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    damage = draw(st.sampled_from(["none", "none", "cut", "insert"]))
    if damage == "cut" and len(text) > len(lines[0]) + 1:
        text = text[: draw(st.integers(len(lines[0]) + 1, len(text)))]
    elif damage == "insert":
        at = draw(st.integers(len(lines[0]), len(text)))
        text = text[:at] + draw(st.sampled_from(['"', ",", "\n", '"x', 'x"'])) + text[at:]
    return text


def _reference(text: str) -> tuple[list[str], list[tuple[int, list[str]]]] | None:
    """Python's csv in strict mode: header, data records with their first line; None: refused."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out, line = [], 0
    try:
        for fields in reader:
            if fields and not all(f == "" for f in fields):
                out.append((line + 1, fields))
            line = reader.line_num
    except csv.Error:
        return None
    return (out[0][1], out[1:]) if out else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
def test_reader_agrees_with_python_csv(text: str) -> None:
    reference = _reference(text)
    spec = DatasetSpec(path="d.csv")
    try:
        # Decoded as is: the encoding checks have their own tests; this one is the grammar.
        frame, _ = parse_csv(Decoded(text, "utf-8", None, text.encode()), "d.csv", spec)
    except DatasetError as err:
        # A refusal is right only where csv also refuses, or the records are ragged, or the
        # header is unusable (duplicates from damage): and it names a line.
        ragged = reference is not None and (
            any(len(f) != len(reference[0]) for _, f in reference[1])
            or len(set(h.strip() for h in reference[0])) != len(reference[0])
            or any(h.startswith("__") for h in reference[0])
            or any(f[i] for _, f in reference[1] for i, h in enumerate(reference[0]) if not h)
            or (len(reference[0]) == 1 and any(c in reference[0][0] for c in ";\t|"))
        )
        assert reference is None or ragged, f"refused what csv reads: {err}"
        assert isinstance(err, DatasetProblems) or "line" in str(err)
        return
    assert reference is not None, "read what csv strict refuses"
    header, rows = reference
    named = [i for i, h in enumerate(header) if h.strip()]  # unnamed empty columns are dropped
    assert frame.columns == [header[i].strip() for i in named] + ["__row__"]
    assert frame["__row__"].to_list() == [line for line, _ in rows]
    got = [list(r) for r in frame.drop("__row__").iter_rows()]
    assert got == [[f[i] for i in named] for _, f in rows]


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_every_candidate_delimiter_reads_quoted_fields(job_dir: Path, delimiter: str) -> None:
    d = delimiter
    content = f'id{d}note\r\nC-1{d}"a{d}b"\r\n{d}\r\nC-2{d}"say ""hi"""\r\nC-3{d}x{d}y\r\n'
    yaml_delimiter = '"\\t"' if d == "\t" else f"'{d}'"
    with pytest.raises(DatasetProblems, match=r"d.csv:5: expected 2 fields, found 3"):
        read_dataset(csv_job(job_dir, content.encode(), f", delimiter: {yaml_delimiter}"))
    fixed = content.replace(f"x{d}y", "x")
    frame = read_dataset(csv_job(job_dir, fixed.encode(), f", delimiter: {yaml_delimiter}"))
    assert frame["note"].to_list() == [f"a{d}b", 'say "hi"', "x"]
    assert frame["__row__"].to_list() == [2, 4, 5]


@pytest.mark.parametrize(
    ("bom", "codec"),
    [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")],
)
def test_byte_order_marks_decide_the_encoding(job_dir: Path, bom: bytes, codec: str) -> None:
    content = bom + "id,name\r\nC-1,Zoë\r\n".encode(codec)
    frame = read_dataset(csv_job(job_dir, content, ", encoding: cp1252"))
    assert frame.columns[:2] == ["id", "name"]
    assert frame["name"].to_list() == ["Zoë"]


@pytest.mark.parametrize(
    ("content", "picked"),
    [
        (b'id,city,note\nC-1,"Madrid, ES",a;b\nC-2,Sevilla,c\n', "','"),
        (b"id\tnote\nC-1\ta, b; c\nC-2\tx\n", "tab"),
        (b"id|note\nC-1|a,b\n", "'|'"),
    ],
)
def test_delimiter_auto_ignores_delimiters_inside_cells(
    job_dir: Path, content: bytes, picked: str
) -> None:
    dataset = load_dataset(csv_job(job_dir, content, ", delimiter: auto"))
    assert dataset.notes == [f"delimiter: auto picked {picked}"]
    assert dataset.frame["id"].to_list()[0] == "C-1"


def test_header_row_past_the_end(job_dir: Path) -> None:
    with pytest.raises(DatasetError, match=r"d.csv: no header line at or after line 9"):
        read_dataset(csv_job(job_dir, b"id\nC-1\n", ", header_row: 9"))
