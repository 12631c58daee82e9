"""`lmbatch init`: a job folder that works as written, to edit into a real campaign.

Three files: `job.yaml` (every setting a first campaign needs, each commented), a small
`recipients.csv` (fictitious people at example.com, which the sandbox accepts) and
`letter.html` (the body, a Jinja2 template). They validate and rehearse as they are, so a
new user sees the whole path work before changing anything. Existing files are never
overwritten.
"""

from __future__ import annotations

from pathlib import Path

from batch import errors
from batch.files import write_atomic

JOB_NAME = "job.yaml"

JOB = """\
# A certified e-mail campaign: one personal notice per recipient.
# Paths are relative to this file. Check it with `lmbatch validate job.yaml`.
campaign: first-notice-{{ today.strftime('%Y-%m') }}   # the ledger's identity (a template)
channel: email                                    # email | sms | signature
dataset: {path: recipients.csv, key: id}          # CSV, Excel (.xlsx) or Parquet; key is unique
recipient: {email: "{{ email }}", name: "{{ name }}"}   # columns of the dataset
message:                                          # what every recipient receives
  subject: "Notice {{ id }}: {{ amount|money('EUR') }} due {{ due|date('%d/%m/%Y') }}"
  html: letter.html                               # the body, next to this file
  # reply_to: legal@example.com                   # a verified sender of your account
  # attachments: [{path: terms.pdf, name: Terms.pdf}]
grouping: auto                                    # identical messages share a request
api: {base_url: "https://legallymail.com", token_env: LEGALLYMAIL_TOKEN}   # token: env only
limits: {requests_per_window: 10, window_seconds: 60, max_recipients_per_request: 10}  # the API's
retry: {attempts: 5, max_backoff_seconds: 60}    # transient errors: tried again
# timezone: Europe/Madrid                         # times people read; default: this machine's
output: output                                    # ledger in <output>/<campaign>/
"""

RECIPIENTS = """\
id,name,email,amount,due
N-001,Ana López,ana.lopez@example.com,120.50,2026-12-15
N-002,Bruno Martín,bruno.martin@example.com,89.00,2026-12-15
N-003,Carmen Ruiz,carmen.ruiz@example.com,240.00,2026-12-20
N-004,David Gómez,david.gomez@example.com,15.75,2026-12-20
N-005,Elena Torres,elena.torres@example.com,310.10,2026-12-31
"""

LETTER = """\
<p>Dear {{ name }},</p>
<p>Our records show an outstanding balance of <strong>{{ amount|money("EUR") }}</strong>
  on account <strong>{{ id }}</strong>, due on <strong>{{ due|date("%d/%m/%Y") }}</strong>.</p>
<p>Please settle it before the due date.</p>
<p>Kind regards,<br>Customer Accounts</p>
"""

FILES = {JOB_NAME: JOB, "recipients.csv": RECIPIENTS, "letter.html": LETTER}


def scaffold(folder: Path) -> Path:
    """Write the job folder's files into `folder` (created if needed); the job file's path.

    Refuses, writing nothing, when any of them exists already.
    """
    existing = [name for name in FILES if (folder / name).exists()]
    if existing:
        raise errors.InputError(
            f"{folder}: {', '.join(existing)} already there; nothing written",
            hint="choose an empty folder: lmbatch init NEW-FOLDER",
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in FILES.items():
        write_atomic(folder / name, text.encode("utf-8"))
    return folder / JOB_NAME
