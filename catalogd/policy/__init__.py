"""The data policy: rules, settings, the pure check, the audit and its remediation.

The daemon checks one path with :func:`check_path` (or, with facts it already has, the
pure :meth:`Policy.check`); ``catalogd audit`` calls :func:`audit_tree`.

The names below are imported on first use, so that a module needing only the
settings (``catalogd.config``, hence every command's start-up) does not pay for the
check, the walker and the audit.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catalogd.policy.audit import AuditResult, audit_tree, check_path, make_policy
    from catalogd.policy.check import EntryFacts, Fix, Policy
    from catalogd.policy.rules import RULES, Rule
    from catalogd.policy.settings import PolicySettings, UserTypeOverride, UserTypePolicy
    from catalogd.policy.walker import read_facts

#: Public name -> the submodule that defines it.
_WHERE = {
    "AuditResult": "audit",
    "audit_tree": "audit",
    "check_path": "audit",
    "make_policy": "audit",
    "EntryFacts": "check",
    "Fix": "check",
    "Policy": "check",
    "RULES": "rules",
    "Rule": "rules",
    "PolicySettings": "settings",
    "UserTypeOverride": "settings",
    "UserTypePolicy": "settings",
    "read_facts": "walker",
}

__all__ = [
    "RULES",
    "AuditResult",
    "EntryFacts",
    "Fix",
    "Policy",
    "PolicySettings",
    "Rule",
    "UserTypeOverride",
    "UserTypePolicy",
    "audit_tree",
    "check_path",
    "make_policy",
    "read_facts",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # found directly from now on
    return value
