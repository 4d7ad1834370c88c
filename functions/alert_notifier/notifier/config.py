"""The routing config (YAML or JSON, path in ``$NOTIFIER_CONFIG``) and the routing decision.

See ``routing.example.yaml`` for every key. Unknown keys are errors: a typo such as ``min_severty``
must fail the deploy, not quietly page every clinician.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import yaml

from notifier import event as ev
from notifier.retry import RetryPolicy

WebhookFormat = Literal["json", "slack"]
SmtpSecurity = Literal["starttls", "ssl", "none"]
DestinationKind = Literal["email", "webhook"]
_EMAIL_RE: Final = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
# ``local_receivers: true`` lets these hosts take plain HTTP and SMTP without TLS (the tests' and the
# demo's receivers); every other host needs https and TLS whatever the config says.
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def plain_transport_allowed(host: str | None, *, local_receivers: bool) -> bool:
    """Whether a receiver on ``host`` may be reached without TLS: only a loopback host, and only when
    the config says its receivers are local."""
    return local_receivers and (host or "").strip("[]").lower() in LOOPBACK_HOSTS


def check_webhook_url(url: str, *, local_receivers: bool, where: str) -> None:
    """https, or http to a loopback host with ``local_receivers`` (checked again on a URL read from a
    secret when it is used)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and plain_transport_allowed(parts.hostname, local_receivers=local_receivers):
        return
    raise ConfigError(f"{where} must be an https URL (http only to a loopback receiver with local_receivers)")


class ConfigError(ValueError):
    """The routing config is invalid; the message names the key."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    sender: str
    port: int = 587
    security: SmtpSecurity = "starttls"
    username: str | None = None
    password_secret: str | None = None  # name of the secret holding the password
    timeout_seconds: float = 10.0
    ca_file: str | None = None  # extra CA to trust (a local test server's self-signed certificate)


@dataclass(frozen=True)
class Webhook:
    name: str
    format: WebhookFormat = "json"
    url: str | None = None
    url_secret: str | None = None  # Slack webhook URLs are credentials themselves
    signing_secret: str | None = None  # HMAC-SHA256 key (name of the secret)
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class Route:
    name: str
    wards: frozenset[str | None] | None  # None: any ward; a None member: events without a ward
    min_severity: str
    states: frozenset[str]
    email: tuple[str, ...]
    webhooks: tuple[str, ...]

    def matches(self, event: ev.AlertEvent) -> bool:
        if event.state not in self.states:
            return False
        if ev.SEVERITIES.index(event.severity) < ev.SEVERITIES.index(self.min_severity):
            return False
        return self.wards is None or _ward_key(event.ward) in self.wards


@dataclass(frozen=True)
class Destination:
    """Where one notification goes; ``id`` keys its idempotency record."""

    kind: DestinationKind
    target: str  # an email address or a webhook's name

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.target}"


@dataclass(frozen=True)
class Config:
    routes: tuple[Route, ...]
    webhooks: Mapping[str, Webhook]
    smtp: SmtpSettings | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    subject_prefix: str = "[Vitals Lake]"
    local_receivers: bool = False  # plain HTTP / SMTP allowed to loopback receivers (tests, demo)

    def destinations(self, event: ev.AlertEvent) -> list[Destination]:
        """Every destination of every matching route, once each."""
        found: dict[tuple[DestinationKind, str], None] = {}
        for route in self.routes:
            if route.matches(event):
                found.update(dict.fromkeys(("email", a) for a in route.email))
                found.update(dict.fromkeys(("webhook", w) for w in route.webhooks))
        return [Destination(kind, target) for kind, target in found]

    def secret_names(self) -> list[str]:
        names = [self.smtp.password_secret] if self.smtp else []
        for hook in self.webhooks.values():
            names += [hook.url_secret, hook.signing_secret]
        return [n for n in names if n]


def load_config(path: str | Path) -> Config:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # YAML is a superset of JSON
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read routing config {path}: {exc}") from None
    return parse_config(raw)


def parse_config(raw: Any) -> Config:
    keys = {"routes", "webhooks", "smtp", "retry", "include_patient_id", "subject_prefix", "local_receivers"}
    top = _mapping(raw, "config", keys)
    _refuse_patient_id(top, "include_patient_id")
    local = _bool(top.get("local_receivers", False), "local_receivers")
    webhooks = {
        name: _webhook(name, spec, local=local)
        for name, spec in _mapping(top.get("webhooks") or {}, "webhooks").items()
    }
    smtp = _smtp(top["smtp"], local=local) if top.get("smtp") is not None else None
    routes_raw = top.get("routes")
    if not isinstance(routes_raw, list) or not routes_raw:
        raise ConfigError("routes: a non-empty list is required")
    routes = tuple(_route(i, spec) for i, spec in enumerate(routes_raw))
    for route in routes:
        for name in route.webhooks:
            if name not in webhooks:
                raise ConfigError(f"route {route.name}: unknown webhook {name!r}")
        if route.email and smtp is None:
            raise ConfigError(f"route {route.name}: sends email but there is no smtp section")
    return Config(
        routes=routes,
        webhooks=webhooks,
        smtp=smtp,
        retry=_retry(top.get("retry") or {}),
        subject_prefix=str(top.get("subject_prefix", "[Vitals Lake]")),
        local_receivers=local,
    )


def _refuse_patient_id(spec: Mapping[str, Any], where: str) -> None:
    """``include_patient_id`` once let a route show the hospital's id. Events no longer carry it
    (minimum necessary): ``false`` is accepted as it changes nothing; ``true`` is refused, so nobody
    believes a route shows what it cannot."""
    if _bool(spec.get("include_patient_id", False), where):
        raise ConfigError(
            f"{where}: notifications carry the pseudonymous patient key only (the hospital id is not in the"
            " alert events any more); re-identify on the dashboard's patient page, and remove this setting"
        )


def _route(index: int, raw: Any) -> Route:
    spec = _mapping(
        raw,
        f"routes[{index}]",
        {"name", "wards", "min_severity", "states", "email", "webhooks", "include_patient_id"},
    )
    name = str(spec.get("name") or f"route-{index}")
    _refuse_patient_id(spec, f"route {name}: include_patient_id")
    wards = spec.get("wards")
    if wards is not None and not isinstance(wards, list):
        raise ConfigError(f"route {name}: wards must be a list (null in it: events without a ward)")
    severity = spec.get("min_severity", ev.SEVERITIES[0])
    if severity not in ev.SEVERITIES:
        raise ConfigError(f"route {name}: min_severity must be one of {list(ev.SEVERITIES)}")
    states = spec.get("states", list(ev.STATES))
    if not isinstance(states, list) or not set(states) <= set(ev.STATES):
        raise ConfigError(f"route {name}: states must be a list from {list(ev.STATES)}")
    email = _strings(spec.get("email", []), f"route {name}: email")
    for address in email:
        if not _EMAIL_RE.match(address):
            raise ConfigError(f"route {name}: not an email address: {address!r}")
    hooks = _strings(spec.get("webhooks", []), f"route {name}: webhooks")
    if not email and not hooks:
        raise ConfigError(f"route {name}: names no email and no webhook")
    return Route(
        name=name,
        wards=None if wards is None else frozenset(_ward_key(w) for w in wards),
        min_severity=severity,
        states=frozenset(states),
        email=tuple(dict.fromkeys(email)),
        webhooks=tuple(dict.fromkeys(hooks)),
    )


def _webhook(name: str, raw: Any, *, local: bool) -> Webhook:
    keys = {"url", "url_secret", "format", "signing_secret", "timeout_seconds"}
    spec = _mapping(raw, f"webhooks.{name}", keys)
    hook = Webhook(
        name=name,
        format=spec.get("format", "json"),
        url=spec.get("url"),
        url_secret=spec.get("url_secret"),
        signing_secret=spec.get("signing_secret"),
        timeout_seconds=_positive(spec.get("timeout_seconds", 5.0), f"webhooks.{name}.timeout_seconds"),
    )
    if hook.format not in ("json", "slack"):
        raise ConfigError(f"webhooks.{name}.format must be json or slack")
    if (hook.url is None) == (hook.url_secret is None):
        raise ConfigError(f"webhooks.{name}: give exactly one of url and url_secret")
    if hook.url is not None:
        check_webhook_url(hook.url, local_receivers=local, where=f"webhooks.{name}.url")
    if hook.format == "json" and not hook.signing_secret:
        raise ConfigError(f"webhooks.{name}: a json webhook needs signing_secret (receivers verify it)")
    return hook


def _smtp(raw: Any, *, local: bool) -> SmtpSettings:
    keys = {"host", "port", "security", "username", "password_secret", "sender", "timeout_seconds", "ca_file"}
    spec = _mapping(raw, "smtp", keys)
    for key in ("host", "sender"):
        if not spec.get(key):
            raise ConfigError(f"smtp.{key} is required")
    security = spec.get("security", "starttls")
    if security not in ("starttls", "ssl", "none"):
        raise ConfigError("smtp.security must be starttls, ssl or none")
    if spec.get("username") and not spec.get("password_secret"):
        raise ConfigError("smtp.username needs smtp.password_secret")
    if spec.get("username") and security == "none":
        raise ConfigError("smtp.username with security none would send the password in clear text")
    if security == "none" and not plain_transport_allowed(str(spec["host"]), local_receivers=local):
        raise ConfigError("smtp.security none only to a loopback server with local_receivers: use TLS")
    return SmtpSettings(
        host=str(spec["host"]),
        sender=str(spec["sender"]),
        port=int(spec.get("port", 465 if security == "ssl" else 587)),
        security=security,
        username=spec.get("username"),
        password_secret=spec.get("password_secret"),
        timeout_seconds=_positive(spec.get("timeout_seconds", 10.0), "smtp.timeout_seconds"),
        ca_file=spec.get("ca_file"),
    )


def _retry(raw: Any) -> RetryPolicy:
    spec = _mapping(raw, "retry", {"attempts", "base_delay_seconds", "max_delay_seconds"})
    default = RetryPolicy()
    try:
        return RetryPolicy(
            attempts=int(spec.get("attempts", default.attempts)),
            base_delay=float(spec.get("base_delay_seconds", default.base_delay)),
            max_delay=float(spec.get("max_delay_seconds", default.max_delay)),
        )
    except ValueError as exc:
        raise ConfigError(f"retry: {exc}") from None


def _ward_key(ward: Any) -> str | None:
    return None if ward is None else str(ward).casefold()


def _mapping(raw: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a mapping is required")
    unknown = set(raw) - allowed if allowed is not None else set()
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    return raw


def _strings(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ConfigError(f"{where}: a list of strings is required")
    return list(raw)


def _bool(raw: Any, where: str) -> bool:
    if not isinstance(raw, bool):
        raise ConfigError(f"{where}: true or false is required")
    return raw


def _positive(raw: Any, where: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{where}: a positive number of seconds is required")
    return value
