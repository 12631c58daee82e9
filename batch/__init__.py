"""lmbatch: batch campaigns of certified e-mail, SMS and e-signature over LegallyMail."""

from importlib.metadata import PackageNotFoundError, version

try:
    # One source of truth: pyproject.toml's [project] version, as installed.
    __version__ = version("lmbatch")
except PackageNotFoundError:  # a source tree used without installing it
    __version__ = "0+unknown"
