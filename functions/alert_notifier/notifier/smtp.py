"""Email over SMTP: STARTTLS (or implicit TLS) with certificate checks, AUTH, a plain and an HTML part."""

from __future__ import annotations

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from notifier.config import SmtpSettings
from notifier.render import EmailContent, header_token, one_line
from notifier.retry import DeliveryError, PermanentError, TransientError, smtp_reply_error


def build_message(
    settings: SmtpSettings, recipient: str, content: EmailContent, notification_id: str
) -> EmailMessage:
    msg = EmailMessage()
    # Every header value one line: the email package raises ValueError on a CR or LF in a header.
    msg["From"] = one_line(settings.sender)
    msg["To"] = one_line(recipient)
    msg["Subject"] = one_line(content.subject)
    msg["Date"] = formatdate(usegmt=True)
    # The same notification always gets the same Message-ID: mail clients fold an accidental resend.
    digest = hashlib.sha256(f"{notification_id}|{recipient}".encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@vitals-lake.alerts>"
    msg["X-Vitals-Notification-Id"] = header_token(notification_id)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to a robot
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    return msg


def send_email(settings: SmtpSettings, password: str | None, message: EmailMessage) -> None:
    """Send one message; raise TransientError or PermanentError (details without content or secrets)."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    timeout = settings.timeout_seconds
    try:
        client: smtplib.SMTP
        if settings.security == "ssl":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=timeout)
        with client as smtp:
            if settings.security == "starttls":
                smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, password or "")
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:  # TLS and socket errors are OSErrors
        raise classify_smtp_error(exc) from None


def classify_smtp_error(exc: Exception) -> DeliveryError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(500 <= c < 600 for c in codes):
            return PermanentError(f"SMTP recipient refused: {codes}")
        return TransientError(f"SMTP recipient deferred: {codes}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return smtp_reply_error(exc.smtp_code, "authentication failed")
    if isinstance(exc, smtplib.SMTPResponseException):  # includes SMTPConnectError, SMTPDataError
        return smtp_reply_error(exc.smtp_code, type(exc).__name__)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError("SMTP server does not support STARTTLS or AUTH")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError("SMTP server certificate not trusted")
    if isinstance(exc, smtplib.SMTPServerDisconnected | OSError):  # refused, reset, timeout, TLS
        return TransientError(f"SMTP connection failed: {type(exc).__name__}")
    return PermanentError(f"SMTP error: {type(exc).__name__}")
