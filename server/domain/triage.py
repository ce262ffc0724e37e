"""Rule-based triage: what kind of problem this is and which step to try next.

Deterministic and offline. It backs the ``heuristic`` assessment provider and the
"start here" section while no assessment has arrived yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from server.domain.types import Step

# Outcomes that mean "this did not fix it"; anything else (e.g. "worked") counts as helped.
_FAILED = re.compile(
    r"\b(fail\w*|no (change|luck|effect)|didn'?t|did not|not work\w*|same|still|error|nothing)\b",
    re.I,
)


@dataclass(frozen=True)
class Playbook:
    name: str
    keywords: tuple[str, ...]
    checklist: tuple[str, ...]


PLAYBOOKS: tuple[Playbook, ...] = (
    Playbook(
        "network / VPN",
        ("vpn", "network", "wifi", "wi-fi", "internet", "dns", "connect", "offline", "proxy"),
        (
            "Check whether other sites and services load, to tell a local fault from an outage",
            "Restart the VPN client and the network adapter",
            "Flush the DNS cache (ipconfig /flushdns) and renew the IP address",
            "Test on another network (e.g. a phone hotspot) to rule out the local network",
            "Collect the VPN client log and compare the error with the known-issues list",
        ),
    ),
    Playbook(
        "sign-in / password",
        ("password", "login", "log in", "sign in", "sign-in", "mfa", "2fa", "locked", "account"),
        (
            "Check whether the account is locked or the password expired in the directory",
            "Clear cached credentials (Credential Manager / Keychain) for the service",
            "Re-register the MFA method and try a fresh sign-in",
            "Try signing in from a private browser window to rule out the device",
        ),
    ),
    Playbook(
        "email",
        ("outlook", "email", "e-mail", "mail", "mailbox", "calendar", "exchange"),
        (
            "Check the mailbox in webmail to tell a client problem from a server one",
            "Start the mail client in safe mode to rule out add-ins",
            "Create a new mail profile and re-add the account",
            "Repair the mail client installation",
        ),
    ),
    Playbook(
        "printing",
        ("printer", "print", "scanner", "scan", "toner", "spooler"),
        (
            "Print a test page from the printer itself to rule out the hardware",
            "Restart the print spooler service and clear the print queue",
            "Remove and re-add the printer with the current driver",
            "Check the printer's IP address and that the port points to it",
        ),
    ),
    Playbook(
        "performance",
        ("slow", "freeze", "frozen", "hang", "crash", "performance", "cpu", "memory", "disk"),
        (
            "Check CPU, memory and disk use in the task manager for a runaway process",
            "Restart the device and check whether the problem returns",
            "Check free disk space and clear temporary files",
            "Look for recent updates or installs in the event log around when it started",
        ),
    ),
    Playbook(
        "software",
        ("install", "update", "app", "application", "software", "license", "error code"),
        (
            "Note the exact error message or code and search the vendor's knowledge base",
            "Restart the application, then the device",
            "Repair or reinstall the application",
            "Check that the license or subscription is active for this user",
        ),
    ),
)

GENERIC = Playbook(
    "general",
    (),
    (
        "Reproduce the problem with the customer and write down the exact error",
        "Check whether other users or devices have the same problem",
        "Restart the affected device or application",
        "Check recent changes (updates, installs, settings) made before it started",
    ),
)


@dataclass(frozen=True)
class Triage:
    category: str
    failed: tuple[Step, ...]
    helped: tuple[Step, ...]
    next_step: str


def triage(problem_summary: str, steps_tried: tuple[Step, ...], notes: str = "") -> Triage:
    text = f"{problem_summary} {notes}".lower()
    playbook = max(
        PLAYBOOKS,
        key=lambda p: sum(1 for k in p.keywords if k in text),
    )
    if not any(k in text for k in playbook.keywords):
        playbook = GENERIC
    failed = tuple(s for s in steps_tried if _FAILED.search(s.outcome) or not s.outcome)
    helped = tuple(s for s in steps_tried if s not in failed)
    tried = " ".join(s.description.lower() for s in steps_tried)
    untried = [step for step in playbook.checklist if not _already_tried(step, tried)]
    next_step = (
        untried[0]
        if untried
        else "Every usual step has been tried: collect logs and escalate to the vendor"
    )
    return Triage(playbook.name, failed, helped, next_step)


def _already_tried(step: str, tried: str) -> bool:
    """A checklist step counts as tried when its distinctive words appear in what was tried."""
    words = [w for w in re.findall(r"[a-z]{5,}", step.lower()) if w not in _COMMON]
    return bool(words) and sum(w in tried for w in words) >= max(1, len(words) // 2)


_COMMON = frozenset(
    {"check", "whether", "other", "problem", "device", "customer", "exact", "write", "about"}
)
