"""Alert e-mail: a notification rendered as a plain-text message, sent over SMTP with TLS in a thread."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

from gateway.canonical.messages import AlertNotification
from gateway.mapping import EmailChannel

STATE_WORDS = {"firing": "FIRING", "acknowledged": "ACKNOWLEDGED", "resolved": "RESOLVED"}


class MailFailure(Exception):
    """A send that failed; `retryable` says whether the channel's retry policy may try again."""

    def __init__(self, reason: str, *, retryable: bool, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.code = code


class Mailer(Protocol):
    async def send(self, channel: EmailChannel, message: EmailMessage) -> None: ...


def render(notification: AlertNotification, *, channel: EmailChannel, console_url: str | None) -> EmailMessage:
    """One e-mail per notification: the subject says the rule, the states and the count; the body lists each."""
    body = notification.body
    states = sorted({a.state for a in body.alerts}, key=("firing", "acknowledged", "resolved").index)
    subject = (f"[gateway] {'/'.join(STATE_WORDS[s] for s in states)} {body.rule}: "
               f"{len(body.alerts)} alert{'s' if len(body.alerts) != 1 else ''}, count {body.count}")
    lines = [f"Rule: {body.rule}", f"Notification: {notification.message_id}",
             f"At: {notification.occurred_at.isoformat()}", ""]
    for a in body.alerts:
        lines.append(f"- {STATE_WORDS[a.state]} [{a.severity}] {a.subject}: {a.summary}")
        lines.append(f"  count {a.count}, since {a.started_at.isoformat()}"
                     + (f", resolved {a.resolved_at.isoformat()}" if a.resolved_at else ""))
    if console_url:
        lines += ["", f"Acknowledge on the alerts page: {console_url}"]
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    msg["Date"] = format_datetime(notification.occurred_at)
    msg["Message-ID"] = make_msgid(idstring=str(notification.message_id), domain="probation-gateway")
    msg.set_content("\n".join(lines) + "\n")
    return msg


@dataclass(frozen=True)
class SmtpMailer:
    """The standard library's smtplib in a worker thread: alert mail is rare and grouped, so a thread per send
    costs nothing, and smtplib's STARTTLS and login are the long-proven ones (no extra dependency to keep)."""

    username: str | None = None
    password: str | None = None
    ca_dir: Path | None = None  # a channel's ca_file is relative to alerts.yaml's directory

    async def send(self, channel: EmailChannel, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send, channel, message)

    def _context(self, channel: EmailChannel) -> ssl.SSLContext:
        cafile = None
        if channel.ca_file is not None:
            cafile = str((self.ca_dir / channel.ca_file) if self.ca_dir else Path(channel.ca_file))
        return ssl.create_default_context(cafile=cafile)

    def _send(self, channel: EmailChannel, message: EmailMessage) -> None:
        try:
            context = self._context(channel)
            if channel.tls == "implicit":
                client: smtplib.SMTP = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout_s,
                                                        context=context)
            else:
                client = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
            with client:
                if channel.tls == "starttls":
                    client.ehlo()
                    # Never in the clear: a server that does not offer STARTTLS is refused, not used.
                    if not client.has_extn("starttls"):
                        raise MailFailure(f"{channel.host}:{channel.port} does not offer STARTTLS", retryable=True)
                    client.starttls(context=context)
                    client.ehlo()
                if self.username:
                    client.login(self.username, self.password or "")
                client.send_message(message, from_addr=channel.sender, to_addrs=list(channel.to))
        except MailFailure:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise MailFailure(f"recipients refused: {exc.recipients}", retryable=all(400 <= c < 500 for c in codes),
                              code=codes[0] if codes else None) from exc
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            # 4xx is temporary by RFC 5321; 5xx is final, but for a failed login (535) an operator may fix it.
            raise MailFailure(f"SMTP {exc.smtp_code}: {text}", retryable=exc.smtp_code < 500 or exc.smtp_code == 535,
                              code=exc.smtp_code) from exc
        except (smtplib.SMTPException, OSError) as exc:  # refused, unreachable, timeout, TLS handshake
            raise MailFailure(f"{type(exc).__name__}: {exc}", retryable=True) from exc
