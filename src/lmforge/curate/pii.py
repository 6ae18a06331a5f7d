"""PII scrubbing: e-mail addresses, public IP addresses, phone numbers and secrets -> placeholders.

    scrub = PIIScrubber()
    doc = scrub(doc)     # never drops; scrub.stats counts replacements per kind

Private, loopback and documentation IP ranges (192.168.x.x, 127.0.0.1, 203.0.113.x) are
left alone: they identify no one and are common in technical text such as server manuals.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

from lmforge.curate.document import Document

PLACEHOLDERS = {"email": "<EMAIL>", "ip": "<IP_ADDRESS>", "phone": "<PHONE>", "secret": "<SECRET>"}

_EMAIL = re.compile(r"\b[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                    r"\d{3,4}[ .-]\d{3,4}(?![\w-])")
_SECRETS = [re.compile(p) for p in (
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----",
    r"\bAKIA[0-9A-Z]{16}\b",                      # AWS access key id
    r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",            # GitHub token
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",          # Slack token
    r"\bsk-[A-Za-z0-9_-]{20,}\b",                 # OpenAI-style secret key
    r"\bAIza[0-9A-Za-z_-]{35}\b",                 # Google API key
)]
# `api_key = "..."`-style assignments: keep the name, hide the value.
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b((?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password)"
    r"\s*[:=]\s*[\"']?)([A-Za-z0-9_\-/+=.]{12,})")


class PIIScrubber:
    name = "pii"

    def __init__(self, email: bool = True, ip: bool = True, phone: bool = True,
                 secrets: bool = True):
        self.enabled = {"email": email, "ip": ip, "phone": phone, "secret": secrets}
        self.stats: Counter = Counter()

    def __call__(self, doc: Document) -> Document:
        self.stats["in"] += 1
        doc.text = self.scrub(doc.text)
        self.stats["kept"] += 1
        return doc

    def scrub(self, text: str) -> str:
        if self.enabled["secret"]:
            for pattern in _SECRETS:
                text = self._sub(pattern, "secret", text)
            text = self._sub(_ASSIGNED_SECRET, "secret", text, keep_group=1)
        if self.enabled["email"]:
            text = self._sub(_EMAIL, "email", text)
        if self.enabled["ip"]:
            text = self._sub(_IPV4, "ip", text, accept=_is_public_ip)
            text = self._sub(_IPV6, "ip", text, accept=_is_public_ip)
        if self.enabled["phone"]:
            text = self._sub(_PHONE, "phone", text, accept=_looks_like_phone)
        return text

    def _sub(self, pattern: re.Pattern, kind: str, text: str, accept=None,
             keep_group: int | None = None) -> str:
        def replace(m: re.Match) -> str:
            if accept is not None and not accept(m.group(0)):
                return m.group(0)
            self.stats[f"replaced.{kind}"] += 1
            prefix = m.group(keep_group) if keep_group else ""
            return prefix + PLACEHOLDERS[kind]
        return pattern.sub(replace, text)


def _is_public_ip(candidate: str) -> bool:
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


def _looks_like_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    # dates (2024-01-15) and versions have fewer digits or no separator mix of a number
    return 9 <= digits <= 15
