"""Generated documents: one PDF per row from an HTML + CSS template, reproducible to the byte.

A template is rendered by the job's Jinja environment (the same filters, locale and sandbox
as the bodies) and laid out by WeasyPrint: page size, margins, header and footer come from
the template's CSS `@page` rules, and the fonts used are embedded (subset) in the file.

Resources (images, stylesheets, fonts named by `@font-face`) load only through
`_FolderFetcher`: `file:` URLs inside the job's folder and `data:` URLs. Anything else
(http, https, a file outside the folder, a link leading out of it) stops the rendering with
a DocumentError naming the resource, which the channel reports as a row error. A missing file
inside the folder is an error too: a letter without its logo must not go out.

The same row and template give the same bytes on every run (and every machine with the same
WeasyPrint, fonts and libraries), so a generated document hashes, groups and goes out exactly
once like a body does:
  - no creation or modification date: the template's `dcterms.created/modified` metadata is
    dropped;
  - the trailer's /ID is the MD5 of the file's own bytes (`pdf_identifier=True`), not random;
  - WeasyPrint names subset fonts by a hash of their glyphs; but fontTools, which rewrites
    fonts when HarfBuzz-subset is missing and for variable or colour fonts, stamps each font's
    `head.modified` with the clock. It honours the reproducible-builds convention
    SOURCE_DATE_EPOCH, so `render_pdf` sets it (unless already set) to a fixed time.

Rendered files are kept as `<output>/<campaign>/documents/<key>/<name>` (key made safe as for
certificates), written atomically, with a hidden sidecar `.<name>.json` recording the SHA-256
of the HTML it came from, of every resource it loaded and of the PDF: `DocumentRenderer.produce`
returns the stored bytes when none of them changed, and renders again otherwise. A WeasyPrint
or font upgrade alone does not render stored documents again: what `validate` produced is
what `run` sends.
`render_many` renders a list of rows in a process pool, a few rows per task, stoppable.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import multiprocessing
import multiprocessing.context
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import jinja2
from jinja2.exceptions import SecurityError

from batch.certificates import safe_name
from batch.errors import InputError, RowError, WorkPending
from batch.files import write_atomic

FOLDER = "documents"
SIGNATURE_LIMIT = 10 * 1024 * 1024  # the API refuses signature documents over 10 MB
# fontTools' `head.modified` for fonts it rewrites: 2000-01-01T00:00:00Z, any fixed time works.
_FONT_EPOCH = "946684800"
_SIDECAR_VERSION = 1


class DocumentError(InputError):
    """A document cannot be generated for a row (template, resource, name or size)."""


# --- rendering one PDF ----------------------------------------------------------------------


def _weasyprint() -> Any:
    # Imported on first use: loading Pango and fontconfig costs ~0.3 s that commands without
    # documents should not pay, and a machine without Pango still runs every other job.
    os.environ.setdefault("SOURCE_DATE_EPOCH", _FONT_EPOCH)  # see the module docstring
    try:
        import weasyprint  # type: ignore[import-untyped]
    except OSError as err:  # cffi could not load Pango or HarfBuzz
        raise DocumentError(
            f"cannot load WeasyPrint's libraries: {err}",
            hint="install Pango (`bash .ci/install-pango`, or "
            "`apt-get install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0`)",
        ) from err
    return weasyprint


def _fetcher_class() -> type[Any]:
    weasyprint = _weasyprint()
    base: type[Any] = weasyprint.urls.URLFetcher

    class FolderFetcher(base):  # type: ignore[misc]
        """Serves `file:` URLs inside `roots` and `data:` URLs; refuses everything else."""

        def __init__(self, roots: tuple[Path, ...]) -> None:
            # fail_on_errors: a refused or missing resource stops the rendering instead of
            # leaving a blank where WeasyPrint would only log a warning.
            super().__init__(allowed_protocols=("data",), fail_on_errors=True)
            self.roots = roots
            self.loaded: dict[str, str] = {}  # absolute path -> SHA-256
            self.refused: str | None = None

        def fetch(self, url: str, headers: Any = None) -> Any:
            try:
                return self._fetch(url, headers)
            except Exception as err:
                self.refused = self.refused or str(err)
                raise

        def _fetch(self, url: str, headers: Any) -> Any:
            scheme = urlsplit(url).scheme.lower()
            if scheme == "data":
                return super().fetch(url, headers)
            if scheme != "file":
                raise ValueError(f"{url!r} is not in the job's folder (no network fetches)")
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise ValueError(f"{url!r} is not in the job's folder")
            path = Path(url2pathname(unquote(parts.path))).resolve()
            # resolve() follows `..` and symlinks, so a link leading out is caught too.
            if not any(path.is_relative_to(root) for root in self.roots):
                shown = ", ".join(str(root) for root in self.roots)
                raise ValueError(f"{path} is outside the job's folder ({shown})")
            try:
                data = path.read_bytes()
            except OSError as err:
                raise ValueError(f"{path}: {err.strerror or err}") from err
            self.loaded[path.as_posix()] = hashlib.sha256(data).hexdigest()
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return weasyprint.urls.URLFetcherResponse(
                path.as_uri(), body=data, headers={"Content-Type": kind}
            )

    return FolderFetcher


_fetcher_type: type[Any] | None = None


def _new_fetcher(roots: tuple[Path, ...]) -> Any:
    global _fetcher_type
    if _fetcher_type is None:
        _fetcher_type = _fetcher_class()
    return _fetcher_type(roots)


@dataclass(frozen=True)
class Rendered:
    """A rendered PDF and what went into it: the resources it loaded, with their SHA-256."""

    data: bytes
    sha256: str
    resources: dict[str, str] = field(default_factory=dict)


def render_pdf(html: str, *, base_dir: Path, roots: Sequence[Path] = ()) -> Rendered:
    """Lay out `html` as a PDF; relative URLs resolve in `base_dir`, resources stay in `roots`.

    `roots` (default: `base_dir`) are the folders resources may come from. DocumentError names a
    refused or missing resource, or what WeasyPrint could not lay out.
    """
    weasyprint = _weasyprint()
    base = base_dir.resolve()
    fetcher = _new_fetcher(tuple(r.resolve() for r in roots) or (base,))
    try:
        document = weasyprint.HTML(
            string=html, base_url=base.as_uri() + "/", url_fetcher=fetcher
        ).render()
        document.metadata.created = None
        document.metadata.modified = None
        data: bytes = document.write_pdf(pdf_identifier=True)
    except weasyprint.urls.FatalURLFetchingError as err:
        raise DocumentError(f"cannot load a resource: {fetcher.refused or err}") from err
    except Exception as err:  # WeasyPrint's own errors have no common base class
        if fetcher.refused:
            raise DocumentError(f"cannot load a resource: {fetcher.refused}") from err
        raise DocumentError(f"cannot lay out the document: {type(err).__name__}: {err}") from err
    return Rendered(data, hashlib.sha256(data).hexdigest(), dict(sorted(fetcher.loaded.items())))


# --- limits and names -------------------------------------------------------------------------


def check_size(size: int, *, limit: int, what: str = "document") -> str | None:
    """An error message when `size` bytes exceed `limit`, else None."""
    if size <= limit:
        return None
    return f"{what} is {_mb(size)}, over the limit of {_mb(limit)}"


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB" if size >= 100 * 1024 else f"{size:,} bytes"


def check_name(name: str) -> str:
    """The document's file name, stripped; DocumentError when it cannot be a file name."""
    clean = name.strip()
    if not clean:
        raise DocumentError("document name is empty")
    if "/" in clean or "\\" in clean or clean.startswith(".") or len(clean.encode()) > 200:
        raise DocumentError(
            f"document name {clean!r} must be a plain file name "
            "(no `/` or `\\`, not starting with `.`, at most 200 bytes)"
        )
    if any(ord(c) < 32 for c in clean):
        raise DocumentError(f"document name {clean!r} holds a control character")
    return clean


# --- the store --------------------------------------------------------------------------------


def document_path(output_dir: Path, key: str, name: str) -> Path:
    """Where `key`'s document `name` is kept: `<output_dir>/documents/<safe key>/<name>`."""
    return output_dir / FOLDER / safe_name(key) / check_name(name)


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_if_unchanged(path: Path, sha256: str) -> bytes | None:
    """The stored file's bytes when their SHA-256 is `sha256`; None if missing or different."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.json")


@dataclass(frozen=True)
class Document:
    """One row's generated document as stored: where, its SHA-256 and size."""

    name: str
    path: Path
    sha256: str
    size: int
    reused: bool  # the stored file was still current: not rendered again


class DocumentRenderer:
    """Renders named templates with a row's variables to PDF, through a given environment.

    `env` is the job's (sandboxed) HTML environment; `roots` are the folders resources may
    come from: the job's folder and its template folders (`batch.jobfile.template_dirs`).
    from. Relative URLs in a template resolve next to the template file.
    """

    def __init__(self, env: jinja2.Environment, *, roots: Sequence[Path]) -> None:
        self.env = env
        if not roots:
            raise ValueError("a DocumentRenderer needs at least one folder for resources")
        self.roots = tuple(r.resolve() for r in roots)
        self._resource_hashes: dict[Path, tuple[int, int, str]] = {}

    def html(self, template: str, variables: Mapping[str, Any]) -> tuple[str, Path]:
        """The template rendered to HTML, and the folder its relative URLs resolve in."""
        try:
            compiled = self.env.get_template(template)
            text = compiled.render(variables)
        except jinja2.TemplateNotFound as err:
            raise DocumentError(f"template not found: {err.name}") from err
        except jinja2.TemplateSyntaxError as err:
            where = f"{err.filename or template}:{err.lineno}"
            raise DocumentError(f"{where}: template syntax error: {err.message}") from err
        except jinja2.UndefinedError as err:
            raise DocumentError(f"{template}: missing value: {err.message}") from err
        except SecurityError as err:
            raise DocumentError(f"{template}: not allowed: {err}") from err
        except jinja2.TemplateError as err:
            raise DocumentError(f"{template}: {err}") from err
        except (ValueError, TypeError, ArithmeticError) as err:  # a filter refused a value
            raise DocumentError(f"{template}: {err}") from err
        folder = Path(compiled.filename).parent if compiled.filename else self.roots[0]
        return text, folder

    def render(self, template: str, variables: Mapping[str, Any]) -> Rendered:
        """The template rendered to PDF for one row; DocumentError on any problem."""
        text, folder = self.html(template, variables)
        return render_pdf(text, base_dir=folder, roots=self.roots)

    def produce(
        self,
        output_dir: Path,
        key: str,
        template: str,
        name: str,
        variables: Mapping[str, Any],
        *,
        limit: int | None = None,
    ) -> Document:
        """Render and store `key`'s document, or return the stored one if nothing changed.

        DocumentError when the template fails, a resource is refused, or the PDF is over
        `limit` bytes (an over-size PDF is not stored).
        """
        path = document_path(output_dir, key, name)
        text, folder = self.html(template, variables)
        html_sha = hashlib.sha256(text.encode()).hexdigest()
        stored = self._current(path, html_sha)
        if stored is not None:
            problem = check_size(stored[1], limit=limit, what=path.name) if limit else None
            if problem:
                raise DocumentError(problem)
            return Document(path.name, path, stored[0], stored[1], reused=True)
        rendered = render_pdf(text, base_dir=folder, roots=self.roots)
        problem = check_size(len(rendered.data), limit=limit, what=path.name) if limit else None
        if problem:
            raise DocumentError(problem)
        write_atomic(path, rendered.data)
        record = {
            "v": _SIDECAR_VERSION,
            "html_sha256": html_sha,
            "resources": rendered.resources,
            "sha256": rendered.sha256,
        }
        write_atomic(_sidecar(path), json.dumps(record, sort_keys=True).encode())
        return Document(path.name, path, rendered.sha256, len(rendered.data), reused=False)

    def _current(self, path: Path, html_sha: str) -> tuple[str, int] | None:
        """(SHA-256, size) of the stored PDF when its HTML, resources and bytes are unchanged."""
        try:
            record = json.loads(_sidecar(path).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or record.get("v") != _SIDECAR_VERSION:
            return None
        if record.get("html_sha256") != html_sha:
            return None
        resources = record.get("resources")
        if not isinstance(resources, dict):
            return None
        for resource, sha in resources.items():
            if self._resource_sha(Path(resource)) != sha:
                return None
        expected = str(record.get("sha256"))
        try:
            size = path.stat().st_size
            actual = sha256_file(path)
        except OSError:
            return None
        return (actual, size) if actual == expected else None

    def _resource_sha(self, path: Path) -> str | None:
        # Rows share their logo and stylesheet: hash each once per change of size or mtime.
        try:
            stat = path.stat()
        except OSError:
            return None
        hit = self._resource_hashes.get(path)
        if hit and hit[:2] == (stat.st_size, stat.st_mtime_ns):
            return hit[2]
        sha = sha256_file(path)
        self._resource_hashes[path] = (stat.st_size, stat.st_mtime_ns, sha)
        return sha


# --- many rows in parallel --------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentTask:
    """One document to produce: the row's place, the template, the file name and variables."""

    row: int
    key: str
    field: str  # where the row error points, e.g. `document` or `message.attachments[0]`
    template: str
    name: str  # already rendered
    variables: dict[str, Any]
    limit: int | None = None


@dataclass(frozen=True)
class DocumentResult:
    """What producing one task gave: the stored document, or the row's error."""

    row: int
    key: str
    field: str
    document: Document | None
    error: RowError | None


def produce_one(renderer: DocumentRenderer, output_dir: Path, task: DocumentTask) -> DocumentResult:
    """Produce one task's document, turning a DocumentError into the row's error."""
    try:
        name = check_name(task.name)
        document = renderer.produce(
            output_dir, task.key, task.template, name, task.variables, limit=task.limit
        )
    except DocumentError as err:
        error = RowError(task.row, task.key, task.field, err.message)
        return DocumentResult(task.row, task.key, task.field, None, error)
    return DocumentResult(task.row, task.key, task.field, document, None)


_worker: tuple[DocumentRenderer, Path] | None = None


def _init_worker(make_renderer: Callable[[], DocumentRenderer], output_dir: Path) -> None:
    global _worker
    _worker = (make_renderer(), output_dir)


def _run_chunk(tasks: list[DocumentTask]) -> list[DocumentResult]:
    assert _worker is not None
    renderer, output_dir = _worker
    return [produce_one(renderer, output_dir, task) for task in tasks]


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts a worker in milliseconds (WeasyPrint starts no threads, so forking after
    # it is loaded is safe), as in batch.render; elsewhere spawn is the only safe choice.
    if sys.platform == "linux" and sys.version_info < (3, 12):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def render_many(
    tasks: Iterable[DocumentTask],
    *,
    make_renderer: Callable[[], DocumentRenderer],
    output_dir: Path,
    workers: int = 1,
    chunk_size: int = 8,
    stop: threading.Event | None = None,
) -> Iterator[DocumentResult]:
    """Produce every task's document, yielding results in task order.

    `make_renderer` builds one renderer per worker process (it must pickle: a module-level
    function or a functools.partial). `workers <= 1` renders here, with no pool. Setting
    `stop` cancels what is not started and raises WorkPending once the running chunks end.
    """
    if workers <= 1:
        renderer = make_renderer()
        for done, task in enumerate(tasks):
            if stop is not None and stop.is_set():
                raise _interrupted(done)
            yield produce_one(renderer, output_dir, task)
        return
    yield from _render_pool(tasks, make_renderer, output_dir, workers, chunk_size, stop)


def _render_pool(
    tasks: Iterable[DocumentTask],
    make_renderer: Callable[[], DocumentRenderer],
    output_dir: Path,
    workers: int,
    chunk_size: int,
    stop: threading.Event | None,
) -> Iterator[DocumentResult]:
    # At most two chunks in flight per worker: a 100,000-row job never holds all its tasks,
    # and results come back in order so the caller can record them as they arrive.
    pending: list[Future[list[DocumentResult]]] = []
    done = 0
    source = iter(tasks)
    with ProcessPoolExecutor(
        workers,
        mp_context=_pool_context(),
        initializer=_init_worker,
        initargs=(make_renderer, output_dir),
    ) as pool:
        try:
            while True:
                while len(pending) < 2 * workers:
                    chunk = [t for _, t in zip(range(chunk_size), source, strict=False)]
                    if not chunk:
                        break
                    pending.append(pool.submit(_run_chunk, chunk))
                if not pending:
                    return
                wait([pending[0]], return_when=FIRST_COMPLETED)
                if stop is not None and stop.is_set():
                    raise _interrupted(done)
                results = pending.pop(0).result()
                done += len(results)
                yield from results
        finally:
            for future in pending:
                future.cancel()


def _interrupted(done: int) -> WorkPending:
    return WorkPending(
        f"document rendering interrupted after {done} document(s)",
        hint="run the command again: documents already stored are not rendered again",
    )
