"""lmbatch: batch campaigns of certified e-mail, SMS and e-signature over LegallyMail."""

__version__ = "0.1.0"
