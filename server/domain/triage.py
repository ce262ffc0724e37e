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


Checklist = tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Playbook:
    name: str
    keywords: tuple[str, ...]
    # (the step, words that show it was already tried)
    checklist: Checklist


PLAYBOOKS: tuple[Playbook, ...] = (
    Playbook(
        "network / VPN",
        ("vpn", "network", "wifi", "wi-fi", "internet", "dns", "connect", "offline", "proxy"),
        (
            (
                "Check whether other sites and services load, to tell a local fault from an outage",
                ("other site", "other service", "outage", "sites load"),
            ),
            ("Restart the VPN client and the network adapter", ("restart", "reboot")),
            (
                "Flush the DNS cache (ipconfig /flushdns) and renew the IP address",
                ("dns", "renew"),
            ),
            (
                "Test on another network (e.g. a phone hotspot) to rule out the local network",
                ("another network", "other network", "hotspot"),
            ),
            (
                "Collect the VPN client log and compare the error with the known-issues list",
                ("log", "known issue"),
            ),
        ),
    ),
    Playbook(
        "sign-in / password",
        ("password", "login", "log in", "sign in", "sign-in", "mfa", "2fa", "locked", "account"),
        (
            (
                "Check whether the account is locked or the password expired in the directory",
                ("locked", "expired", "unlock"),
            ),
            (
                "Clear cached credentials (Credential Manager / Keychain) for the service",
                ("credential", "keychain", "cache"),
            ),
            ("Re-register the MFA method and try a fresh sign-in", ("mfa", "2fa", "authenticator")),
            (
                "Try signing in from a private browser window to rule out the device",
                ("private", "incognito", "another browser"),
            ),
        ),
    ),
    Playbook(
        "email",
        ("outlook", "email", "e-mail", "mail", "mailbox", "calendar", "exchange"),
        (
            (
                "Check the mailbox in webmail to tell a client problem from a server one",
                ("webmail", "web mail", "owa"),
            ),
            ("Start the mail client in safe mode to rule out add-ins", ("safe mode", "add-in")),
            ("Create a new mail profile and re-add the account", ("profile",)),
            ("Repair the mail client installation", ("repair", "reinstall")),
        ),
    ),
    Playbook(
        "printing",
        ("printer", "print", "scanner", "scan", "toner", "spooler"),
        (
            ("Print a test page from the printer itself to rule out the hardware", ("test page",)),
            (
                "Restart the print spooler service and clear the print queue",
                ("spooler", "queue"),
            ),
            ("Remove and re-add the printer with the current driver", ("driver", "re-add")),
            ("Check the printer's IP address and that the port points to it", ("ip", "port")),
        ),
    ),
    Playbook(
        "performance",
        ("slow", "freeze", "frozen", "hang", "crash", "performance", "cpu", "memory", "disk"),
        (
            (
                "Check CPU, memory and disk use in the task manager for a runaway process",
                ("task manager", "cpu", "memory"),
            ),
            ("Restart the device and check whether the problem returns", ("restart", "reboot")),
            ("Check free disk space and clear temporary files", ("disk space", "temp")),
            (
                "Look for recent updates or installs in the event log around when it started",
                ("event log", "recent update"),
            ),
        ),
    ),
    Playbook(
        "software",
        ("install", "update", "app", "application", "software", "license", "error code"),
        (
            (
                "Note the exact error message or code and search the vendor's knowledge base",
                ("error code", "knowledge base"),
            ),
            ("Restart the application, then the device", ("restart", "reboot")),
            ("Repair or reinstall the application", ("repair", "reinstall")),
            (
                "Check that the license or subscription is active for this user",
                ("license", "licence", "subscription"),
            ),
        ),
    ),
)

GENERIC = Playbook(
    "general",
    (),
    (
        (
            "Reproduce the problem with the customer and write down the exact error",
            ("reproduce", "exact error"),
        ),
        (
            "Check whether other users or devices have the same problem",
            ("other user", "other device", "colleague"),
        ),
        ("Restart the affected device or application", ("restart", "reboot")),
        (
            "Check recent changes (updates, installs, settings) made before it started",
            ("recent change", "update", "rollback"),
        ),
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
    untried = [step for step, marks in playbook.checklist if not any(m in tried for m in marks)]
    next_step = (
        untried[0]
        if untried
        else "Every usual step has been tried: collect logs and escalate to the vendor"
    )
    return Triage(playbook.name, failed, helped, next_step)
