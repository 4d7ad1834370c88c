"""A local SMTP server (aiosmtpd) with STARTTLS and AUTH that keeps what it receives, for the demo and tests.

    with LocalMailServer(run_dir) as mail:
        env = mail.env()                  # SMTP_PASSWORD for the notifier
        smtp = mail.smtp_config()         # the notifier config's smtp section
        ...
        [msg] = mail.wait_for(1, to="icu@hospital.example")
        msg.text, msg.html                # the plain-text and HTML parts

It runs in a thread of the calling process (no child process to manage). STARTTLS uses a self-signed
certificate for 127.0.0.1/localhost written to ``<run_dir>/mail/cert.pem``, which clients trust as their
CA file; AUTH (PLAIN/LOGIN) is accepted only after STARTTLS. ``stop()`` then ``start()`` keeps the port,
so a test can take the server down and bring it back while a client keeps its address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import secrets
import ssl
import threading
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.stack.process import StackError, free_port

DEFAULT_USER = "vitals-notifier"


class _DropLoginDataWarning(logging.Filter):
    """aiosmtpd 1.4 warns about its own use of Session.login_data on every AUTH; nothing we can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_DropLoginDataWarning())
PASSWORD_ENV = "SMTP_PASSWORD"  # the secret name the notifier config refers to


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    recipients: tuple[str, ...]
    message: EmailMessage
    tls: bool  # the message came over a STARTTLS-protected session
    auth_user: str | None  # the AUTH login, None without AUTH
    received_at: float

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def _part(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content())

    @property
    def text(self) -> str:
        return self._part("plain")

    @property
    def html(self) -> str:
        return self._part("html")


def write_self_signed_cert(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Path:
    """Write ``cert.pem`` and ``key.pem`` (EC P-256, one day) for ``hosts``; returns the cert's path."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vitals-lake local SMTP")])
    alt_names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


class _Handler:
    def __init__(self, server: LocalMailServer) -> None:
        self._server = server

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        self._server._record(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                recipients=tuple(envelope.rcpt_tos),
                message=BytesParser(policy=policy.default).parsebytes(raw),
                tls=session.ssl is not None,
                auth_user=session.auth_data if isinstance(session.auth_data, str) else None,
                received_at=time.time(),
            )
        )
        return "250 Message accepted for delivery"


class LocalMailServer:
    """aiosmtpd on 127.0.0.1 with STARTTLS (``tls=True``) and AUTH (``username``/``password``)."""

    def __init__(
        self,
        run_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: bool = True,
        username: str | None = DEFAULT_USER,
        password: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.host = host
        self.port = port or 0
        self.tls = tls
        self.username = username
        self.password = (password or secrets.token_urlsafe(18)) if username else None
        self.cert_path: Path | None = None
        self._controller: Controller | None = None
        self._messages: list[ReceivedMail] = []
        self._cond = threading.Condition()
        if username and not tls:
            raise StackError("AUTH without STARTTLS would send the password in clear: use tls=True")

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._controller is not None:
            return self
        if self.port == 0:
            self.port = free_port(self.host)
        kwargs: dict[str, Any] = {}
        if self.tls:
            if self.cert_path is None:
                self.cert_path = write_self_signed_cert(self.run_dir / "mail")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert_path, self.cert_path.with_name("key.pem"))
            kwargs.update(tls_context=context, require_starttls=True)
        if self.username:
            kwargs.update(auth_required=True, auth_require_tls=True, authenticator=self._authenticate)
        controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="localhost", **kwargs
        )
        try:
            controller.start()
        except Exception as exc:
            raise StackError(f"local SMTP server could not start on {self.host}:{self.port}: {exc}") from exc
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening (connections are then refused). Harmless when stopped; ``start()`` resumes."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def running(self) -> bool:
        return self._controller is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- for the notifier ----------------------------------------------------------------------------
    def smtp_config(self, sender: str = "Vitals Lake <alerts@vitals-lake.local>") -> dict[str, Any]:
        """The notifier config's ``smtp`` section for this server (password via ``env()``)."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "security": "starttls" if self.tls else "none",
            "sender": sender,
            "timeout_seconds": 5,
        }
        if self.cert_path is not None:
            config["ca_file"] = str(self.cert_path)
        if self.username:
            config.update(username=self.username, password_secret=PASSWORD_ENV)
        return config

    def env(self) -> dict[str, str]:
        return {PASSWORD_ENV: self.password} if self.password else {}

    # --- what arrived ----------------------------------------------------------------------------------
    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.username is not None
            and self.password is not None
            and secrets.compare_digest(auth_data.login, self.username.encode())
            and secrets.compare_digest(auth_data.password, self.password.encode())
        )
        # handled=False makes aiosmtpd answer 535; a handled failure leaves smtplib waiting forever.
        return AuthResult(success=ok, handled=False, auth_data=self.username if ok else None)

    def _record(self, mail: ReceivedMail) -> None:
        with self._cond:
            self._messages.append(mail)
            self._cond.notify_all()

    def messages(self, to: str | None = None) -> list[ReceivedMail]:
        with self._cond:
            return [m for m in self._messages if to is None or to in m.recipients]

    def wait_for(self, count: int, *, to: str | None = None, timeout: float = 10.0) -> list[ReceivedMail]:
        """Wait until at least ``count`` messages (to ``to``, if given) arrived; return them all."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if to is None or to in m.recipients]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} messages arrived in {timeout} s (to {to})")
                self._cond.wait(left)

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()
