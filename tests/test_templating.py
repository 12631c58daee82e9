"""The Jinja environment: sandboxed, bounded, confined to its folders, and locale-aware."""

from __future__ import annotations

import os
import signal
import threading
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.exceptions import SecurityError
from jinja2.runtime import new_context

from batch.template_bounds import MAX_SECONDS, TICKS
from batch.templating import (
    MAX_OUTPUT_CHARS,
    FilterValueError,
    TemplateLimitError,
    TemplateOutsideError,
    explain,
    finalize,
    make_environments,
    render_bounded,
    render_limits,
    rows_timed,
    template_dirs,
)

NBSP = "\u00a0"

# Known Jinja2 SSTI payloads (PayloadsAllTheThings' "Jinja2" section and variants of it).
SSTI_PAYLOADS = [
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ lipsum.__globals__.os.environ.get('LEGALLYMAIL_TOKEN') }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__.os.popen('id').read() }}",
    "{{ namespace.__init__.__globals__.os.popen('id').read() }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').popen('id').read() }}",
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch x') }}",
    "{{ self._TemplateReference__context }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ dict.__base__.__subclasses__() }}",
    "{{ dict.mro() }}",
    "{{ range.__globals__ }}",
    "{{ ''['__class__'] }}",
    "{{ ''['\\x5f\\x5fclass\\x5f\\x5f'] }}",
    "{{ ''|attr('__class__') }}",
    "{{ ''|attr('\\x5f\\x5fclass\\x5f\\x5f')|attr('\\x5f\\x5fmro\\x5f\\x5f') }}",
    "{{ '{0.__class__}'.format('') }}",
    "{{ '{x.__class__.__mro__}'.format_map({'x': ''}) }}",
    "{{ ['a']|map(attribute='__class__')|list }}",
    "{{ name.__class__ }}",
    "{{ period.__class__.__init__.__globals__ }}",
    "{% for c in ''.__class__.__mro__[1].__subclasses__() %}{{ c }}{% endfor %}",
    "{% set x = namespace() %}{{ x.__init__ }}",
    "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "{{ request.__class__.__init__.__globals__ }}",
]


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    (folder / "templates").mkdir(parents=True)
    (folder / "templates" / "body.html").write_text("<p>{{ name }}</p>\n")
    return folder


def text_env(**kwargs: Any) -> jinja2.Environment:
    return make_environments(Path("."), **kwargs)[0]


def render(source: str, **variables: Any) -> str:
    return text_env().from_string(source).render(name="Ana", **variables)


# --- sandbox --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payloads_raise_security_error_in_a_subject(payload: str) -> None:
    with pytest.raises(SecurityError):
        render("Notice " + payload)


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payloads_raise_security_error_in_an_html_body_file(
    job_dir: Path, payload: str
) -> None:
    (job_dir / "templates" / "evil.html").write_text(f"<p>{payload}</p>")
    _, html = make_environments(job_dir)
    with pytest.raises(SecurityError):
        html.get_template("evil.html").render(name="Ana", period=None)


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_ssti_payloads_raise_security_error_in_a_campaign_name(payload: str) -> None:
    now = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
    template = text_env().from_string("rent-" + payload)
    with pytest.raises(SecurityError):
        template.render(today=now.date(), now=now, period=None, name="Ana")


def test_no_payload_leaves_a_file_behind(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system(cmd) }}"
    with pytest.raises(SecurityError):
        render(payload, cmd=f"touch {marker}")
    assert not marker.exists()


def test_security_error_names_the_attribute() -> None:
    with pytest.raises(SecurityError, match="'__class__'"):
        render("{{ name.__class__ }}")


@pytest.mark.parametrize("name", ["lipsum", "cycler", "joiner"])
def test_dangerous_globals_are_gone(name: str) -> None:
    assert name not in text_env().globals


def test_harmless_globals_and_filters_still_work() -> None:
    source = (
        "{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}"
        "{{ ns.n }} {{ dict(a=1)['a'] }} {{ name|upper }} {{ [3, 1]|sort|join(',') }} "
        "{{ '{:>4}'.format(name) }} {{ '%s!' % name }} {{ name ~ '.' }} {{ 'ab' * 2 }}"
    )
    assert render(source) == "3 1 ANA 1,3  Ana Ana! Ana. abab"


def test_a_name_that_is_not_there_is_only_undefined() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'request' is undefined"):
        render("{{ request.application.__globals__.__builtins__ }}")


BUILTIN_FILTER_USES = [
    "{{ 'a b c'|wordwrap(1) }}",
    "{{ x|tojson }}",
    "{{ 'see http://x.org'|urlize }}",
    "{{ {'a': 1}|xmlattr }}",
    "{{ x|upper }}",
    "{{ x|e }}",
    "{{ x|striptags }}",
    "{{ x|center(7) }}",
    "{{ 'a\nb'|indent(2, true) }}",
    "{{ x|replace('<', '[') }}",
    "{{ [x, 'c']|join('|') }}",
    "{{ '%s!'|format(x) }}",
    "{{ x|string|length }}",
    "{{ x|pprint }}",
    "{{ ' x '|trim }}",
    "{{ 'a b'|title }}",
    "{{ 'a b'|capitalize }}",
    "{{ 'a b'|urlencode }}",
    "{{ x|forceescape }}",
    "{{ x|safe }}",
    "{{ x|lower }}",
    "{{ ','.join(range(3)|map('string')) }}",
    "{{ ','.join(['a', x]) }}",
    "{{ 'a' ~ x ~ 1 }}",
    "{{ dict(a=1).values() }}",
    "{{ namespace(a=1) }}",
]


@pytest.mark.parametrize("source", BUILTIN_FILTER_USES)
def test_bounded_builtin_filters_render_as_jinja_does(source: str) -> None:
    _, html = make_environments(Path("."))
    plain = jinja2.Environment(autoescape=True)
    assert html.from_string(source).render(x="a<b>") == plain.from_string(source).render(x="a<b>")


def test_dict_keys_starting_with_an_underscore_are_data() -> None:
    assert render("{{ row['_id'] }}", row={"_id": 7}) == "7"


def test_html_body_is_still_autoescaped(job_dir: Path) -> None:
    _, html = make_environments(job_dir)
    assert html.get_template("body.html").render(name="<b>&") == "<p>&lt;b&gt;&amp;</p>\n"


def test_plain_text_keeps_trailing_newline_and_prints_none_as_nothing() -> None:
    assert render("{{ x }}|\n", x=None) == "|\n"
    assert finalize(None) == ""
    assert finalize("a") == "a"


def test_missing_variables_are_strict() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'ref' is undefined"):
        render("{{ ref }}")


def test_compiled_fast_path_renders_like_template_render(job_dir: Path) -> None:
    # render.py's _Compiled calls new_context + root_render_func + env.concat directly.
    _, html = make_environments(job_dir)
    template = html.get_template("body.html")
    context = new_context(html, template.name, template.blocks, {"name": "Cy"}, shared=True)
    assert html.concat(template.root_render_func(context)) == template.render(name="Cy")


# --- bounds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ 10**9 * 'x' }}",
        "{% set a = ['x' * 10**6] %}{% set b = [a, a, a, a, a, a, a, a, a, a] %}"
        "{% set c = [b, b, b, b, b, b, b, b, b, b] %}{{ (c ~ '')|length }}",
        "{% set s = 'x' * 10**6 %}{{ dict(a=s, b=s, c=s).values() }}",
        "{% set s = 'x' * 10**6 %}{{ namespace(a=[s, s, s]) }}",
        "{% set s = 'x' * 10**6 %}{{ ''.join(range(3)|map('string')|map('replace', '', s)) }}",
        "{{ ['x'] * 10**9 }}",
        "{{ 'x'|center(10**9) }}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x'.zfill(10**9) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%*d' % (10**9, 1) }}",
        "{{ '%0999999999d'|format(1) }}",
        "{{ '{:>999999999}'.format(1) }}",
        "{{ '{:>{}}'.format(1, 10**9) }}",
        "{{ ('x' * 10**6).replace('x', 'y' * 10**6) }}",
        "{{ ('x' * 10**6)|replace('x', 'yy') }}",
        "{{ ('x\n' * 10**5)|indent(100) }}",
        "{{ [('x' * 10**6)] * 3 }}",
        "{% set s = 'x' * 10**6 %}{{ [s, s, s]|join }}",
        "{% set s = 'x' * 10**6 %}{{ [s, s, s]|string }}",
        "{% set s = 'x' * 10**6 %}{{ s ~ s ~ s }}",
        "{% set s = 'x' * 10**6 %}{{ s + s + s }}",
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}"
        "{% endif %}{% endmacro %}{{ d('x', 40) }}",
        "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endmacro %}"
        "{{ m()|length }}",
        "{% set s %}{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}{% endset %}",
        "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
        "{{ 2 ** (10**9) }}",
        "{% for i in range(10**12) %}{% endfor %}",
        "{% for i in range(10**30) %}{% endfor %}",
    ],
)
def test_costly_templates_fail_fast_with_a_limit_error(source: str) -> None:
    with pytest.raises(TemplateLimitError):
        render(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'x' * 10**9 }}",
        "{{ 'x'|center(10**9) }}",
        "{{ ('x' * 10**6).replace('x', 'y' * 10**6) }}",
    ],
)
def test_a_huge_string_is_refused_before_it_is_built(source: str) -> None:
    template = text_env().from_string(source)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateLimitError):
            template.render()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000


def test_limit_errors_are_filter_value_errors_with_a_readable_message() -> None:
    with pytest.raises(FilterValueError, match="template output over 2 MB"):
        render("{{ 'x' * 10**9 }}")


def test_output_just_under_the_limit_renders() -> None:
    assert len(render("{{ 'x' * n }}", n=MAX_OUTPUT_CHARS - 10)) == MAX_OUTPUT_CHARS - 10


def test_a_row_that_runs_too_long_is_stopped_by_the_time_limit() -> None:
    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    template = text_env().from_string(loop)
    with pytest.raises(TemplateLimitError, match=r"took over 0\.05 s"):
        render_bounded(template, {}, max_seconds=0.05)


def test_the_timer_is_disarmed_after_the_row() -> None:
    with render_limits(30):
        assert signal.getitimer(signal.ITIMER_PROF)[0] > 0
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_nested_limits_keep_the_outer_timer() -> None:
    with render_limits(30):
        with render_limits(1):
            pass
        assert signal.getitimer(signal.ITIMER_PROF)[0] > 1
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_rows_in_a_timed_block_share_one_interval_timer_and_each_has_its_limit() -> None:
    loop = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    template = text_env().from_string(loop)
    with rows_timed():
        tick = signal.getitimer(signal.ITIMER_PROF)[1]
        assert tick == pytest.approx(MAX_SECONDS / TICKS)
        for _ in range(3):  # rows arm nothing: the interval timer keeps running
            with render_limits():
                pass
        assert signal.getitimer(signal.ITIMER_PROF)[1] == tick
        with pytest.raises(TemplateLimitError, match=r"took over 0\.5 s"):
            render_bounded(template, {}, max_seconds=0.5)  # one tick
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_render_bounded_takes_a_compiled_callable() -> None:
    assert render_bounded(lambda v: f"hi {v['name']}", {"name": "Ana"}) == "hi Ana"


def test_outside_the_main_thread_limits_still_bound_size() -> None:
    caught: list[BaseException] = []

    def work() -> None:
        try:
            with render_limits():
                render("{{ 'x' * 10**9 }}")
        except TemplateLimitError as err:
            caught.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert len(caught) == 1


def test_a_row_budget_stops_many_large_fields() -> None:
    template = text_env().from_string("{{ ('x' * 1900000)|length }}")
    with pytest.raises(TemplateLimitError, match="built over"), render_limits():
        for _ in range(20):
            template.render()
    for _ in range(20):  # outside render_limits only the per-field bound applies
        template.render()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ name.__class__ }}", "not allowed in a template: templates may not use '__class__'"),
        ("{{ ref }}", "variable 'ref' is missing from the row (no such column)"),
        ("{{ 'x' * 10**9 }}", "template output over 2 MB"),
        ("{{ name|money }}", "money: not an amount: 'Ana'"),
        ("{{ 1 / 0 }}", "cannot render: division by zero"),
        ("{{ range(10**12) }}", "range() of more than 100,000 items"),
    ],
)
def test_explain_gives_the_row_error_message(source: str, message: str) -> None:
    with pytest.raises(Exception) as err:
        render(source)
    assert isinstance(err.value, Exception)
    assert explain(err.value).startswith(message)


# --- loader ---------------------------------------------------------------------------------


def test_template_dirs_are_the_job_folder_and_the_templates_folders(job_dir: Path) -> None:
    base = job_dir.resolve()
    assert template_dirs(job_dir) == [base, base / "templates", base.parent / "templates"]


def test_a_template_symlink_leading_out_of_the_folders_is_refused(
    job_dir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN=abc")
    os.symlink(secret, job_dir / "templates" / "leak.html")
    _, html = make_environments(job_dir)
    with pytest.raises(TemplateOutsideError, match="outside the template folders") as err:
        html.get_template("leak.html")
    assert isinstance(err.value, jinja2.TemplateNotFound)  # jobfile's handler still catches it
    assert isinstance(err.value, SecurityError)


def test_an_include_through_a_symlink_is_refused_too(job_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.html").write_text("outside")
    os.symlink(tmp_path / "elsewhere", job_dir / "templates" / "linked")
    (job_dir / "templates" / "main.html").write_text("{% include 'linked/x.html' %}")
    _, html = make_environments(job_dir)
    with pytest.raises(TemplateOutsideError):
        html.get_template("main.html").render()


@pytest.mark.parametrize("name", [".env", ".secrets/token.txt"])
def test_hidden_files_are_not_templates(job_dir: Path, name: str) -> None:
    path = job_dir / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("LEGALLYMAIL_TOKEN=abc")
    (job_dir / "templates" / "inc.html").write_text("{% include '" + name + "' %}")
    _, html = make_environments(job_dir)
    with pytest.raises(TemplateOutsideError, match="hidden file"):
        html.get_template("inc.html").render()


def test_a_job_folder_inside_a_hidden_folder_still_works(tmp_path: Path) -> None:
    folder = tmp_path / ".jobs" / "rent"
    folder.mkdir(parents=True)
    (folder / "body.html").write_text("ok")
    _, html = make_environments(folder)
    assert html.get_template("body.html").render() == "ok"


def test_a_symlink_between_template_folders_is_fine(job_dir: Path) -> None:
    shared = job_dir.parent / "templates"
    shared.mkdir()
    (shared / "footer.html").write_text("footer")
    os.symlink(shared / "footer.html", job_dir / "templates" / "f.html")
    _, html = make_environments(job_dir)
    assert html.get_template("f.html").render() == "footer"


@pytest.mark.parametrize("name", ["nope.html", "../secret.txt", "/etc/passwd", "a/../../x"])
def test_a_missing_or_escaping_name_is_not_found(job_dir: Path, name: str) -> None:
    (job_dir.parent / "secret.txt").write_text("TOKEN=abc")
    _, html = make_environments(job_dir)
    with pytest.raises(jinja2.TemplateNotFound):
        html.get_template(name)
    (job_dir / "templates" / "inc.html").write_text("{% include '" + name + "' %}")
    with pytest.raises(jinja2.TemplateNotFound):
        html.get_template("inc.html").render()


# --- the filters in templates ------------------------------------------------------------


def test_filters_follow_the_environment_settings() -> None:
    env = text_env(locale="es_ES", decimal=",", date_format="%d/%m/%Y")
    source = "{{ amount|money('EUR') }} · {{ n|number }} · {{ due|date('long') }}"
    out = env.from_string(source).render(amount="1.234,5", n="2,5", due="29/11/2026")
    assert out == f"1.234,50{NBSP}€ · 2,5 · 29 de noviembre de 2026"


def test_filter_errors_in_templates_are_filter_value_errors() -> None:
    with pytest.raises(FilterValueError, match="thousands separator"):
        render("{{ amount|money }}", amount="1.234")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"locale": "xx_YY"}, "unknown locale 'xx_YY'"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"decimal": ";"}, "decimal must be"),
    ],
)
def test_bad_settings_are_value_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_environments(Path("."), **kwargs)
