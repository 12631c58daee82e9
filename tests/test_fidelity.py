"""Issue 13's wiring: what the notice says is what the sheet shows, to the person it names.

The readers, formats, address and text rules have their own test files (test_dataset*.py,
test_formats.py, test_addresses.py, test_text.py, test_templating.py); these tests hold the
pieces together: the job's locale and the dataset's conventions reach every template, one
recipient identity, every problem at once, a closed error tree, and the Spanish example run
end to end against the sandbox.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from batch.cli import main
from batch.dataset import DatasetProblems, read_dataset
from batch.errors import BatchError, JobFileError, RowErrors
from batch.jobfile import Job, load_job
from batch.ledger import SENT, Entry, Ledger, Outcome
from batch.render import Renderer, RowProblems, scan
from batch.runner import RunOptions, run
from batch.sandbox import RunningSandbox

JOBS = Path(__file__).resolve().parent.parent / "jobs"
TEMPLATES = JOBS.parent / "templates"
NBSP = "\u00a0"


def lmbatch(*args: str | Path) -> Result:
    """Run a command in-process, as a user would."""
    return CliRunner().invoke(main, [str(a) for a in args], input="", catch_exceptions=False)


def email_job(
    folder: Path,
    csv: bytes,
    *,
    dataset: str = "",
    subject: str = "Aviso {{ id }}",
    body: str = "<p>{{ email }}</p>",
    extra: str = "",
) -> Path:
    """An e-mail job over `csv` (written byte for byte) keyed by the address by default."""
    (folder / "d.csv").write_bytes(csv)
    (folder / "body.html").write_text(body, encoding="utf-8")
    job = folder / "job.yaml"
    job.write_text(
        f"campaign: c\ndataset: {{path: d.csv{dataset}}}\n"
        f"message: {{subject: {subject!r}, html: body.html}}\noutput: out\n{extra}",
        encoding="utf-8",
    )
    return job


# --- the Spanish example -------------------------------------------------------------------


def test_the_spanish_example_csv_is_what_excel_on_spanish_windows_writes() -> None:
    data = (JOBS / "data" / "deudores.csv").read_bytes()
    assert data.startswith(b"expediente;nombre;correo;importe;vencimiento;concepto\r\n")
    assert data.count(b"\r\n") == data.count(b"\n") == 4  # CRLF after every record
    assert b"Jos\xe9 Mart\xednez" in data  # cp1252, no UTF-8 and no byte-order mark
    assert b"O\x92Donnell" in data and b"comunidad \x96 octubre" in data  # ’ and – in cp1252
    assert b";1.234,50;29/11/2026;" in data  # decimal comma, thousands dot, dd/mm/yyyy


def test_the_spanish_example_runs_end_to_end_in_spanish(
    sandbox: RunningSandbox, use_sandbox: object, tmp_path: Path
) -> None:
    use_sandbox(sandbox)  # type: ignore[operator]
    jobs = tmp_path / "jobs"
    shutil.copytree(JOBS, jobs)
    shutil.copytree(TEMPLATES, tmp_path / "templates")
    job = jobs / "requerimiento.yaml"
    job.write_text(
        job.read_text(encoding="utf-8") + "limits: {requests_per_window: 10, window_seconds: 1}\n",
        encoding="utf-8",
    )
    checked = lmbatch("validate", job)
    assert checked.exit_code == 0, checked.output
    # The 87,20 row is below the `where` (a comma-decimal number compared as a number).
    assert "ok: 2 row(s) valid" in checked.stdout
    result = lmbatch("run", job)
    assert result.exit_code == 0, result.output
    log = {entry["recipient"]: entry for entry in sandbox.state.log()}
    assert sorted(log) == ["inigo.odonnell@example.es", "jose.martinez@example.es"]
    jose = log["jose.martinez@example.es"]
    assert jose["subject"] == f"Requerimiento de pago EXP-001: 1.234,50{NBSP}€"
    body = str(jose["message"])
    assert f"<strong>1.234,50{NBSP}€</strong>" in body
    assert "<strong>29 de noviembre de 2026</strong>" in body
    assert "cuotas de comunidad – octubre y noviembre" in body  # cp1252 – read as –
    assert "Estimado/a José Martínez Ruiz:" in body
    inigo = str(log["inigo.odonnell@example.es"]["message"])
    assert f"250,00{NBSP}€" in inigo and "1 de diciembre de 2026" in inigo
    assert "Íñigo O’Donnell" in inigo


def test_an_unknown_locale_is_a_located_job_file_error(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"email\na@example.com\n", extra="locale: es_XX_nope\n")
    with pytest.raises(JobFileError, match=r"job.yaml:5 locale: .*unknown locale 'es_XX_nope'"):
        load_job(job)


# --- values: the dataset's conventions, the job's locale -------------------------------------


def test_money_reads_spanish_thousands_and_prints_them_in_spanish(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b"id;email;importe\r\n1;a@example.com;1.234\r\n2;b@example.com;1.234,5\r\n",
        dataset=", delimiter: ';', decimal: ','",
        subject="{{ importe|money('EUR') }}",
        extra="locale: es_ES\n",
    )
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.errors == []
    assert result.ok["subject"].to_list() == [f"1.234,00{NBSP}€", f"1.234,50{NBSP}€"]


def test_money_never_reads_spanish_thousands_as_decimals(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b"id,email,importe\n1,a@example.com,1.234\n",
        subject="{{ importe|money('EUR') }}",
    )
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.ok.height == 0
    (error,) = result.errors
    assert error.field == "message.subject"
    assert "1.234" in error.message and "decimal" in error.message


def test_where_compares_numbers_written_with_a_decimal_comma(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b"id;email;importe\r\n1;a@example.com;1.234,50\r\n2;b@example.com;87,20\r\n"
        b"3;c@example.com;100,01\r\n",
        dataset=", delimiter: ';', decimal: ',', where: 'CAST(importe AS DOUBLE) > 100'",
    )
    frame = read_dataset(load_job(job))
    assert frame["id"].to_list() == ["1", "3"]
    assert frame["importe"].to_list() == ["1.234,50", "100,01"]  # the cells stay as written


def test_a_bad_where_names_the_job_file_key(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"id,email\n1,a@example.com\n", dataset=", where: 'id; DROP'")
    with pytest.raises(JobFileError, match=r"job.yaml dataset.where: "):
        read_dataset(load_job(job))


def test_dates_follow_the_dataset_format_and_the_locale(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b"id,email,vence\n1,a@example.com,29/11/2026\n",
        dataset=", date_format: '%d/%m/%Y'",
        subject="vence el {{ vence|date('long') }}",
        extra="locale: es_ES\n",
    )
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.ok["subject"].to_list() == ["vence el 29 de noviembre de 2026"]


# --- templates: sandboxed, bounded, cells are data --------------------------------------------


def test_template_injection_is_a_located_row_error_exit_2_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    job = email_job(
        tmp_path,
        b"id,email\n1,a@example.com\n2,b@example.com\n",
        subject="{{ id.__class__.__mro__ }}",
    )
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    assert "message.subject: not allowed in a template" in result.stderr
    assert "(on 2 rows: 2, 3)" in result.stderr  # said once, with the rows it affects
    assert "Traceback" not in result.output
    assert lmbatch("run", job).exit_code == 2
    assert not (tmp_path / "out").exists()


def test_cells_are_data_never_templates(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"id,email\n{{ 7*7 }},a@example.com\n")
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.ok["subject"].to_list() == ["Aviso {{ 7*7 }}"]


# --- clean text ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "named"),
    [
        (b"Ana\x00", "U+0000 NUL"),
        (b'"Ana\rL\xc3\xb3pez"', "U+000D bare carriage return"),
        (b"Ana\x0bL", "U+000B vertical tab"),
        ("Ana\u2028López".encode(), "U+2028 line separator"),
        ("Ana\u2029".encode(), "U+2029 paragraph separator"),
    ],
)
def test_control_characters_in_a_subject_are_row_errors(
    tmp_path: Path, cell: bytes, named: str
) -> None:
    job = email_job(
        tmp_path, b"id,email,texto\n1,a@example.com," + cell + b"\n", subject="Hola {{ texto }}"
    )
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.ok.height == 0
    (error,) = result.errors
    assert error.row == 2 and error.field == "message.subject"
    assert named in error.message


def test_line_breaks_in_a_subject_fold_and_nul_in_a_body_is_refused(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b'id,email,name\n1,a@example.com,"Ana\r\nL\xc3\xb3pez"\n2,b@example.com,"B\x00"\n',
        subject="Hola {{ name }}",
        body="<p>{{ id }}{{ name if id == '2' else '' }}</p>",
    )
    result = scan(load_job(job), read_dataset(load_job(job)), workers=1)
    assert result.ok["subject"].to_list() == ["Hola Ana López"]
    fields = {e.field for e in result.errors if e.row == 4}  # row 2 spans lines 2 and 3
    assert fields == {"recipient.name", "message.subject", "message.html"}


def test_an_sms_text_keeps_its_line_breaks_but_not_a_bare_cr(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_bytes(
        b'phone,msg\n+34612345678,"uno\r\ndos"\n+34622345678,"uno\rdos"\n'
    )
    (tmp_path / "job.yaml").write_text(
        "campaign: c\nchannel: sms\ndataset: {path: d.csv}\n"
        "message: {text: '{{ msg }}'}\noutput: out\n",
        encoding="utf-8",
    )
    job = load_job(tmp_path / "job.yaml")
    result = scan(job, read_dataset(job), workers=1)
    assert result.ok["address"].to_list() == ["+34612345678"]
    (error,) = result.errors
    assert error.row == 4 and "bare carriage return" in error.message  # row 2 spans 2 lines


# --- one recipient identity ----------------------------------------------------------------


def sms_job(folder: Path, phones: list[str], extra: str = "") -> Job:
    rows = "".join(f'"{p}",Hola\n' for p in phones)
    (folder / "d.csv").write_text("phone,msg\n" + rows, encoding="utf-8")
    (folder / "job.yaml").write_text(
        "campaign: c\nchannel: sms\ndataset: {path: d.csv}\n"
        "recipient: {default_region: ES}\nmessage: {text: '{{ msg }}'}\noutput: out\n" + extra,
        encoding="utf-8",
    )
    return load_job(folder / "job.yaml")


def test_one_phone_written_three_ways_is_one_duplicate(tmp_path: Path) -> None:
    job = sms_job(tmp_path, ["612 345 678", "+34 612 345 678", "0034612345678", "622345678"])
    with pytest.raises(DatasetProblems) as info:
        read_dataset(job)
    (problem,) = info.value.problems
    assert problem.message == (
        "duplicate recipient address (the default key) '+34612345678' on rows 2, 3, 4"
    )
    assert info.value.row_errors == []  # the fourth row is checked too, and fine


def test_one_mailbox_in_idna_and_unicode_is_one_duplicate(tmp_path: Path) -> None:
    job = email_job(tmp_path, "email\nuser@xn--mnchen-3ya.de\nUser@MÜNCHEN.de\n".encode())
    with pytest.raises(DatasetProblems, match=r"'user@xn--mnchen-3ya.de' on rows 2, 3"):
        read_dataset(load_job(job))


def test_the_default_key_renders_like_the_message(tmp_path: Path) -> None:
    # A recipient template using a global and a filter validated, then failed at run time
    # ("keys no longer in the dataset") when the key was rendered in a bare environment.
    job = email_job(
        tmp_path,
        b"id,user\n1,ana\n2,bob\n",
        body="<p>{{ user }}</p>",
        extra='recipient: {email: "{{ user }}+{{ campaign|lower }}@Example.COM"}\n',
    )
    loaded = load_job(job)
    frame = read_dataset(loaded)
    assert frame["__key__"].to_list() == ["ana+c@example.com", "bob+c@example.com"]
    result = scan(loaded, frame, workers=1)
    assert result.errors == []
    assert result.ok["key"].to_list() == frame["__key__"].to_list()


def test_an_address_that_does_not_normalise_is_a_row_error_not_a_duplicate(
    tmp_path: Path,
) -> None:
    job = sms_job(tmp_path, ["912345678", "913456789", ""])  # two Madrid landlines, an empty
    loaded = job
    frame = read_dataset(loaded)
    assert frame["__key__"].to_list() == ["", "", ""]
    result = scan(loaded, frame, workers=1)
    assert [e.row for e in result.errors] == [2, 3, 4]
    assert "landline" in result.errors[0].message


def write_old_ledger(job: Job, keys: list[str]) -> None:
    """A ledger as a campaign keyed by the old rule (the address as written) left it."""
    with Ledger.open(job.output_dir) as ledger:
        entries = [Entry(k, k, "", None) for k in keys]
        ledger.intent("r-1", entries)
        outcomes = [Outcome(k, SENT, f"t-{i}") for i, k in enumerate(keys)]
        ledger.sent("r-1", parent_tracking_id="p-1", outcomes=outcomes, sent_at=None)


def test_a_ledger_with_old_keys_resumes_when_the_addresses_were_normal(tmp_path: Path) -> None:
    job = load_job(email_job(tmp_path, b"id,email\n1,ana@example.com\n2,Bob@Example.com\n"))
    write_old_ledger(job, ["ana@example.com", "bob@example.com"])  # old: trimmed, lower-cased
    assert read_dataset(job)["__key__"].to_list() == ["ana@example.com", "bob@example.com"]
    summary = run(job, RunOptions(dry_run=True, offline=True))
    assert summary.stats.recipients == 0  # both already sent: nothing is sent again


def test_a_ledger_keeps_its_old_key_where_normalising_changes_it(tmp_path: Path) -> None:
    csv = "id,email\n1,ana@example.com\n2,user@münchen.de\n".encode()
    fresh = load_job(email_job(tmp_path, csv))
    assert read_dataset(fresh)["__key__"].to_list() == [
        "ana@example.com",
        "user@xn--mnchen-3ya.de",
    ]
    write_old_ledger(fresh, ["ana@example.com", "user@münchen.de"])
    job = load_job(tmp_path / "job.yaml")
    assert read_dataset(job)["__key__"].to_list() == ["ana@example.com", "user@münchen.de"]
    assert run(job, RunOptions(dry_run=True, offline=True)).stats.recipients == 0


# --- every problem at once, a closed error tree -----------------------------------------------


def test_validate_reports_broken_lines_bad_rows_and_duplicates_together(tmp_path: Path) -> None:
    job = email_job(
        tmp_path,
        b"id,email\n1,a@example.com\n2,b@example.com,extra\n3,not-an-address\n"
        b"4,c@example.com\n5,C@example.com\n",
    )
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    err = result.stderr
    assert "d.csv:3: expected 2 fields, found 3" in err
    assert "row 4 recipient.email: invalid e-mail address 'not-an-address'" in err
    assert "'c@example.com' on rows 5, 6" in err
    assert "--skip-invalid" not in err  # structural problems: skipping cannot help
    assert "Traceback" not in result.output


def test_a_job_level_mistake_is_said_once_with_its_row_count(tmp_path: Path) -> None:
    rows = "".join(f"{i},u{i}@example.com\n" for i in range(600))
    job = email_job(tmp_path, ("id,email\n" + rows).encode(), subject="{{ importe }}")
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    err = result.stderr
    assert err.count("importe") == 1
    assert "600 row error(s) on 600 row(s)" in err
    assert "variable 'importe' is missing from the row (no such column) (on 600 rows:" in err
    assert "--skip-invalid" not in err  # it would skip every row
    assert "no row is valid" in err


def test_skip_invalid_is_suggested_when_some_rows_stay_valid(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"id,email\n1,a@example.com\n2,nope\n")
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    assert "--skip-invalid" in result.stderr


def test_a_fixed_attachment_outside_the_folder_is_said_once(tmp_path: Path) -> None:
    (tmp_path.parent / "outside.pdf").write_bytes(b"%PDF-1.4\n")
    rows = "".join(f"{i},u{i}@example.com\n" for i in range(3))
    job = email_job(
        tmp_path,
        ("id,email\n" + rows).encode(),
        extra="",
    )
    job.write_text(
        job.read_text(encoding="utf-8").replace(
            "html: body.html}", "html: body.html, attachments: [{path: ../outside.pdf}]}"
        ),
        encoding="utf-8",
    )
    result = lmbatch("validate", job)
    assert result.exit_code == 2
    assert "(on 3 rows: 2, 3, 4)" in result.stderr
    assert result.stderr.count("outside.pdf") == 1


def test_a_row_that_fails_at_send_time_is_an_input_error_not_a_traceback(tmp_path: Path) -> None:
    job = load_job(email_job(tmp_path, b"id,email\n1,nope\n"))
    renderer = Renderer(job)
    with pytest.raises(RowProblems) as info:
        renderer.render({"__row__": 2, "__key__": "k", "id": "1", "email": "nope"})
    assert isinstance(info.value, RowErrors) and isinstance(info.value, BatchError)
    assert info.value.exit_code == 2
    assert "row 2 (key k) recipient.email: invalid e-mail address 'nope'" in str(info.value)


def test_validate_prints_what_the_reader_decided(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"id;email\r\n1;a@example.com\r\n", dataset=", delimiter: auto")
    result = lmbatch("validate", job)
    assert result.exit_code == 0, result.output
    assert "note: delimiter: auto picked ';'" in result.stderr


def test_a_template_injection_in_the_campaign_name_is_a_located_job_file_error(
    tmp_path: Path,
) -> None:
    job = email_job(tmp_path, b"id,email\n1,a@example.com\n")
    job.write_text(
        job.read_text(encoding="utf-8").replace("campaign: c", "campaign: \"{{ ''.__class__ }}\""),
        encoding="utf-8",
    )
    with pytest.raises(JobFileError, match=r"job.yaml:1 campaign: not allowed in a template"):
        load_job(job)


def test_an_export_to_a_wrong_file_name_is_an_input_mistake(tmp_path: Path) -> None:
    job = email_job(tmp_path, b"id,email\n1,a@example.com\n")
    result = lmbatch("status", job, "--export-failed", tmp_path / "failed.txt")
    assert result.exit_code == 2
    assert "use a .csv, .xlsx or .parquet file name" in result.stderr


def test_two_empty_parquet_addresses_are_row_errors_not_one_duplicate(tmp_path: Path) -> None:
    pl.DataFrame({"id": ["1", "2", "3"], "email": [None, None, "a@example.com"]}).write_parquet(
        tmp_path / "d.parquet"
    )
    job = email_job(tmp_path, b"", dataset="")
    job.write_text(
        job.read_text(encoding="utf-8").replace("path: d.csv", "path: d.parquet"), encoding="utf-8"
    )
    loaded = load_job(job)
    frame = read_dataset(loaded)
    result = scan(loaded, frame, workers=1)
    assert result.ok["address"].to_list() == ["a@example.com"]
    assert [(e.row, e.field) for e in result.errors] == [
        (1, "recipient.email"),
        (2, "recipient.email"),
    ]
    assert not any("duplicate" in e.message for e in result.errors)
