"""Generated documents: content, layout from CSS, embedded fonts, the job's folder only,
the same bytes on every run, size limits, the store that renders again only what changed."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import pypdf
import pytest

from batch.documents import (
    SIGNATURE_LIMIT,
    DocumentError,
    DocumentRenderer,
    DocumentTask,
    check_name,
    check_size,
    document_path,
    read_if_unchanged,
    render_many,
    render_pdf,
)
from batch.errors import RowError, WorkPending
from batch.templating import format_date, money

REPO = Path(__file__).resolve().parent.parent
# A 2x2 red PNG: small enough to inline, real enough for WeasyPrint to embed.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEklEQVR4nGP4z8DAwMDAAMQAAOkF"
    "/wGgXQ3nAAAAAElFTkSuQmCC"
)
LETTER = """<!DOCTYPE html>
<html lang="es"><head><meta charset="utf-8">
<meta name="dcterms.created" content="2020-01-01T00:00:00Z">
<link rel="stylesheet" href="letter.css"></head>
<body><h1>Requerimiento de pago</h1>
<p>Estimado/a {{ name }}: le reclamamos {{ amount|money("EUR") }}
antes del {{ due|date("%d/%m/%Y") }}.</p></body></html>
"""
CSS = """@page { size: A4; margin: 2cm;
  @bottom-center { content: "Página " counter(page) " de " counter(pages);
                   font: 8pt "DejaVu Sans"; } }
html { font: 11pt "DejaVu Serif"; }
"""
ROW = {"id": "C-1001", "name": "Ana López", "amount": "1234.5", "due": "2026-11-02"}


def sandboxed(folder: Path) -> jinja2.Environment:
    """An environment shaped like the job's: sandboxed, autoescaped, strict, same filters."""
    env = jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(folder), str(folder / "templates")]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["money"] = money
    env.filters["date"] = format_date
    return env


@pytest.fixture
def job(tmp_path: Path) -> Path:
    """A job folder with templates/letter.html, its stylesheet and a logo."""
    folder = tmp_path / "job"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "letter.html").write_text(LETTER, encoding="utf-8")
    (folder / "templates" / "letter.css").write_text(CSS, encoding="utf-8")
    (folder / "templates" / "logo.png").write_bytes(PNG)
    return folder


def renderer_for(folder: Path) -> DocumentRenderer:
    """A renderer over `folder`'s templates (module level: it pickles for the pool)."""
    return DocumentRenderer(sandboxed(folder), roots=[folder])


def text_of(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def write_template(job: Path, name: str, text: str) -> None:
    (job / "templates" / name).write_text(text, encoding="utf-8")


# --- content and layout ---------------------------------------------------------------------


def test_the_row_s_name_amount_and_date_are_in_the_pdf_text(job: Path) -> None:
    pdf = renderer_for(job).render("letter.html", ROW)
    text = text_of(pdf.data)
    assert "Ana López" in text
    assert "1,234.50 EUR" in text
    assert "02/11/2026" in text
    assert pdf.sha256 == hashlib.sha256(pdf.data).hexdigest()


def test_page_size_and_footer_come_from_the_template_s_css(job: Path) -> None:
    pdf = renderer_for(job).render("letter.html", ROW)
    page = pypdf.PdfReader(io.BytesIO(pdf.data)).pages[0]
    width, height = float(page.mediabox.width), float(page.mediabox.height)
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    assert "Página 1 de 1" in page.extract_text()


def test_every_font_is_embedded(job: Path) -> None:
    pdf = renderer_for(job).render("letter.html", ROW)
    page = pypdf.PdfReader(io.BytesIO(pdf.data)).pages[0]
    fonts = page["/Resources"]["/Font"]
    assert len(fonts) >= 2  # DejaVu Serif for the text, DejaVu Sans for the footer
    for ref in fonts.values():
        font: Any = ref.get_object()
        descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"]
        assert any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")), font


def test_the_example_templates_render_with_the_row_in_them() -> None:
    renderer = DocumentRenderer(sandboxed(REPO), roots=[REPO])
    row = ROW | {"email": "ana@example.com", "plan": "premium"}
    demand = text_of(renderer.render("letters/demand.html", row).data)
    contract = text_of(renderer.render("contracts/contract.html", row).data)
    for text in (demand, contract):
        assert "Ana López" in text
        assert "1,234.50 EUR" in text
        assert "Página 1 de 1" in text
    assert "Requerimiento de pago" in demand
    assert "02/11/2026" in demand
    assert "Contrato de prestación de servicios" in contract


# --- determinism ----------------------------------------------------------------------------

_RENDER_IN_A_PROCESS = """
import sys, time
from pathlib import Path
if sys.argv[3] == "fonttools":
    # Without HarfBuzz-subset WeasyPrint subsets fonts with fontTools, which stamps them
    # with the clock: give each process a different clock.
    import weasyprint.pdf.fonts
    weasyprint.pdf.fonts.harfbuzz_subset = None
    fake = float(sys.argv[4])
    time.time = lambda: fake
sys.path.insert(0, sys.argv[1])
from tests.test_documents import ROW, renderer_for
sys.stdout.write(renderer_for(Path(sys.argv[2])).render("letter.html", ROW).sha256)
"""


def _render_elsewhere(job: Path, subsetter: str, clock: float) -> str:
    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    done = subprocess.run(
        [sys.executable, "-c", _RENDER_IN_A_PROCESS, str(REPO), str(job), subsetter, str(clock)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("subsetter", ["harfbuzz", "fonttools"])
def test_two_processes_render_byte_identical_pdfs(job: Path, subsetter: str) -> None:
    first = _render_elsewhere(job, subsetter, 1_700_000_000.0)
    second = _render_elsewhere(job, subsetter, 1_800_000_000.0)
    assert len(first) == 64
    assert first == second
    if subsetter == "harfbuzz":  # fontTools subsets differently: other bytes, as stable
        assert renderer_for(job).render("letter.html", ROW).sha256 == first


def test_no_creation_date_reaches_the_file_even_when_the_template_sets_one(job: Path) -> None:
    data = renderer_for(job).render("letter.html", ROW).data
    info = pypdf.PdfReader(io.BytesIO(data)).metadata or {}
    assert "/CreationDate" not in info
    assert "/ModDate" not in info
    assert b"2020" not in data.split(b"trailer")[-1]


# --- the job's folder only ------------------------------------------------------------------


def test_an_image_inside_the_folder_loads(job: Path) -> None:
    write_template(job, "logo.html", '<img src="logo.png" style="width:2cm"><p>{{ name }}</p>')
    pdf = renderer_for(job).render("logo.html", ROW)
    logo = (job / "templates" / "logo.png").resolve().as_posix()
    assert pdf.resources == {logo: hashlib.sha256(PNG).hexdigest()}
    page: Any = pypdf.PdfReader(io.BytesIO(pdf.data)).pages[0]
    assert len(page.images) == 1


def test_a_data_url_is_fine(job: Path) -> None:
    src = "data:image/png;base64," + base64.b64encode(PNG).decode()
    write_template(job, "inline.html", f'<img src="{src}"><p>x</p>')
    page: Any = pypdf.PdfReader(io.BytesIO(renderer_for(job).render("inline.html", {}).data))
    assert len(page.pages[0].images) == 1


@pytest.mark.parametrize(
    ("markup", "named"),
    [
        ('<img src="http://127.0.0.1:9/logo.png">', "http://127.0.0.1:9/logo.png"),
        ('<link rel="stylesheet" href="https://example.com/x.css">', "https://example.com/x.css"),
        ('<img src="../../secret.png">', "secret.png"),
        ('<img src="file:///etc/hostname">', "/etc/hostname"),
        ("<style>@import url(http://127.0.0.1:9/a.css);</style>", "http://127.0.0.1:9/a.css"),
        ('<img src="missing.png">', "missing.png"),
    ],
)
def test_a_resource_outside_the_folder_or_missing_is_an_error_naming_it(
    job: Path, markup: str, named: str
) -> None:
    (job.parent / "secret.png").write_bytes(PNG)
    write_template(job, "bad.html", f"<html><head></head><body>{markup}<p>x</p></body></html>")
    with pytest.raises(DocumentError, match="cannot load a resource") as caught:
        renderer_for(job).render("bad.html", {})
    assert named in str(caught.value)


def test_a_symlink_leading_out_of_the_folder_is_refused(job: Path) -> None:
    (job.parent / "outside.png").write_bytes(PNG)
    (job / "templates" / "link.png").symlink_to(job.parent / "outside.png")
    write_template(job, "link.html", '<img src="link.png"><p>x</p>')
    with pytest.raises(DocumentError, match="outside the job's folder"):
        renderer_for(job).render("link.html", {})


def test_render_pdf_keeps_resources_in_roots_while_urls_resolve_in_base_dir(job: Path) -> None:
    html = '<img src="logo.png"><p>x</p>'
    assert render_pdf(html, base_dir=job / "templates").resources
    assert render_pdf(html, base_dir=job / "templates", roots=[job / "a", job]).resources
    with pytest.raises(DocumentError, match="outside"):
        render_pdf(html, base_dir=job / "templates", roots=[job / "elsewhere"])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("<p>{{ nobody }}</p>", "missing value"),
        ("<p>{% if %}</p>", "template syntax error"),
        ("<p>{{ amount|money }}</p>", "not an amount"),
        ("<p>{{ ''.__class__.__mro__ }}</p>", "not allowed|missing value"),
    ],
)
def test_template_problems_are_document_errors(job: Path, source: str, message: str) -> None:
    write_template(job, "broken.html", source)
    with pytest.raises(DocumentError, match=message):
        renderer_for(job).render("broken.html", {"amount": "lots"})


def test_a_missing_template_is_a_document_error(job: Path) -> None:
    with pytest.raises(DocumentError, match=r"template not found: nope\.html"):
        renderer_for(job).render("nope.html", ROW)


# --- limits and names -----------------------------------------------------------------------


def test_check_size() -> None:
    assert check_size(SIGNATURE_LIMIT, limit=SIGNATURE_LIMIT) is None
    message = check_size(SIGNATURE_LIMIT + 1, limit=SIGNATURE_LIMIT, what="Contrato 1.pdf")
    assert message == "Contrato 1.pdf is 10.0 MB, over the limit of 10.0 MB"
    assert check_size(5000, limit=4000) == "document is 5,000 bytes, over the limit of 4,000 bytes"


def test_an_over_size_document_is_an_error_and_is_not_stored(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DocumentError, match=r"Carta\.pdf is .* over the limit of 1,000 bytes"):
        renderer_for(job).produce(out, "C-1001", "letter.html", "Carta.pdf", ROW, limit=1000)
    assert not document_path(out, "C-1001", "Carta.pdf").exists()


@pytest.mark.parametrize("name", ["", "  ", "a/b.pdf", "..\\x.pdf", ".hidden.pdf", "a\nb.pdf"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(name: str) -> None:
    with pytest.raises(DocumentError, match="document name"):
        check_name(name)


# --- the store ------------------------------------------------------------------------------


def test_produce_stores_the_pdf_under_the_key_with_its_hash(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = renderer_for(job).produce(out, "C/1001", "letter.html", "Carta 1.pdf", ROW)
    assert doc.path == document_path(out, "C/1001", "Carta 1.pdf")
    assert doc.path.parent.parent == out / "documents"
    assert doc.path.name == "Carta 1.pdf"
    data = doc.path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == doc.sha256
    assert doc.size == len(data)
    assert not doc.reused
    assert read_if_unchanged(doc.path, doc.sha256) == data
    assert read_if_unchanged(doc.path, "0" * 64) is None
    assert read_if_unchanged(doc.path.with_name("other.pdf"), doc.sha256) is None


def test_produce_renders_again_only_what_changed(job: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    renderer = renderer_for(job)

    def produce(row: dict[str, str]) -> Any:
        return renderer.produce(out, "C-1001", "letter.html", "Carta.pdf", row)

    first = produce(ROW)
    stamp = first.path.stat().st_mtime_ns
    again = produce(ROW)
    assert again.reused and again.sha256 == first.sha256
    assert first.path.stat().st_mtime_ns == stamp  # not written again

    changed = produce(ROW | {"amount": "99"})
    assert not changed.reused and changed.sha256 != first.sha256
    assert "99.00 EUR" in text_of(changed.path.read_bytes())

    back = produce(ROW)
    assert not back.reused and back.sha256 == first.sha256  # same bytes as the first time

    css = job / "templates" / "letter.css"
    css.write_text(CSS.replace("2cm", "3cm"), encoding="utf-8")
    assert not produce(ROW).reused  # a resource changed
    assert produce(ROW).reused

    first.path.write_bytes(b"%PDF-tampered")
    fixed = produce(ROW)
    assert not fixed.reused
    assert hashlib.sha256(fixed.path.read_bytes()).hexdigest() == fixed.sha256


# --- many rows ------------------------------------------------------------------------------


def _tasks(count: int, *, bad: frozenset[int] = frozenset()) -> list[DocumentTask]:
    tasks = []
    for i in range(1, count + 1):
        row = ROW | {"id": f"C-{i:04d}", "name": f"Persona {i}", "amount": str(100 + i)}
        if i in bad:
            row["amount"] = "not money"
        tasks.append(
            DocumentTask(i, row["id"], "document", "letter.html", f"Carta {row['id']}.pdf", row)
        )
    return tasks


@pytest.mark.parametrize("workers", [1, 2])
def test_render_many_yields_every_row_in_order_with_row_errors(
    job: Path, tmp_path: Path, workers: int
) -> None:
    out = tmp_path / "out"
    results = list(
        render_many(
            _tasks(7, bad=frozenset({4})),
            make_renderer=functools.partial(renderer_for, job),
            output_dir=out,
            workers=workers,
            chunk_size=2,
        )
    )
    assert [r.row for r in results] == list(range(1, 8))
    error = results[3].error
    assert isinstance(error, RowError)
    assert (error.row, error.key, error.field) == (4, "C-0004", "document")
    assert "not an amount" in error.message
    for result in results[:3] + results[4:]:
        assert result.error is None and result.document is not None
        assert f"Persona {result.row}" in text_of(result.document.path.read_bytes())


def test_render_many_gives_the_same_bytes_with_one_or_two_processes(
    job: Path, tmp_path: Path
) -> None:
    hashes = []
    for workers in (1, 2):
        results = render_many(
            _tasks(4),
            make_renderer=functools.partial(renderer_for, job),
            output_dir=tmp_path / f"out{workers}",
            workers=workers,
        )
        hashes.append([r.document.sha256 for r in results if r.document])
    assert len(hashes[0]) == 4
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize("workers", [1, 2])
def test_render_many_stops_when_asked(job: Path, tmp_path: Path, workers: int) -> None:
    stop = threading.Event()
    results = render_many(
        _tasks(40),
        make_renderer=functools.partial(renderer_for, job),
        output_dir=tmp_path / "out",
        workers=workers,
        chunk_size=1,
        stop=stop,
    )
    first = next(results)
    assert first.row == 1
    stop.set()
    with pytest.raises(WorkPending, match="interrupted after 1 document"):
        list(results)
    stored = list((tmp_path / "out" / "documents").iterdir())
    assert len(stored) < 40  # what was not started never ran
