"""`make bench`: lmbatch's performance figures in one table, each with its reproducing command.

    .venv/bin/python bench/run.py                 # every figure, median of 3 runs (~6 min)
    .venv/bin/python bench/run.py --quick         # one run each
    .venv/bin/python bench/run.py --only validate,plan

Data comes from bench/gen_data.py into bench/data/ (git-ignored). This machine is shared and
noisy, so comparisons are ratios measured side by side in the same run, alternating.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gen_data
import polars as pl

from batch.dataset import read_dataset
from batch.jobfile import load_job
from batch.ledger import files as ledger_files
from batch.ledger.history import marker_path
from batch.sandbox import SandboxConfig, running_sandbox

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
BIN = Path(sys.executable).parent
LMBATCH = str(BIN / "lmbatch")
DATA = gen_data.DATA


@dataclass
class Figure:
    """One line of the table."""

    name: str
    value: str
    target: str
    met: bool | None  # None: informative, no target
    command: str


# --- measuring processes ------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    max_rss_mb: float  # the largest single process of the tree (kernel's ru_maxrss)
    tree_rss_mb: float  # the whole tree's RSS, sampled every 50 ms (shared pages counted twice)
    tree_pss_mb: float  # the whole tree's PSS: shared pages split between their users
    stdout: str


def _tree_kb(root: int) -> tuple[int, int]:
    """RSS and PSS (kB) summed over `root` and its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    rss, pss, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def measure(cmd: list[str], *, env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` to completion: wall seconds, peak RSS (largest process and sampled tree)."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as scratch,
    ):
        report = Path(scratch) / "maxrss"
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _LAUNCH, str(report), *cmd],
            stdout=out,
            stderr=err,
            env=env,
            cwd=ROOT,
        )
        peak = [0, 0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                rss, pss = _tree_kb(proc.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {err.read().decode()}")
        max_rss = int(report.read_text()) / 1024
        return Measured(seconds, max_rss, peak[0] / 1024, peak[1] / 1024, out.read().decode())


# Runs a command in a child it forks and writes that child's peak RSS (ru_maxrss, kB) to
# argv[1]. Linux carries ru_maxrss across exec from the spawning process, so a command started
# straight from this one (which may have just built 1M rows of data) would report our peak as
# its own; forked from this small launcher, it starts from the launcher's few MB.
_LAUNCH = """import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


def _py(script: str, *args: object) -> list[str]:
    return [sys.executable, str(BENCH / script), *map(str, args)]


def _median(values: list[float]) -> float:
    return statistics.median(values)


# --- request budget -----------------------------------------------------------------------


@contextmanager
def _sandbox(window: float) -> Iterator[tuple[Any, dict[str, str]]]:
    with (
        running_sandbox(SandboxConfig(rate_limit=10, rate_window=window)) as sandbox,
        tempfile.TemporaryDirectory() as state,
    ):
        env = os.environ | {
            "LEGALLYMAIL_BASE_URL": sandbox.base_url,
            "LEGALLYMAIL_TOKEN": sandbox.token,
            "LMBATCH_STATE_DIR": state,
        }
        yield sandbox, env


def _send_job(rows: int, campaign: str, window: float, *, same: bool = False) -> Path:
    job = gen_data.validate_job(
        gen_data.dataset(rows),
        window_seconds=window,
        campaign=campaign,
        html="same.html" if same else gen_data.TEMPLATE.name,
        subject="New office hours from 1 March 2026" if same else gen_data.SUBJECT,
    )
    _forget(DATA / "output" / campaign)
    return job


def _utilization(requests: list[dict[str, Any]], window: float) -> tuple[float, int, int, float]:
    """(utilization, requests made, 429s, elapsed seconds) from the sandbox's request log."""
    made = [r for r in requests if r["status"] != 429]
    refused = len(requests) - len(made)
    times = [r["at"] for r in requests]
    elapsed = max(times) - min(times)
    return len(made) / (10 * (elapsed / window + 1)), len(made), refused, elapsed


def budget(reps: int) -> list[Figure]:
    """One personalized campaign of 318 sends against a 10-per-second sandbox.

    A run also asks for the credits and the newest send (2 requests): 320 in all, a whole
    number of windows, so the figure measures pacing rather than a part-filled last window.
    """
    utils, refused, detail = [], 0, ""
    for rep in range(reps):
        with _sandbox(1.0) as (sandbox, env):
            job = _send_job(318, f"bench-budget-{rep}", 1.0)
            measure([LMBATCH, "run", str(job)], env=env)
            util, made, n429, elapsed = _utilization(sandbox.state.requests(), 1.0)
        utils.append(util)
        refused += n429
        detail = f"{made} requests in {elapsed:.2f} s"
    value = f"{_median(utils):.3f} ({detail}), {refused} × 429"
    met = _median(utils) >= 0.99 and refused == 0
    return [Figure("request-budget utilization", value, "≥ 0.99, 0 × 429", met, "--only budget")]


def two_processes(reps: int) -> list[Figure]:
    """Two CLI processes, two campaigns, one sandbox and one host-wide limiter."""
    utils, refused, detail = [], 0, ""
    for rep in range(reps):
        with _sandbox(1.0) as (sandbox, env):
            jobs = [_send_job(158, f"bench-two-{rep}-{side}", 1.0) for side in "ab"]
            null = subprocess.DEVNULL
            procs = [
                subprocess.Popen(
                    [LMBATCH, "run", str(j)], env=env, cwd=ROOT, stdout=null, stderr=null
                )
                for j in jobs
            ]
            codes = [p.wait() for p in procs]
            if any(codes):
                raise RuntimeError(f"lmbatch run exited {codes}: rerun with --only two to see")
            util, made, n429, elapsed = _utilization(sandbox.state.requests(), 1.0)
        utils.append(util)
        refused += n429
        detail = f"{made} requests in {elapsed:.2f} s"
    value = f"{_median(utils):.3f} ({detail}), {refused} × 429"
    met = _median(utils) >= 0.97 and refused == 0
    return [Figure("two processes on one host", value, "≥ 0.97, 0 × 429", met, "--only two")]


def grouping(reps: int) -> list[Figure]:
    """1,000 recipients of one identical message: how many share each request."""
    with _sandbox(0.2) as (sandbox, env):
        job = _send_job(1000, "bench-grouping", 0.2, same=True)
        measure([LMBATCH, "run", str(job)], env=env)
        sends = [r for r in sandbox.state.requests() if r["path"] == "/api/send"]
        recipients = len(sandbox.state.log())
    ratio = recipients / len(sends)
    value = f"{ratio:.1f} ({recipients} recipients in {len(sends)} requests)"
    return [Figure("recipients per request", value, "10.0", ratio >= 10.0, "--only grouping")]


# --- validate -----------------------------------------------------------------------------


def validate(reps: int) -> list[Figure]:
    """`lmbatch validate` on 100k rows vs mailmerge's dry run and a bare Jinja2 loop."""
    rows, mm_rows = 100_000, 20_000
    job = gen_data.validate_job(gen_data.dataset(rows))
    template, config = gen_data.mailmerge_files()
    mm_csv = gen_data.dataset(mm_rows)  # the first 20k rows of the same data
    mailmerge = [
        str(BIN / "mailmerge"), "--dry-run", "--no-limit", "--output-format", "raw",
        "--template", str(template), "--database", str(mm_csv), "--config", str(config),
    ]  # fmt: skip
    ours, bare, theirs, vs_mm, vs_bare = [], [], [], [], []
    for _ in range(reps):  # alternating, so load drifts hit all three alike
        ours.append(rows / measure([LMBATCH, "validate", str(job)]).seconds)
        bare.append(rows / measure(_py("bare_loop.py", gen_data.dataset(rows))).seconds)
        theirs.append(mm_rows / measure(mailmerge).seconds)
        vs_mm.append(ours[-1] / theirs[-1])
        vs_bare.append(ours[-1] / bare[-1])
    return [
        Figure(
            "validate throughput vs mailmerge",
            f"{_median(vs_mm):.1f}× ({_median(ours):,.0f} vs {_median(theirs):,.0f} rows/s)",
            "≥ 10×",
            _median(vs_mm) >= 10,
            "--only validate",
        ),
        Figure(
            "… vs a bare 1-core Jinja2 loop",
            f"{_median(vs_bare):.2f}× ({_median(ours):,.0f} vs {_median(bare):,.0f} rows/s)",
            "≥ 1.0×",
            _median(vs_bare) >= 1.0,
            "--only validate",
        ),
    ]


# The environment before the sandbox (issue 14), rebuilt inline: a plain jinja2.Environment with
# the same loader folders, options and filters, swapped in for every module that imported
# make_environments. The same `lmbatch validate` otherwise, so the ratio is the sandbox's cost.
_PLAIN_ENV = """
import sys
from functools import partial

import jinja2

import batch.cli, batch.jobfile, batch.render, batch.templating as t
from batch.formats import DEFAULT_LOCALE


def plain(base_dir, *, locale=DEFAULT_LOCALE, decimal=".", date_format=None, timezone=None):
    loader = jinja2.FileSystemLoader([str(d) for d in t.template_dirs(base_dir)])
    envs = []
    for escape in (False, True):
        env = jinja2.Environment(
            loader=loader, undefined=jinja2.StrictUndefined, autoescape=escape,
            finalize=t.finalize, keep_trailing_newline=True,
        )
        env.filters["money"] = partial(t.money, locale=locale, decimal=decimal)
        env.filters["number"] = partial(t.number, locale=locale, decimal=decimal)
        env.filters["date"] = partial(
            t.format_date, locale=locale, date_format=date_format, timezone=timezone
        )
        envs.append(env)
    return envs[0], envs[1]


if sys.argv[1] == "plain":
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("batch") and hasattr(
            module, "make_environments"
        ):
            module.make_environments = plain
sys.argv = ["lmbatch", "validate", sys.argv[2]]
batch.cli.main()
"""


def validate_sandbox_cost(reps: int) -> list[Figure]:
    """`lmbatch validate` on 100k rows, sandboxed (today) vs the plain environment before it."""
    rows = 100_000
    job = gen_data.validate_job(gen_data.dataset(rows))
    sandboxed, plain, ratio = [], [], []
    for _ in range(reps):  # alternating, so load drifts hit both alike
        for kind, into in (("sandboxed", sandboxed), ("plain", plain)):
            into.append(rows / measure([sys.executable, "-c", _PLAIN_ENV, kind, str(job)]).seconds)
        ratio.append(sandboxed[-1] / plain[-1])
    return [
        Figure(
            "validate, sandboxed vs plain Jinja2",
            f"{_median(ratio):.2f}× ({_median(sandboxed):,.0f} vs {_median(plain):,.0f} rows/s)",
            "≥ 0.75× (within 25 %)",
            _median(ratio) >= 0.75,
            "--only sandbox",
        )
    ]


def memory(reps: int) -> list[Figure]:
    """`lmbatch validate` on 1M rows: peak memory (and throughput at that size)."""
    rows = 1_000_000
    job = gen_data.validate_job(gen_data.dataset(rows))
    run = measure([LMBATCH, "validate", str(job)])
    value = (
        f"{run.tree_pss_mb:,.0f} MB PSS all processes ({run.tree_rss_mb:,.0f} MB RSS summed, "
        f"{run.max_rss_mb:,.0f} MB largest); {rows / run.seconds:,.0f} rows/s"
    )
    met = run.tree_pss_mb < 1536
    return [Figure("memory at scale (1M rows)", value, "< 1.5 GB", met, "--only memory")]


def read(reps: int) -> list[Figure]:
    """read_dataset on 1M CSV rows vs polars.read_csv alone (the malformed-line check costs)."""
    csv = gen_data.dataset(1_000_000)
    job = load_job(gen_data.validate_job(csv))
    ours, bare = [], []
    for _ in range(max(reps, 3)):
        started = time.perf_counter()
        read_dataset(job)
        ours.append(time.perf_counter() - started)
        started = time.perf_counter()
        pl.read_csv(csv, infer_schema=False)
        bare.append(time.perf_counter() - started)
    value = f"{_median(ours):.2f} s (polars alone {_median(bare):.2f} s)"
    return [Figure("read 1M-row CSV (read_dataset)", value, "—", None, "--only read")]


# --- ledger -------------------------------------------------------------------------------


def _forget(folder: Path) -> None:
    """Delete a bench campaign for good: its folder and the marker its ledger keeps beside it.

    (A ledger refuses to start again from nothing while its marker remembers a history.)
    """
    shutil.rmtree(folder, ignore_errors=True)
    marker_path(folder).unlink(missing_ok=True)


def _plan_inputs() -> tuple[Path, Path, Path]:
    """A 1M-row scan summary and a 900k-row ledger of sent rows (built once)."""
    folder = DATA / "plan"
    scan, ledger = folder / "scan-1000000.parquet", folder / "ledger-900000"
    job = gen_data.validate_job(gen_data.dataset(1_000_000))
    if scan.exists() and (ledger / "ledger.parquet").exists():
        return job, scan, ledger
    _forget(folder)
    folder.mkdir(parents=True)
    digest = pl.col("id").hash(7).cast(pl.String).str.zfill(20)
    summary = pl.read_csv(gen_data.dataset(1_000_000), infer_schema=False).select(
        row=pl.int_range(2, pl.len() + 2, dtype=pl.Int64),
        key=pl.col("id"),
        address=pl.col("email"),
        name=pl.col("name"),
        content_hash=pl.concat_str(digest, digest, digest.str.slice(0, 24)),
        subject=pl.lit("Statement ") + pl.col("contract"),
    )
    summary.write_parquet(scan)
    from batch.ledger import Ledger  # the bench builds the ledger the way a run would

    with Ledger.open(ledger, channel="email") as opened:
        opened.queue(summary.head(900_000).select("key", "address", "name", "content_hash"))
    sent = pl.read_parquet(ledger / "ledger.parquet").with_columns(
        status=pl.lit("sent"),
        attempts=pl.lit(1, pl.Int32),
        tracking_id=pl.lit("t-") + pl.col("key"),
        sent_at=pl.col("queued_at"),
    )
    written = pl.read_parquet_metadata(ledger / "ledger.parquet")  # keep the write id: ours
    # As if all 900k were sent, in the row groups a checkpoint writes.
    sent.write_parquet(
        ledger / "ledger.parquet", metadata=written, row_group_size=ledger_files.ROW_GROUP_ROWS
    )
    return job, scan, ledger


def plan(reps: int) -> list[Figure]:
    """Time from opening a 900k-row ledger to the first send decision for a 1M-row dataset."""
    job, scan, template = _plan_inputs()
    seconds, rss, closing = [], [], []
    for rep in range(reps):
        folder = DATA / "plan" / f"run-{rep}"
        _forget(folder)
        shutil.copytree(template, folder)
        out = json.loads(measure(_py("probes.py", "plan", job, scan, folder)).stdout)
        if out["todo"] != 100_000 or out["first"] != ["C-900000"]:
            raise RuntimeError(f"unexpected plan: {out}")
        seconds.append(out["seconds"])
        rss.append(out["decision_rss_mb"])
        closing.append(out["peak_rss_mb"])
        _forget(folder)
    value = (
        f"{_median(seconds):.2f} s, {max(rss):,.0f} MB peak RSS to the decision "
        f"({max(closing):,.0f} MB with the checkpoint on close); before the lazy ledger: "
        f"{PLAN_BEFORE}"
    )
    met = _median(seconds) < 1 and max(rss) < 500 and max(closing) < 800
    target = "< 1 s, < 500 MB; close < 800 MB"
    return [Figure("resume planning (1M vs 900k)", value, target, met, "--only plan")]


# The same probe on the ledger that held the whole frame in memory (commit 3fdb83e), measured
# on this machine on 2026-11-30, unloaded: printed beside today's figure (bench/README.md).
PLAN_BEFORE = "0.47 s, 777 MB, 1,505 MB on close"


def durability(reps: int) -> list[Figure]:
    """intent + sent per send, each an fsync'd journal line, checkpoints every 200 events."""
    medians, means = [], []
    for rep in range(reps):
        folder = DATA / "journal" / f"run-{rep}"
        _forget(folder)
        out = json.loads(measure(_py("probes.py", "journal", folder, 1000)).stdout)
        medians.append(out["median_ms"])
        means.append(out["mean_ms"])
        _forget(folder)
    value = f"{_median(medians):.2f} ms median, {_median(means):.2f} ms with checkpoints"
    met = _median(medians) < 5 and _median(means) < 5
    return [Figure("ledger durability per send", value, "< 5 ms median", met, "--only durability")]


FIGURES: dict[str, Callable[[int], list[Figure]]] = {
    "budget": budget,
    "two": two_processes,
    "grouping": grouping,
    "validate": validate,
    "sandbox": validate_sandbox_cost,
    "plan": plan,
    "durability": durability,
    "memory": memory,
    "read": read,
}


def _table(figures: list[Figure], argv: list[str]) -> str:
    quick = " --quick" if "--quick" in argv else ""
    rows = [("figure", "lmbatch", "target", "met", "reproduce")]
    for f in figures:
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        rows.append((f.name, f.value, f.target, met, f"python bench/run.py{quick} {f.command}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    """Measure the chosen figures and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per figure")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(FIGURES)}")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(FIGURES)
    reps = 1 if args.quick else 3
    figures: list[Figure] = []
    started = time.perf_counter()
    for name in names:
        print(f"… {name}", file=sys.stderr, flush=True)
        figures.extend(FIGURES[name](reps))
    load = os.getloadavg()
    print(
        f"lmbatch bench, {time.strftime('%Y-%m-%d')}, {platform.node()}: {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, polars {pl.__version__}; "
        f"{reps} run(s) per figure, {time.perf_counter() - started:.0f} s; "
        f"load average {load[0]:.1f}"
    )
    print(_table(figures, argv))


if __name__ == "__main__":
    main(sys.argv[1:])
